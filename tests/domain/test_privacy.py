"""What each kind of viewer sees of a player's feed, profile and stats.

The matrix tests take one private match win and check every field of it for
every viewer; the leak tests serialize everything a redacted viewer is given
and search it for the names, emails and private tournament that must not be
there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.conftest import T0
from webapp.domain.errors import Invalid
from webapp.domain.players import player_profile
from webapp.domain.privacy import (
    DELETED_PLAYER,
    PRIVATE_TOURNAMENT,
    REDACTED_SEARCH_FIELDS,
    SEARCH_FIELDS,
    Names,
    TournamentName,
    Viewer,
    ViewerKind,
    can_view_feed,
    present_event,
    present_player,
    present_stats,
    preview_viewers,
    search_fields_for,
)
from webapp.domain.recording import NewEvent, record_events
from webapp.domain.timeline import feed_page, load_names, timeline_page
from webapp.models import Player
from webapp.transaction import unit_of_work

SECRET_TOURNAMENT_ID = 987654
SECRET_TOURNAMENT_NAME = "Velvet Room Invitational"
KINDS = [kind.value for kind in ViewerKind]
FULL_KINDS = {"owner", "staff_full"}
REDACTED_KINDS = [kind for kind in KINDS if kind not in FULL_KINDS]
STAFF_KINDS = {"staff_redacted", "staff_full"}


@dataclass
class Scene:
    alice: Player
    zed: Player
    ids: dict[str, int]

    def viewer(self, kind: str) -> Viewer:
        return {
            "owner": Viewer.owner(self.alice.id),
            "player": Viewer.player(self.zed.id),  # the opponent himself, signed in
            "public": Viewer.public(),
            "staff_redacted": Viewer.staff_redacted(),
            "staff_full": Viewer.staff_full("trust & safety ticket 4411"),
        }[kind]

    def secrets(self) -> list[str]:
        """What no redacted viewer may receive anywhere."""
        return [
            self.zed.username,
            self.zed.display_name,
            self.zed.email,
            self.alice.username,
            self.alice.display_name,
            self.alice.email,
            SECRET_TOURNAMENT_NAME,
            str(SECRET_TOURNAMENT_ID),
        ]


@pytest.fixture
def scene(session, make_player, make_team, make_tournament) -> Scene:
    """Alice's public feed: a private win over Zed (later reversed), a public loss, and more."""
    alice = make_player("alice_owner", display_name="Alice Ownerly", feed_visibility="public")
    zed = make_player(
        "zed_secret_handle", display_name="Zed Hiddenname", email="zed.private@example.test"
    )
    secret = make_tournament(SECRET_TOURNAMENT_NAME, id=SECRET_TOURNAMENT_ID, is_private=True)
    open_cup = make_tournament("Open Spring Cup")
    owls, foxes = make_team("Owls", [alice]), make_team("Foxes", [zed])

    def match(kind, source_id, tournament, at, opponents, **fields):
        metadata = {
            "round": fields.pop("round", "R1"),
            "side": "a",
            "opponent_player_ids": opponents,
        }
        if "opponent_team_id" in fields:
            metadata["opponent_team_id"] = fields.pop("opponent_team_id")
        return NewEvent(
            player_id=alice.id,
            event_type=kind,
            occurred_at=at,
            source_model="match",
            source_id=source_id,
            tournament_id=tournament.id,
            metadata=metadata,
            **fields,
        )

    names = ["private_win", "public_loss", "team_win", "ghost_win", "registered", "private_title"]
    with unit_of_work(session):
        outcome = record_events(
            session,
            [
                match(
                    "match_won",
                    7001,
                    secret,
                    T0,
                    [zed.id],
                    round="R2",
                    origin="backfill",
                    origin_id=41,
                ),
                match("match_lost", 7002, open_cup, T0 + timedelta(hours=1), [zed.id]),
                match(
                    "match_won",
                    7003,
                    secret,
                    T0 + timedelta(hours=2),
                    [zed.id],
                    team_id=owls.id,
                    opponent_team_id=foxes.id,
                ),
                match("match_won", 7004, open_cup, T0 + timedelta(hours=3), [555_555]),
                NewEvent(
                    player_id=alice.id,
                    event_type="tournament_registered",
                    occurred_at=T0 - timedelta(days=1),
                    source_model="registration",
                    source_id=8001,
                    tournament_id=secret.id,
                    metadata={"registration_id": 8001},
                ),
                NewEvent(
                    player_id=alice.id,
                    event_type="tournament_won",
                    occurred_at=T0 + timedelta(days=1),
                    source_model="tournament_result",
                    source_id=9001,
                    tournament_id=secret.id,
                    metadata={"is_team_win": False},
                ),
            ],
        )
    ids = dict(zip(names, (o.event_id for o in outcome.outcomes), strict=True))
    with unit_of_work(session):
        [reversal] = record_events(
            session,
            [
                NewEvent(
                    player_id=alice.id,
                    event_type="match_won_reversed",
                    occurred_at=T0 + timedelta(days=2),
                    source_model="dispute",
                    source_id=9,
                    origin="dispute",
                    origin_id=9,
                    metadata={"match_id": 7001, "tournament_id": SECRET_TOURNAMENT_ID},
                    reverses_event_id=ids["private_win"],
                ),
            ],
        ).outcomes
    ids["reversal"] = reversal.event_id
    return Scene(alice, zed, ids)


