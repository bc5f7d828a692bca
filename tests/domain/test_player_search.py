"""Player search: a case-insensitive prefix of any searchable field, paged by keyset; profiles."""

from __future__ import annotations

import pytest

from tests.conftest import T0, query_plan
from webapp.domain.cursors import encode_cursor
from webapp.domain.errors import Invalid, NotFound
from webapp.domain.players import player_profile, search_players
from webapp.domain.recording import NewEvent, record_event
from webapp.transaction import unit_of_work


def usernames(page) -> list[str]:
    return [player.username for player in page.players]


@pytest.fixture
def people(make_player):
    return {
        "alice": make_player(
            "alice",
            display_name="Alice Liddell",
            email="wonder@example.test",
            public_id="DC-25-000101",
        ),
        "bob": make_player(
            "bob", display_name="Robert Paulson", email="bob@fight.test", public_id="DC-24-000202"
        ),
        "carol": make_player(
            "carol",
            display_name="Carol Danvers",
            email="captain@marvel.test",
            public_id="DC-25-000303",
        ),
    }


@pytest.mark.parametrize(
    "query, found",
    [
        ("ali", ["alice"]),  # username
        ("robert", ["bob"]),  # display name
        ("dc-24", ["bob"]),  # public id
        ("captain@", ["carol"]),  # email
        ("DC-25-000", ["alice", "carol"]),
    ],
)
def test_each_field_is_searched_by_prefix(session, people, query, found):
    assert usernames(search_players(session, query)) == found


@pytest.mark.parametrize("query", ["ALI", "aLiCe", "Alice L", "WONDER@EXAMPLE", "dc-25-000101"])
def test_search_ignores_case(session, people, query):
    assert usernames(search_players(session, query)) == ["alice"]


@pytest.mark.parametrize("query", ["lice", "Liddell", "example.test", "000101", "olo"])
def test_only_prefixes_match_not_infixes(session, people, query):
    assert usernames(search_players(session, query)) == []


def test_a_query_is_trimmed_and_an_empty_one_lists_everybody(session, people):
    assert usernames(search_players(session, "  carol  ")) == ["carol"]
    assert usernames(search_players(session, "")) == ["alice", "bob", "carol"]


@pytest.mark.parametrize(
    "query, found",
    [
        ("a_", ["a_b"]),
        ("a%", ["a%b"]),
        ("%", ["%percent"]),
        ("_", ["_under"]),
        ("a\\", ["a\\b"]),
    ],
)
def test_like_wildcards_in_the_query_match_only_themselves(session, make_player, query, found):
    for name in ("a_b", "axb", "a%b", "a\\b", "abc", "%percent", "_under", "xunder"):
        make_player(
            name,
            display_name=f"Player {len(name)}",
            email=f"{len(name)}-{name.encode().hex()}@x.test",
        )
    assert usernames(search_players(session, query)) == found


def test_search_can_be_limited_to_some_fields(session, people):
    assert usernames(search_players(session, "ali", fields=("public_id",))) == []
    assert usernames(search_players(session, "dc-25-000101", fields=("public_id",))) == ["alice"]
    assert usernames(search_players(session, "wonder", fields=("email", "username"))) == ["alice"]


def test_pages_cover_every_match_once_in_username_order(session, make_player):
    for n in reversed(range(25)):
        make_player(f"match{n:02d}", display_name=f"Unrelated {n}")
    make_player("other", display_name="Matchless Not")  # matches by display name
    make_player("zzz", display_name="nobody")

    seen, cursor, pages = [], None, 0
    while True:
        page = search_players(session, "match", cursor=cursor, limit=10)
        seen.extend(usernames(page))
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break

    expected = sorted([f"match{n:02d}" for n in range(25)] + ["other"])
    assert seen == expected
    assert pages == 3


def test_a_last_page_that_is_exactly_full_says_there_is_no_more(session, make_player):
    for n in range(4):
        make_player(f"four{n}")
    first = search_players(session, "four", limit=2)
    second = search_players(session, "four", cursor=first.next_cursor, limit=2)
    assert usernames(first) == ["four0", "four1"]
    assert usernames(second) == ["four2", "four3"]
    assert second.next_cursor is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fields": ("password",)}, "searched by"),
        ({"fields": ()}, "searched by"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"cursor": "%%%"}, "invalid cursor"),
    ],
)
def test_bad_search_input_is_invalid(session, people, kwargs, message):
    with pytest.raises(Invalid, match=message):
        search_players(session, "a", **kwargs)


