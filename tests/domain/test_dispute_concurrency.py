"""Two staff resolving the same disputed match at once: one succeeds, the other is told it changed."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.racing import race
from webapp.domain.audit import Actor
from webapp.domain.disputes import MatchChanged, report_dispute, resolve_dispute
from webapp.domain.reconciliation import find_drift
from webapp.domain.results import record_match_result
from webapp.extensions import db
from webapp.models import ActivityEvent, Match, MatchResolution, PlayerStats
from webapp.transaction import unit_of_work

START_TIMEOUT_S = 60


@pytest.fixture
def disputed_match(session, make_player, make_tournament, make_match):
    alice, bob = make_player("alice"), make_player("bob")
    match = make_match(make_tournament(), alice, bob, winner="a")
    with unit_of_work(session):
        record_match_result(session, match.id)
    with unit_of_work(session):
        report_dispute(session, Actor(None), match.id, "wrong winner", reporter="DC-1")
    session.expire_all()
    return session.get(Match, match.id), alice, bob


def race_resolutions(submissions: list[dict]) -> list[tuple[str, object]]:
    """Run each submission in its own thread and session, released together."""

    def staff_member(session: Session, submission: dict) -> tuple[str, object]:
        try:
            with unit_of_work(session):
                outcome = resolve_dispute(session, Actor(None), **submission)
        except MatchChanged as exc:
            return ("changed", str(exc))
        return ("replayed" if outcome.replayed else "resolved", submission["outcome"])

    results = race(db.engine, submissions, staff_member, timeout=START_TIMEOUT_S)
    errors = [detail for status, detail in results if status == "error"]
    assert not errors, "a staff member's request failed:\n" + "\n".join(errors)
    return results


def test_of_two_staff_resolving_from_the_same_view_one_wins_and_the_other_is_told_it_changed(
    app, session, disputed_match
):
    match, _alice, bob = disputed_match
    seen = {"match_id": match.id, "reason": "evidence", "expected_version": match.version}

    results = race_resolutions([seen | {"outcome": "b", "token": "staff-1"}, seen | {"outcome": "void", "token": "staff-2"}])

    statuses = [status for status, _detail in results]
    assert statuses == ["changed", "resolved"]
    assert "changed since you opened it" in results[0][1]
    session.rollback()  # a fresh snapshot: the race committed after the fixture read
    winner = results[1][1]
    stored = session.get(Match, match.id)
    assert stored.state == ("void" if winner == "void" else "completed")
    assert session.scalar(select(func.count()).select_from(MatchResolution)) == 1
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == (2 + 2 if winner == "void" else 2 + 4)
    assert find_drift(session).drifts == []
    expected_bob_wins = 1 if winner == "b" else 0
    assert session.get(PlayerStats, (bob.id, "all")).matches_won == expected_bob_wins


def test_a_form_submitted_twice_at_once_is_stored_once(app, session, disputed_match):
    match, _alice, bob = disputed_match
    submission = {"match_id": match.id, "reason": "evidence", "expected_version": match.version,
                  "outcome": "b", "token": "same-form"}

    results = race_resolutions([submission, dict(submission)])

    assert [status for status, _detail in results] == ["replayed", "resolved"]
    session.rollback()
    assert session.scalar(select(func.count()).select_from(MatchResolution)) == 1
    assert session.get(PlayerStats, (bob.id, "all")).matches_won == 1
    assert find_drift(session).drifts == []
