"""The write API: live match and tournament results, recorded once, refused whole when wrong."""

from __future__ import annotations

import json
import threading
from datetime import timedelta, timezone

import pytest
from sqlalchemy import select

from tests.conftest import T0
from tests.web.api_support import bearer, issue_token, token_owner, written
from webapp.models import ActivityEvent, Match, Placement, PlayerStats, TournamentResult

MATCHES = "/api/results/matches"
TOURNAMENTS = "/api/results/tournaments"
AT = T0 + timedelta(hours=2)


@pytest.fixture
def world(session, make_player, make_team, make_tournament):
    """A solo tournament and a team tournament the platform refers to, and a write token."""
    admin = token_owner(session)
    ana, ben, cy, dee = (make_player(name) for name in ("ana", "ben", "cy", "dee"))
    reds = make_team("Reds", [ana, ben])
    blues = make_team("Blues", [cy, dee])
    empty = make_team("Ghosts", [])
    solo = make_tournament("Spring Cup", external_ref="t-spring")
    teams = make_tournament("Team League", external_ref="t-league", is_team_based=True)
    return {
        "token": issue_token(session, admin, "write"),
        "read_token": issue_token(session, admin, "read", name="reader"),
        "ana": ana,
        "ben": ben,
        "cy": cy,
        "dee": dee,
        "reds": reds,
        "blues": blues,
        "empty": empty,
        "solo": solo,
        "teams": teams,
    }


def match_report(world, **changes) -> dict:
    report = {
        "match_ref": "pm-1",
        "tournament_ref": "t-spring",
        "round": "QF",
        "side_a": {"player": world["ana"].public_id},
        "side_b": {"player": world["ben"].public_id},
        "state": "completed",
        "winner": "a",
        "completed_at": AT.isoformat(),
    }
    report.update(changes)
    return {key: value for key, value in report.items() if value is not DROP}


def tournament_report(world, **changes) -> dict:
    report = {
        "tournament_ref": "t-spring",
        "winner": {"player": world["ana"].public_id},
        "decided_at": (T0 + timedelta(days=2)).isoformat(),
    }
    report.update(changes)
    return {key: value for key, value in report.items() if value is not DROP}


DROP = object()


def post(client, url, body, token):
    return client.post(url, json=body, headers=bearer(token))


def events_of(session, player) -> list[str]:
    session.rollback()
    return sorted(
        session.scalars(
            select(ActivityEvent.event_type).where(ActivityEvent.player_id == player.id)
        )
    )


def stats_of(session, player, scope="all") -> dict[str, int]:
    session.rollback()
    row = session.get(PlayerStats, (player.id, scope))
    return {k: v for k, v in row.as_dict().items() if v} if row else {}


# Recording, repeats and conflicts.


def test_a_reported_match_is_stored_and_gives_each_side_its_event(client, session, world):
    response = post(client, MATCHES, match_report(world), world["token"])
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "recorded" and body["created"] is True
    assert body["events"] == {"recorded": 2, "duplicate": 0, "conflict": 0}
    session.rollback()
    match = session.scalars(select(Match).where(Match.external_ref == "pm-1")).one()
    assert body["id"] == match.id
    assert (match.state, match.winner_side, match.round, match.completed_at) == (
        "completed",
        "a",
        "QF",
        AT,
    )
    assert match.tournament_id == world["solo"].id
    assert events_of(session, world["ana"]) == ["match_won"]
    assert events_of(session, world["ben"]) == ["match_lost"]
    assert stats_of(session, world["ana"]) == {"matches_played": 1, "matches_won": 1}


def test_the_same_report_again_changes_nothing_and_says_duplicate(client, session, world):
    assert post(client, MATCHES, match_report(world), world["token"]).status_code == 201
    before = written(session)
    # The same fact, written with another offset for the same instant.
    again = match_report(
        world, completed_at=AT.astimezone(timezone(timedelta(hours=2))).isoformat()
    )
    response = post(client, MATCHES, again, world["token"])
    assert response.status_code == 200, response.json
    assert response.json["status"] == "duplicate" and response.json["created"] is False
    assert response.json["events"] == {"recorded": 0, "duplicate": 2, "conflict": 0}
    assert written(session) == before