def presented(session, scene: Scene, kind: str) -> dict[int, dict]:
    page = feed_page(session, scene.alice, scene.viewer(kind), limit=50)
    return {item["id"]: item for item in page.items}


def expected_private_win(scene: Scene, kind: str, field: str):
    """What ``kind`` should see in ``field`` of the private match win."""
    full = kind in FULL_KINDS
    zed = scene.zed
    opponent = {"public_id": zed.public_id, "label": zed.public_id}
    if full:
        opponent = {
            "public_id": zed.public_id,
            "username": zed.username,
            "display_name": zed.display_name,
            "label": f"{zed.display_name} ({zed.public_id})",
        }
    if kind in STAFF_KINDS:
        opponent = {"id": zed.id, **opponent}
    return {
        "type": "match_won",
        "occurred_at": T0.isoformat(),
        "private": True,
        "tournament": {"id": SECRET_TOURNAMENT_ID, "name": SECRET_TOURNAMENT_NAME}
        if full
        else {"name": PRIVATE_TOURNAMENT},
        "opponents": [opponent],
        "opponent_team": None,
        "team": None,
        "source": {"model": "match", "id": 7001 if full else None},
        "origin": {"kind": "backfill", "id": 41 if (full or kind in STAFF_KINDS) else None},
        "details": {"round": "R2", "side": "a"},
        "reverses_event_id": None,
        "reversed_by_event_id": scene.ids["reversal"],
        "summary": (
            f"Won R2 against {zed.display_name} ({zed.public_id}) in {SECRET_TOURNAMENT_NAME}"
            if full
            else f"Won R2 against {zed.public_id} in {PRIVATE_TOURNAMENT}"
        ),
    }[field]


MATRIX_FIELDS = [
    "type",
    "occurred_at",
    "private",
    "tournament",
    "opponents",
    "opponent_team",
    "team",
    "source",
    "origin",
    "details",
    "reverses_event_id",
    "reversed_by_event_id",
    "summary",
]


