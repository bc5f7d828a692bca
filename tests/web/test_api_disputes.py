"""The platform disputes a match through the API: the case opens, later reports join it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.web.api_support import bearer, issue_token, token_owner
from webapp.models import AuditEntry, Dispute, DisputeReport, Match


@pytest.fixture
def world(session, make_player, make_tournament, make_match):
    owner = token_owner(session)
    ana, ben = make_player("ana"), make_player("ben")
    cup = make_tournament()
    played = make_match(cup, ana, ben)
    scheduled = make_match(cup, ana, ben, state="scheduled", round="SF")
    with session.begin():
        session.get(Match, played.id).external_ref = "pm-7"
        session.get(Match, scheduled.id).external_ref = "pm-8"
    return {
        "token": issue_token(session, owner, "write"),
        "read_token": issue_token(session, owner, "read", name="reader"),
        "match": played,
        "ben": ben,
    }


def post(client, ref, body, token):
    return client.post(f"/api/matches/{ref}/disputes", json=body, headers=bearer(token))


def stored(session):
    session.rollback()
    return (
        session.scalar(select(func.count()).select_from(Dispute)),
        session.scalar(select(func.count()).select_from(DisputeReport)),
        [(m.external_ref, m.state, m.version) for m in session.scalars(select(Match).order_by(Match.id))],
    )


def test_a_report_opens_a_case_and_marks_the_match_disputed(client, session, world):
    response = post(client, "pm-7", {"reporter": world["ben"].public_id, "reason": "score swapped"},
                    world["token"])
    assert response.status_code == 201, response.json
    assert response.json["status"] == "opened" and response.json["match_state"] == "disputed"

    again = post(client, "pm-7", {"reporter": "DC-25-000777", "reason": "I saw it too"}, world["token"])
    assert again.status_code == 201 and again.json["status"] == "added"
    assert again.json["dispute_id"] == response.json["dispute_id"]

    session.rollback()
    reports = session.scalars(select(DisputeReport).order_by(DisputeReport.id)).all()
    assert [(r.source, r.reporter, r.reason) for r in reports] == [
        ("platform", world["ben"].public_id, "score swapped"), ("platform", "DC-25-000777", "I saw it too")]
    assert session.get(Match, world["match"].id).state == "disputed"
    assert session.scalar(select(func.count()).where(AuditEntry.action == "dispute.reported")) == 2


def test_a_match_can_be_named_by_our_id(client, session, world):
    response = post(client, str(world["match"].id), {"reporter": "x", "reason": "wrong"}, world["token"])
    assert response.status_code == 201 and response.json["match_ref"] == "pm-7"


@pytest.mark.parametrize(
    ("ref", "body", "status", "field"),
    [
        ("pm-404", {"reporter": "x", "reason": "wrong"}, 404, None),
        ("pm-7", {"reporter": "x"}, 422, "reason"),
        ("pm-7", {"reporter": "x", "reason": "   "}, 422, "reason"),
        ("pm-7", {"reporter": "x", "reason": "wrong", "severity": "high"}, 422, "severity"),
        ("pm-8", {"reporter": "x", "reason": "never played"}, 422, None),
    ],
)
def test_a_bad_report_is_refused_and_writes_nothing(client, session, world, ref, body, status, field):
    before = stored(session)
    response = post(client, ref, body, world["token"])
    assert response.status_code == status, response.json
    assert response.json["field"] == field
    assert stored(session) == before


def test_reporting_takes_a_token_with_the_write_scope(client, session, world):
    before = stored(session)
    assert post(client, "pm-7", {"reporter": "x", "reason": "r"}, world["read_token"]).status_code == 403
    assert client.post("/api/matches/pm-7/disputes", json={"reporter": "x", "reason": "r"}).status_code == 401
    assert stored(session) == before