def test_an_overlong_query_is_invalid(session):
    with pytest.raises(Invalid, match="longer than"):
        search_players(session, "x" * 255)


def test_a_nul_character_is_invalid_rather_than_a_database_error(session, people):
    with pytest.raises(Invalid, match="NUL"):
        search_players(session, "al\x00")
    with pytest.raises(Invalid, match="invalid cursor"):
        search_players(session, "al", cursor=encode_cursor({"username": "a\x00", "id": 1}))
    with pytest.raises(Invalid):
        player_profile(session, "DC-25\x00")


def test_search_reads_the_search_indexes(session, people, count_queries):
    with count_queries() as counter:
        search_players(session, "car")
    [(statement, parameters)] = [(sql, p) for sql, p in counter["statements"] if "FROM players" in sql]

    plan_text = "\n".join(query_plan(session.connection(), statement, parameters))
    session.rollback()
    for column in ("username", "display_name", "public_id", "email"):
        assert f"ix_players_search_{column}" in plan_text, plan_text


def test_the_search_columns_follow_a_renamed_player(session, people):
    people["bob"].username = "Bobby_Tables"
    session.commit()
    assert usernames(search_players(session, "bobby_t")) == ["Bobby_Tables"]
    assert usernames(search_players(session, "bob@")) == ["Bobby_Tables"]


def test_a_profile_is_found_by_id_or_by_public_id_in_any_case(session, people):
    alice = people["alice"]
    assert player_profile(session, alice.id).player.id == alice.id
    assert player_profile(session, "DC-25-000101").player.id == alice.id
    assert player_profile(session, "dc-25-000101").player.id == alice.id


def test_a_profile_has_stats_in_both_scopes(session, people, make_tournament):
    alice = people["alice"]
    secret = make_tournament("Back Room Cup", is_private=True)
    with unit_of_work(session):
        for n, tournament_id in enumerate((None, secret.id)):
            record_event(
                session,
                NewEvent(
                    player_id=alice.id,
                    event_type="match_won",
                    occurred_at=T0,
                    source_model="match",
                    source_id=n,
                    tournament_id=tournament_id,
                    metadata={
                        "round": "R1",
                        "side": "a",
                        "opponent_player_ids": [people["bob"].id],
                    },
                ),
            )

    profile = player_profile(session, alice.id)

    assert profile.stats_all["matches_won"] == 2
    assert profile.stats_public["matches_won"] == 1


def test_a_profile_with_its_stats_is_one_statement(session, people, count_queries):
    alice = people["alice"]
    with unit_of_work(session):
        record_event(session, NewEvent(
            player_id=alice.id, event_type="match_won", occurred_at=T0, source_model="match",
            source_id=1, metadata={"round": "R1", "side": "a", "opponent_player_ids": [people["bob"].id]},
        ))
    session.expire_all()
    session.connection()  # the transaction's BEGIN (a statement of its own on SQLite) is not the profile's
    with count_queries() as counter:
        profile = player_profile(session, "dc-25-000101")
    assert counter["n"] == 1
    assert profile.player.id == alice.id
    assert profile.stats_all["matches_won"] == profile.stats_public["matches_won"] == 1


def test_a_player_without_events_has_zero_stats(session, people):
    profile = player_profile(session, people["carol"].id)
    assert set(profile.stats_all.values()) == {0}
    assert set(profile.stats_public.values()) == {0}


@pytest.mark.parametrize("key", [999_999, "DC-99-999999"])
def test_an_unknown_player_is_not_found(session, people, key):
    with pytest.raises(NotFound):
        player_profile(session, key)


@pytest.mark.parametrize("key", ["", "  ", True, 1.5, None])
def test_a_profile_key_must_be_an_id_or_a_public_id(session, key):
    with pytest.raises(Invalid):
        player_profile(session, key)