@pytest.mark.parametrize("field", MATRIX_FIELDS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_viewer_sees_exactly_its_share_of_a_private_match_win(session, scene, kind, field):
    item = presented(session, scene, kind)[scene.ids["private_win"]]
    assert item[field] == expected_private_win(scene, kind, field)


def test_an_event_shows_no_field_the_matrix_does_not_cover(session, scene):
    item = presented(session, scene, "owner")[scene.ids["private_win"]]
    assert set(item) == {"id", "recorded_at", *MATRIX_FIELDS}


@pytest.mark.parametrize("kind", REDACTED_KINDS)
def test_nothing_given_to_a_redacted_viewer_names_a_player_or_the_private_tournament(
    session, scene, kind
):
    viewer = scene.viewer(kind)
    events = timeline_page(session, scene.alice.id, limit=50).events
    names = load_names(session, events)
    profile = player_profile(session, scene.alice.id)
    given = {
        "feed": feed_page(session, scene.alice, viewer, limit=50).items,
        "events": [present_event(event, viewer, names) for event in events],
        "owner": present_player(scene.alice, viewer),
        "opponent": present_player(scene.zed, viewer) if kind != "player" else None,
        "stats": present_stats(
            profile.stats_all, profile.stats_public, viewer, player_id=scene.alice.id
        ),
    }
    serialized = json.dumps(given).lower()

    assert len(given["feed"]) == 7
    leaked = [secret for secret in scene.secrets() if secret.lower() in serialized]
    assert leaked == []


@pytest.mark.parametrize("kind", sorted(FULL_KINDS))
def test_full_viewers_do_get_the_names_the_redacted_ones_are_denied(session, scene, kind):
    serialized = json.dumps(list(presented(session, scene, kind).values()))
    for secret in (
        scene.zed.username,
        scene.zed.display_name,
        SECRET_TOURNAMENT_NAME,
        str(SECRET_TOURNAMENT_ID),
    ):
        assert secret in serialized
    assert scene.zed.email not in serialized, "an opponent's email is in no event for anyone"


def test_public_tournaments_are_named_for_everyone_and_opponents_still_redacted(session, scene):
    for kind in KINDS:
        item = presented(session, scene, kind)[scene.ids["public_loss"]]
        assert item["private"] is False
        assert item["tournament"]["name"] == "Open Spring Cup"
        assert "id" in item["tournament"]
        assert item["source"]["id"] == 7002
        zed = scene.zed
        expected = f"{zed.display_name} ({zed.public_id})" if kind in FULL_KINDS else zed.public_id
        assert item["summary"] == f"Lost R1 to {expected} in Open Spring Cup"


@pytest.mark.parametrize("kind", KINDS)
def test_a_team_match_names_both_teams_for_everyone(session, scene, kind):
    item = presented(session, scene, kind)[scene.ids["team_win"]]
    assert item["team"]["name"] == "Owls"
    assert item["opponent_team"]["name"] == "Foxes"
    where = SECRET_TOURNAMENT_NAME if kind in FULL_KINDS else PRIVATE_TOURNAMENT
    assert item["summary"] == f"Won R1 against Foxes in {where}"


@pytest.mark.parametrize("kind", KINDS)
def test_a_player_who_no_longer_exists_is_shown_as_deleted(session, scene, kind):
    item = presented(session, scene, kind)[scene.ids["ghost_win"]]
    [opponent] = item["opponents"]
    assert opponent["public_id"] is None
    assert opponent["label"] == DELETED_PLAYER
    assert item["summary"] == f"Won R1 against {DELETED_PLAYER} in Open Spring Cup"


@pytest.mark.parametrize("kind", KINDS)
def test_tournament_events_read_as_sentences_with_the_tournament_masked_when_private(
    session, scene, kind
):
    items = presented(session, scene, kind)
    where = SECRET_TOURNAMENT_NAME if kind in FULL_KINDS else PRIVATE_TOURNAMENT
    assert items[scene.ids["registered"]]["summary"] == f"Registered for {where}"
    assert items[scene.ids["private_title"]]["summary"] == f"Won {where}"
    assert items[scene.ids["registered"]]["source"]["id"] == (8001 if kind in FULL_KINDS else None)


@pytest.mark.parametrize("kind", KINDS)
def test_a_reversal_links_to_what_it_reverses_and_reveals_no_more_than_it(session, scene, kind):
    items = presented(session, scene, kind)
    reversal = items[scene.ids["reversal"]]
    assert reversal["reverses_event_id"] == scene.ids["private_win"]
    assert items[scene.ids["private_win"]]["reversed_by_event_id"] == scene.ids["reversal"]
    assert reversal["origin"]["kind"] == "dispute"
    where = SECRET_TOURNAMENT_NAME if kind in FULL_KINDS else PRIVATE_TOURNAMENT
    assert reversal["summary"] == f"Reversed match won #{scene.ids['private_win']} in {where}"
    assert "match_id" not in json.dumps(reversal)


def test_the_owner_of_one_feed_is_only_a_player_on_another(session, scene):
    zed_as_owner = Viewer.owner(scene.zed.id)
    names = load_names(session, timeline_page(session, scene.alice.id).events)
    event = next(
        e for e in timeline_page(session, scene.alice.id).events if e.id == scene.ids["private_win"]
    )

    item = present_event(event, zed_as_owner, names)

    assert item["tournament"] == {"name": PRIVATE_TOURNAMENT}
    assert "username" not in item["opponents"][0]


def test_an_event_of_a_tournament_made_private_later_is_masked(session, scene):
    event = next(
        e for e in timeline_page(session, scene.alice.id).events if e.id == scene.ids["public_loss"]
    )
    names = load_names(session, [event])
    open_cup_id = event.tournament_id
    now_private = Names(
        players=names.players,
        teams=names.teams,
        tournaments={open_cup_id: TournamentName("Open Spring Cup", is_private=True)},
    )

    assert present_event(event, Viewer.public(), names)["tournament"]["name"] == "Open Spring Cup"
    assert present_event(event, Viewer.public(), now_private)["tournament"] == {
        "name": PRIVATE_TOURNAMENT
    }
    assert (
        present_event(event, Viewer.owner(scene.alice.id), now_private)["tournament"]["name"]
        == "Open Spring Cup"
    )


def test_the_feed_preview_shows_the_public_an_opponent_and_the_owner_side_by_side(session, scene):
    previews = {
        label: {item["id"]: item for item in feed_page(session, scene.alice, viewer).items}
        for label, viewer in preview_viewers(scene.alice.id, scene.zed.id).items()
    }
    win = scene.ids["private_win"]

    assert list(previews) == ["public", "opponent", "owner"]
    assert previews["public"][win]["summary"] == previews["opponent"][win]["summary"]
    assert PRIVATE_TOURNAMENT in previews["opponent"][win]["summary"]
    assert SECRET_TOURNAMENT_NAME in previews["owner"][win]["summary"]


@pytest.mark.parametrize(
    "kind, visibility, allowed",
    [
        (
            kind,
            visibility,
            kind in {"owner", "staff_redacted", "staff_full"} or visibility == "public",
        )
        for kind in KINDS
        for visibility in ("private", "public")
    ],
)
def test_who_may_see_a_feed(session, scene, kind, visibility, allowed):
    scene.alice.feed_visibility = visibility
    assert can_view_feed(scene.alice, scene.viewer(kind)) is allowed


@pytest.mark.parametrize("kind", KINDS)
def test_stats_show_both_scopes_only_to_the_owner_and_full_staff(kind):
    stats_all = {"matches_won": 5, "matches_played": 7}
    stats_public = {"matches_won": 2, "matches_played": 3}
    viewer = {
        "owner": Viewer.owner(1),
        "player": Viewer.player(2),
        "public": Viewer.public(),
        "staff_redacted": Viewer.staff_redacted(),
        "staff_full": Viewer.staff_full("audit 7"),
    }[kind]

    shown = present_stats(stats_all, stats_public, viewer, player_id=1)

    assert shown["public"]["matches_won"] == 2
    assert shown["public"]["tournaments_won"] == 0
    if kind in FULL_KINDS:
        assert list(shown) == ["all", "public"]
        assert shown["all"]["matches_won"] == 5
    else:
        assert list(shown) == ["public"]


def test_stats_of_another_player_show_an_owner_only_the_public_scope(session, scene):
    profile = player_profile(session, scene.zed.id)
    shown = present_stats(
        profile.stats_all,
        profile.stats_public,
        Viewer.owner(scene.alice.id),
        player_id=scene.zed.id,
    )
    assert list(shown) == ["public"]


def test_missing_stat_rows_read_as_zeros():
    shown = present_stats(None, None, Viewer.staff_full("audit"))
    assert set(shown["all"].values()) == {0} and set(shown["public"].values()) == {0}


@pytest.mark.parametrize("kind", KINDS)
def test_a_players_own_record_shows_names_and_email_only_to_full_viewers(session, scene, kind):
    shown = present_player(scene.alice, scene.viewer(kind))
    assert shown["public_id"] == scene.alice.public_id
    assert ("email" in shown) is (kind in FULL_KINDS)
    assert ("username" in shown) is (kind in FULL_KINDS)
    assert ("id" in shown) is (kind in FULL_KINDS | STAFF_KINDS)


def test_only_full_staff_search_by_hidden_fields():
    assert search_fields_for(Viewer.staff_full("fraud case 3")) == SEARCH_FIELDS
    assert search_fields_for(Viewer.staff_redacted()) == REDACTED_SEARCH_FIELDS == ("public_id",)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Viewer.staff_full(""), "reason"),
        (lambda: Viewer.staff_full("   "), "reason"),
        (lambda: Viewer(ViewerKind.STAFF_FULL), "reason"),
        (lambda: Viewer("owner"), "signed-in player"),
        (lambda: Viewer("player", player_id="7"), "signed-in player"),
        (lambda: Viewer("moderator"), "unknown viewer kind"),
    ],
)
def test_a_viewer_cannot_be_made_without_what_its_kind_needs(make, message):
    with pytest.raises(Invalid, match=message):
        make()


def test_a_platform_visitor_is_the_owner_another_player_or_the_public():
    assert Viewer.platform(7, 7) == Viewer.owner(7)
    assert Viewer.platform(8, 7) == Viewer.player(8)
    assert Viewer.platform(None, 7) == Viewer.public()
