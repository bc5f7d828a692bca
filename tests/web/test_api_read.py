"""The read API: tokens, who sees which feed, what others see of it, stats and keyset paging."""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from tests.conftest import T0
from tests.web.api_support import bearer, issue_token, revoke, token_owner
from webapp.domain.privacy import PRIVATE_TOURNAMENT, Viewer
from webapp.domain.recording import NewEvent, record_events
from webapp.domain.results import record_match_result
from webapp.domain.timeline import feed_page
from webapp.models import ApiToken, Player
from webapp.transaction import unit_of_work

SECRET_TOURNAMENT = "Velvet Room Invitational"


@pytest.fixture
def owner(session):
    return token_owner(session)


@pytest.fixture
def token(session, owner):
    return issue_token(session, owner, "read")


@pytest.fixture
def scene(session, make_player, make_tournament, make_match):
    """Alice beat Zed in a private tournament and lost to him in a public one; Bob watches."""
    alice = make_player("alice", display_name="Alice Liddell", email="alice@example.test")
    zed = make_player("zed", display_name="Zed Zebulon", email="zed@example.test")
    bob = make_player("bob")
    secret = make_tournament(SECRET_TOURNAMENT, is_private=True)
    public = make_tournament("Open Cup")
    private_win = make_match(secret, alice, zed, winner="a", round="F", at=T0 + timedelta(hours=1))
    public_loss = make_match(public, alice, zed, winner="b", round="SF", at=T0 + timedelta(hours=2))
    with unit_of_work(session):
        record_match_result(session, private_win.id)
        record_match_result(session, public_loss.id)
    return {"alice": alice, "zed": zed, "bob": bob, "secret": secret, "public": public}


def make_public(session, player) -> None:
    session.execute(update(Player).where(Player.id == player.id).values(feed_visibility="public"))
    session.commit()


def get(client, url, token, **params):
    return client.get(url, query_string=params, headers=bearer(token))


def activity_url(player) -> str:
    return f"/api/players/{player.public_id}/activity"


def stats_url(player) -> str:
    return f"/api/players/{player.public_id}/stats"


# Authentication and scopes.


@pytest.mark.parametrize("endpoint", ["activity", "stats"])
def test_reading_needs_a_token(client, scene, endpoint):
    response = client.get(f"/api/players/{scene['alice'].public_id}/{endpoint}")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="activity-ops"'
    assert response.json["error"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer    ",
        "Token aops_abc",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Bearer not-one-of-ours",
        "Bearer aops_" + "x" * 43,
        "Bearer aops_" + "x" * 500,
    ],
    ids=["no-token", "blank-token", "other-scheme", "basic", "foreign-format", "unknown", "huge"],
)
def test_a_malformed_or_unknown_token_is_401(client, scene, token, header):
    response = client.get(activity_url(scene["alice"]), headers={"Authorization": header})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.is_json