@pytest.mark.parametrize(
    "change",
    [
        {"winner": "b"},
        {"state": "forfeit"},
        {"round": "SF"},
        {"completed_at": (AT + timedelta(minutes=5)).isoformat()},
        {"is_final": True},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_report_contradicting_a_decided_match_is_a_conflict_and_writes_nothing(
    client, session, world, change
):
    assert post(client, MATCHES, match_report(world), world["token"]).status_code == 201
    before = written(session)
    response = post(client, MATCHES, match_report(world, **change), world["token"])
    assert response.status_code == 409, response.json
    assert "dispute" in response.json["error"]
    assert next(iter(change)) in response.json["error"]
    assert written(session) == before
    assert events_of(session, world["ana"]) == ["match_won"]


@pytest.mark.parametrize(
    "change",
    [{"tournament_ref": "t-other"}, {"side_b": "cy"}, {"side_a": "ben", "side_b": "ana"}],
    ids=["other-tournament", "other-opponent", "sides-swapped"],
)
def test_a_report_naming_other_sides_or_tournament_for_a_stored_match_is_a_conflict(
    client, session, world, make_tournament, change
):
    make_tournament("Other Cup", external_ref="t-other")
    assert post(client, MATCHES, match_report(world), world["token"]).status_code == 201
    before = written(session)
    resolved = {
        key: ({"player": world[value].public_id} if key.startswith("side_") else value)
        for key, value in change.items()
    }
    response = post(client, MATCHES, match_report(world, **resolved), world["token"])
    assert response.status_code == 409, response.json
    assert written(session) == before


def test_a_scheduled_match_known_by_its_reference_is_decided_by_the_report(
    client, session, world, make_match
):
    scheduled = make_match(
        world["solo"], world["ana"], world["ben"], state="scheduled", winner=None
    )
    scheduled.external_ref = "pm-1"
    session.commit()
    response = post(client, MATCHES, match_report(world, winner="b", round="SF"), world["token"])
    assert response.status_code == 201, response.json
    assert response.json["created"] is False and response.json["id"] == scheduled.id
    session.rollback()
    match = session.get(Match, scheduled.id)
    assert (match.state, match.winner_side, match.round) == ("completed", "b", "SF")
    assert events_of(session, world["ben"]) == ["match_won"]


@pytest.mark.parametrize("state", ["disputed", "void"])
def test_a_match_under_dispute_or_void_cannot_be_reported(
    client, session, world, make_match, state
):
    match = make_match(world["solo"], world["ana"], world["ben"], state=state, winner=None)
    match.external_ref = "pm-1"
    session.commit()
    before = written(session)
    response = post(client, MATCHES, match_report(world), world["token"])
    assert response.status_code == 409
    assert state in response.json["error"]
    assert written(session) == before


def test_a_forfeit_gives_forfeit_events(client, session, world):
    response = post(
        client, MATCHES, match_report(world, state="forfeit", winner="b"), world["token"]
    )
    assert response.status_code == 201
    assert events_of(session, world["ben"]) == ["match_forfeit_won"]
    assert events_of(session, world["ana"]) == ["match_forfeit_lost"]


def test_a_team_match_reaches_every_member_of_both_teams(client, session, world):
    report = match_report(
        world,
        tournament_ref="t-league",
        side_a={"team": world["reds"].id},
        side_b={"team": world["blues"].id},
    )
    response = post(client, MATCHES, report, world["token"])
    assert response.status_code == 201, response.json
    assert response.json["events"]["recorded"] == 4
    assert events_of(session, world["ana"]) == events_of(session, world["ben"]) == ["match_won"]
    assert events_of(session, world["cy"]) == events_of(session, world["dee"]) == ["match_lost"]


def test_two_identical_reports_at_once_record_one_match_and_one_set_of_events(
    client, session, world, app
):
    report = match_report(world)
    barrier = threading.Barrier(2)
    statuses = []

    def report_it():
        own_client = app.test_client()
        barrier.wait()
        statuses.append(post(own_client, MATCHES, report, world["token"]).status_code)

    threads = [threading.Thread(target=report_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 201]
    counts = written(session)
    assert counts["matches"] == 1 and counts["activity_events"] == 2
    assert stats_of(session, world["ana"]) == {"matches_played": 1, "matches_won": 1}


# Bad requests: each refused whole, naming the field at fault.

BAD_MATCH_REPORTS = [
    ("missing-ref", {"match_ref": DROP}, "match_ref"),
    ("blank-ref", {"match_ref": "  "}, "match_ref"),
    ("long-ref", {"match_ref": "x" * 101}, "match_ref"),
    ("ref-not-a-string", {"match_ref": 123}, "match_ref"),
    ("unknown-tournament", {"tournament_ref": "t-nowhere"}, "tournament_ref"),
    ("missing-round", {"round": DROP}, "round"),
    ("long-round", {"round": "R" * 17}, "round"),
    ("side-both", {"side_a": {"player": "DC-25-000001", "team": 1}}, "side_a"),
    ("side-neither", {"side_a": {}}, "side_a"),
    ("side-not-an-object", {"side_a": "DC-25-000001"}, "side_a"),
    ("side-extra", {"side_a": {"player": "DC-25-000001", "name": "ana"}}, "side_a.name"),
    ("unknown-player", {"side_a": {"player": "DC-99-999999"}}, "side_a.player"),
    ("unknown-team", {"side_b": {"team": 999999}}, "side_b.team"),
    ("team-id-as-string", {"side_b": {"team": "7"}}, "side_b.team"),
    ("team-id-as-bool", {"side_b": {"team": True}}, "side_b.team"),
    ("same-sides", {"side_b": "ana"}, "side_b"),
    ("team-in-solo", {"side_b": "reds"}, "side_b.team"),
    ("scheduled", {"state": "scheduled"}, "state"),
    ("unknown-winner", {"winner": "c"}, "winner"),
    ("missing-winner", {"winner": DROP}, "winner"),
    ("naive-time", {"completed_at": "2026-03-02T20:00:00"}, "completed_at"),
    ("not-a-time", {"completed_at": "yesterday"}, "completed_at"),
    ("time-as-number", {"completed_at": 1767225600}, "completed_at"),
    ("final-as-string", {"is_final": "yes"}, "is_final"),
    ("extra-field", {"score": "2-1"}, "score"),
]


@pytest.mark.parametrize(
    "change, field",
    [(c, f) for _, c, f in BAD_MATCH_REPORTS],
    ids=[name for name, _, _ in BAD_MATCH_REPORTS],
)
def test_a_bad_match_report_is_422_naming_the_field_and_writes_nothing(
    client, session, world, change, field
):
    resolved = {}
    for key, value in change.items():
        if key.startswith("side_") and isinstance(value, str) and value in world:
            entrant = world[value]
            value = (
                {"team": entrant.id}
                if value in ("reds", "blues", "empty")
                else {"player": entrant.public_id}
            )
        resolved[key] = value
    before = written(session)
    response = post(client, MATCHES, match_report(world, **resolved), world["token"])
    assert response.status_code == 422, response.json
    assert response.json["field"] == field, response.json
    assert response.json["error"]
    assert written(session) == before


def test_a_player_in_a_team_tournament_is_refused(client, session, world):
    before = written(session)
    report = match_report(world, tournament_ref="t-league", side_a={"team": world["reds"].id})
    response = post(client, MATCHES, report, world["token"])
    assert response.status_code == 422
    assert response.json["field"] == "side_b.player"
    assert written(session) == before


def test_a_team_with_nobody_in_it_at_the_time_is_refused(client, session, world):
    before = written(session)
    report = match_report(
        world,
        tournament_ref="t-league",
        side_a={"team": world["reds"].id},
        side_b={"team": world["empty"].id},
    )
    response = post(client, MATCHES, report, world["token"])
    assert response.status_code == 422
    assert response.json["field"] == "side_b.team"
    assert "no members" in response.json["error"]
    assert written(session) == before


def test_every_field_at_fault_is_listed(client, world):
    response = post(client, MATCHES, {"match_ref": "", "winner": "z"}, world["token"])
    assert response.status_code == 422
    fields = {error["field"] for error in response.json["errors"]}
    assert {"match_ref", "winner", "tournament_ref", "side_a", "completed_at"} <= fields


@pytest.mark.parametrize("body", [b"{not json", b'{"match_ref": "pm-1",', b"", b"\xff\xfe"])
def test_a_body_that_is_not_json_is_400(client, session, world, body):
    before = written(session)
    response = client.post(
        MATCHES, data=body, content_type="application/json", headers=bearer(world["token"])
    )
    assert response.status_code == 400, response.json
    assert response.is_json and response.json["error"]
    assert written(session) == before


@pytest.mark.parametrize("body", ["[]", '"a match"', "null", "42"])
def test_json_that_is_not_an_object_is_422(client, world, body):
    response = client.post(
        MATCHES, data=body, content_type="application/json", headers=bearer(world["token"])
    )
    assert response.status_code == 422
    assert response.json["field"] is None


def test_a_body_sent_as_a_form_is_refused(client, session, world):
    before = written(session)
    response = client.post(MATCHES, data={"match_ref": "pm-1"}, headers=bearer(world["token"]))
    assert response.status_code == 415
    assert written(session) == before


# Who may write.


def test_writing_needs_a_token(client, session, world):
    before = written(session)
    response = client.post(MATCHES, json=match_report(world))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert written(session) == before


@pytest.mark.parametrize("url", [MATCHES, TOURNAMENTS])
def test_a_read_token_cannot_write(client, session, world, url):
    before = written(session)
    body = match_report(world) if url == MATCHES else tournament_report(world)
    response = post(client, url, body, world["read_token"])
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert "write" in response.json["error"]
    assert written(session) == before


def test_the_write_api_needs_no_csrf_token_and_sets_no_cookie(client, world):
    response = post(client, MATCHES, match_report(world), world["token"])
    assert response.status_code == 201
    assert "Set-Cookie" not in response.headers


# Tournament results.


def test_a_reported_tournament_result_gives_the_win_and_completions(
    client, session, world, make_registration
):
    for player in (world["ana"], world["ben"]):
        make_registration(world["solo"], player, status="checked_in")
    make_registration(world["solo"], world["cy"], status="no_show")
    placements = [
        {"place": 1, "player": world["ana"].public_id},
        {"place": 2, "player": world["ben"].public_id},
    ]
    response = post(
        client, TOURNAMENTS, tournament_report(world, placements=placements), world["token"]
    )
    assert response.status_code == 201, response.json
    assert response.json["status"] == "recorded"
    assert events_of(session, world["ana"]) == ["tournament_completed", "tournament_won"]
    assert events_of(session, world["ben"]) == ["tournament_completed"]
    assert events_of(session, world["cy"]) == []
    session.rollback()
    result = session.scalars(select(TournamentResult)).one()
    assert result.winner_player_id == world["ana"].id and response.json["id"] == result.id
    stored = session.execute(
        select(Placement.place, Placement.player_id).order_by(Placement.place)
    ).all()
    assert stored == [(1, world["ana"].id), (2, world["ben"].id)]


def test_a_team_tournament_won_by_a_team(client, session, world, make_registration):
    make_registration(world["teams"], world["reds"])
    make_registration(world["teams"], world["blues"])
    report = tournament_report(world, tournament_ref="t-league", winner={"team": world["reds"].id})
    response = post(client, TOURNAMENTS, report, world["token"])
    assert response.status_code == 201, response.json
    assert events_of(session, world["ben"]) == ["tournament_completed", "tournament_won"]
    assert events_of(session, world["dee"]) == ["tournament_completed"]
    assert stats_of(session, world["ben"])["team_tournament_wins"] == 1


def test_the_same_tournament_result_again_is_a_duplicate(client, session, world, make_registration):
    make_registration(world["solo"], world["ana"])
    placements = [
        {"place": 2, "player": world["ben"].public_id},
        {"place": 1, "player": world["ana"].public_id},
    ]
    body = tournament_report(world, placements=placements)
    assert post(client, TOURNAMENTS, body, world["token"]).status_code == 201
    before = written(session)
    response = post(client, TOURNAMENTS, {**body, "placements": placements[::-1]}, world["token"])
    assert response.status_code == 200, response.json
    assert response.json["status"] == "duplicate"
    assert written(session) == before


@pytest.mark.parametrize(
    "change",
    [
        {
            "winner": "ben",
            "placements": [{"place": 1, "player": "ben"}, {"place": 2, "player": "ana"}],
        },
        {"decided_at": (T0 + timedelta(days=3)).isoformat()},
        {"placements": [{"place": 1, "player": "ana"}, {"place": 3, "player": "ben"}]},
    ],
    ids=["winner", "decided_at", "placements"],
)
def test_a_different_result_for_a_decided_tournament_is_a_conflict(client, session, world, change):
    first = tournament_report(
        world,
        placements=[
            {"place": 1, "player": world["ana"].public_id},
            {"place": 2, "player": world["ben"].public_id},
        ],
    )
    assert post(client, TOURNAMENTS, first, world["token"]).status_code == 201
    before = written(session)
    resolved = _resolve_entrants(world, change)
    response = post(client, TOURNAMENTS, {**first, **resolved}, world["token"])
    assert response.status_code == 409, response.json
    assert next(iter(change)) in response.json["error"]
    assert written(session) == before


def _resolve_entrants(world, change: dict) -> dict:
    def entrant(name):
        return {"player": world[name].public_id}

    resolved = dict(change)
    if isinstance(change.get("winner"), str):
        resolved["winner"] = entrant(change["winner"])
    if "placements" in change:
        resolved["placements"] = [
            {
                "place": p["place"],
                **(entrant(p["player"]) if p["player"] in world else {"player": p["player"]}),
            }
            for p in change["placements"]
        ]
    return resolved


BAD_TOURNAMENT_REPORTS = [
    ("unknown-tournament", {"tournament_ref": "t-nowhere"}, "tournament_ref"),
    ("missing-winner", {"winner": DROP}, "winner"),
    ("unknown-winner", {"winner": {"player": "DC-99-999999"}}, "winner.player"),
    ("team-winner-of-solo", {"winner": "reds"}, "winner.team"),
    ("naive-decided-at", {"decided_at": "2026-03-04T18:00:00"}, "decided_at"),
    ("placements-not-a-list", {"placements": {"1": "ana"}}, "placements"),
    ("place-zero", {"placements": [{"place": 0, "player": "ana"}]}, "placements.0.place"),
    ("place-missing", {"placements": [{"player": "ana"}]}, "placements.0.place"),
    (
        "placed-twice",
        {"placements": [{"place": 1, "player": "ana"}, {"place": 2, "player": "ana"}]},
        "placements.1",
    ),
    ("first-but-not-winner", {"placements": [{"place": 1, "player": "ben"}]}, "placements.0.place"),
    ("winner-not-first", {"placements": [{"place": 2, "player": "ana"}]}, "placements.0.place"),
    (
        "unknown-placed-player",
        {"placements": [{"place": 3, "player": "DC-99-999999"}]},
        "placements.0.player",
    ),
]


@pytest.mark.parametrize(
    "change, field",
    [(c, f) for _, c, f in BAD_TOURNAMENT_REPORTS],
    ids=[name for name, _, _ in BAD_TOURNAMENT_REPORTS],
)
def test_a_bad_tournament_report_is_422_naming_the_field_and_writes_nothing(
    client, session, world, change, field
):
    resolved = dict(change)
    if change.get("winner") == "reds":
        resolved["winner"] = {"team": world["reds"].id}
    if isinstance(change.get("placements"), list):
        resolved["placements"] = [
            {
                key: (world[value].public_id if key == "player" and value in world else value)
                for key, value in placement.items()
            }
            for placement in change["placements"]
        ]
    before = written(session)
    response = post(client, TOURNAMENTS, tournament_report(world, **resolved), world["token"])
    assert response.status_code == 422, response.json
    assert response.json["field"] == field, response.json
    assert written(session) == before


def test_a_competition_nobody_wins_refuses_a_winner(client, session, world, make_tournament):
    make_tournament(
        "Nations Cup", external_ref="t-nations", is_team_based=True, awards_winner=False
    )
    before = written(session)
    report = tournament_report(world, tournament_ref="t-nations", winner={"team": world["reds"].id})
    response = post(client, TOURNAMENTS, report, world["token"])
    assert response.status_code == 422
    assert response.json["field"] == "tournament_ref"
    assert written(session) == before


def test_error_bodies_are_json_with_error_and_field(client, world):
    response = post(client, MATCHES, match_report(world, winner="c"), world["token"])
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(json.loads(response.data)) == {"error", "field", "errors"}


def test_an_oversized_body_is_refused_unread(client, session, world):
    before = written(session)
    body = match_report(world, round="x" * 300_000)
    response = post(client, MATCHES, body, world["token"])
    assert response.status_code == 413
    assert response.is_json
    assert written(session) == before