def test_a_revoked_token_no_longer_reads(client, session, scene, owner, token):
    assert get(client, stats_url(scene["alice"]), token).status_code == 200
    revoke(session, owner, token)
    response = get(client, stats_url(scene["alice"]), token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("endpoint", ["activity", "stats"])
def test_a_write_only_token_cannot_read(client, session, scene, owner, endpoint):
    writer = issue_token(session, owner, "write")
    response = get(client, f"/api/players/{scene['alice'].public_id}/{endpoint}", writer)
    assert response.status_code == 403
    assert 'error="insufficient_scope", scope="read"' in response.headers["WWW-Authenticate"]


def test_an_unknown_player_is_404_and_an_unknown_viewer_400(client, scene, token):
    response = get(client, "/api/players/DC-99-999999/activity", token)
    assert response.status_code == 404
    assert response.json["field"] == "public_id"
    response = get(client, activity_url(scene["alice"]), token, viewer="DC-99-999999")
    assert response.status_code == 400
    assert response.json["field"] == "viewer"


def test_api_responses_are_json_never_cached_and_set_no_cookie(client, scene, token):
    for response in (
        get(client, activity_url(scene["alice"]), token, viewer=scene["alice"].public_id),
        get(client, stats_url(scene["alice"]), token),
        client.get(stats_url(scene["alice"])),
    ):
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in response.headers



def test_a_staff_members_sign_in_cookie_is_neither_read_nor_renewed_by_the_api(
    client, sign_in, scene, token
):
    sign_in("viewer")
    dashboard = client.get("/admin/")
    assert dashboard.status_code == 200 and "Set-Cookie" in dashboard.headers  # renewed on each page

    response = get(client, activity_url(scene["alice"]), token, viewer=scene["alice"].public_id)

    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")


# Who sees which feed.

VISIBILITY_MATRIX = [
    ("private", "owner", 200),
    ("private", "other", 403),
    ("private", "anonymous", 403),
    ("public", "owner", 200),
    ("public", "other", 200),
    ("public", "anonymous", 200),
]


@pytest.mark.parametrize("visibility, viewer, status", VISIBILITY_MATRIX)
def test_who_sees_a_feed(client, session, scene, token, visibility, viewer, status):
    if visibility == "public":
        make_public(session, scene["alice"])
    params = {
        "owner": {"viewer": scene["alice"].public_id},
        "other": {"viewer": scene["bob"].public_id},
        "anonymous": {},
    }[viewer]
    response = get(client, activity_url(scene["alice"]), token, **params)
    assert response.status_code == status, response.json
    if status == 200:
        assert len(response.json["items"]) == 2
        assert response.json["player"]["public_id"] == scene["alice"].public_id
    else:
        assert response.json == {"error": "this player's feed is private", "field": None}


def test_a_private_feed_answers_the_same_whether_it_holds_events_or_not(client, scene, token):
    with_events = get(client, activity_url(scene["alice"]), token, viewer=scene["bob"].public_id)
    without = get(client, activity_url(scene["bob"]), token, viewer=scene["zed"].public_id)
    assert (with_events.status_code, with_events.data) == (without.status_code, without.data)


@pytest.mark.parametrize("viewer", ["opponent", "anonymous"])
def test_others_see_opponents_by_public_id_and_private_tournaments_masked(
    client, session, scene, token, viewer
):
    make_public(session, scene["alice"])
    params = {"viewer": scene["zed"].public_id} if viewer == "opponent" else {}
    response = get(client, activity_url(scene["alice"]), token, **params)
    assert response.status_code == 200
    public_loss, private_win = response.json["items"]  # newest first

    assert private_win["type"] == "match_won"
    assert private_win["private"] is True
    assert private_win["tournament"] == {"name": PRIVATE_TOURNAMENT}
    assert private_win["source"]["id"] is None
    assert public_loss["tournament"] == {"id": scene["public"].id, "name": "Open Cup"}
    for item in (private_win, public_loss):
        assert item["opponents"] == [
            {"public_id": scene["zed"].public_id, "label": scene["zed"].public_id}
        ]
    assert response.json["player"] == {
        "public_id": scene["alice"].public_id,
        "feed_visibility": "public",
    }

    text = response.get_data(as_text=True)
    for secret in (
        SECRET_TOURNAMENT,
        "zed@example.test",
        "Zed Zebulon",
        '"zed"',
        "alice@example.test",
        "Alice Liddell",
        '"alice"',
        '"username"',
        '"email"',
    ):
        assert secret not in text, secret


def test_the_owner_sees_their_own_feed_in_full(client, scene, token):
    response = get(client, activity_url(scene["alice"]), token, viewer=scene["alice"].public_id)
    assert response.status_code == 200
    _, private_win = response.json["items"]
    assert private_win["tournament"] == {"id": scene["secret"].id, "name": SECRET_TOURNAMENT}
    assert private_win["opponents"][0]["username"] == "zed"
    assert response.json["player"]["email"] == "alice@example.test"


# Stats.


def test_the_owner_gets_both_stat_scopes_and_others_only_the_public_one(client, scene, token):
    mine = get(client, stats_url(scene["alice"]), token, viewer=scene["alice"].public_id).json[
        "stats"
    ]
    assert mine["all"]["matches_played"] == 2 and mine["all"]["matches_won"] == 1
    # The private win is left out of the public scope.
    assert mine["public"]["matches_played"] == 1 and mine["public"]["matches_won"] == 0
    for params in ({"viewer": scene["zed"].public_id}, {}):
        response = get(client, stats_url(scene["alice"]), token, **params)
        assert response.status_code == 200
        assert set(response.json["stats"]) == {"public"}
        assert response.json["stats"]["public"] == mine["public"]
        assert "email" not in response.json["player"]


def test_a_player_without_events_has_zero_stats(client, scene, token):
    stats = get(client, stats_url(scene["bob"]), token).json["stats"]
    assert set(stats) == {"public"} and not any(stats["public"].values())


# Paging.


@pytest.fixture
def long_feed(session, make_player):
    """120 events of one player, in groups of three sharing a time, so the keyset needs its id."""
    player = make_player("busy", feed_visibility="public")
    opponent = make_player("rival")
    facts = [
        NewEvent(
            player_id=player.id,
            event_type="match_won" if n % 2 else "match_lost",
            occurred_at=T0 + timedelta(minutes=n // 3),
            source_model="match",
            source_id=n + 1,
            metadata={"round": "R1", "side": "a", "opponent_player_ids": [opponent.id]},
        )
        for n in range(120)
    ]
    with unit_of_work(session):
        record_events(session, facts)
    return player


def test_keyset_pages_of_fifty_cover_every_event_once_newest_first(
    client, session, token, long_feed
):
    pages, cursor = [], None
    while True:
        params = {"cursor": cursor} if cursor else {}
        response = get(client, activity_url(long_feed), token, **params)
        assert response.status_code == 200
        pages.append(response.json["items"])
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [50, 50, 20]
    items = [item for page in pages for item in page]
    ids = [item["id"] for item in items]
    assert len(set(ids)) == 120
    keys = [(item["occurred_at"], item["id"]) for item in items]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("cursor", ["nonsense", "eyJpZCI6IDF9", "x" * 2000])
def test_a_bad_cursor_is_400_naming_it(client, token, long_feed, cursor):
    response = get(client, activity_url(long_feed), token, cursor=cursor)
    assert response.status_code == 400
    assert response.json["field"] == "cursor"


def test_the_api_adds_two_statements_to_a_feed_page(
    client, session, token, long_feed, count_queries
):
    get(client, activity_url(long_feed), token)  # notes the token's use: a write, once a minute
    with count_queries() as api:
        response = get(client, activity_url(long_feed), token)
    assert len(response.json["items"]) == 50
    owner = SimpleNamespace(id=long_feed.id, feed_visibility="public")
    session.rollback()  # a fresh transaction, as the request had
    with count_queries() as domain:
        feed_page(session, owner, Viewer.public())
    # The token by its hash, then the player and the viewer together; nothing per event.
    assert api["n"] == domain["n"] + 2


def test_a_tokens_use_is_noted_at_most_once_a_minute(client, session, scene, token):
    def last_used():
        session.rollback()
        return session.scalars(select(ApiToken.last_used_at)).one()

    assert last_used() is None
    get(client, stats_url(scene["alice"]), token)
    first = last_used()
    assert first is not None
    get(client, activity_url(scene["alice"]), token, viewer=scene["alice"].public_id)
    assert last_used() == first
    session.execute(update(ApiToken).values(last_used_at=first - timedelta(minutes=2)))
    session.commit()
    get(client, stats_url(scene["alice"]), token)
    assert last_used() > first


def test_no_response_to_another_viewer_names_anyone_but_by_public_id(client, session, scene, token):
    make_public(session, scene["alice"])
    bodies = [
        get(client, url, token, **params).get_data(as_text=True)
        for url in (activity_url(scene["alice"]), stats_url(scene["alice"]))
        for params in ({"viewer": scene["bob"].public_id}, {"viewer": scene["zed"].public_id}, {})
    ]
    assert all(json.loads(body) for body in bodies)
    for body in bodies:
        for player in (scene["alice"], scene["zed"], scene["bob"]):
            assert player.email not in body and f'"{player.username}"' not in body
            assert player.display_name not in body
