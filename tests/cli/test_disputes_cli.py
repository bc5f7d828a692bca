"""``flask disputes``: the queue, and a resolution that shows its preview before writing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from webapp.models import ActivityEvent, Match, MatchResolution, PlayerStats


@pytest.fixture
def disputed(make_disputed_match):
    match, _dispute, _alice, bob = make_disputed_match("score swapped", reporter="DC-25-000002")
    return match, bob


def test_list_shows_the_open_queue_with_reports(runner, disputed):
    result = runner.invoke(args=["disputes", "list"])
    assert result.exit_code == 0, result.output
    assert f"match {disputed[0].id}" in result.output and "DC-25-000002: score swapped" in result.output


def test_resolve_previews_and_writes_nothing_unless_confirmed(runner, session, disputed):
    match, _bob = disputed
    result = runner.invoke(args=["disputes", "resolve", str(match.id), "--outcome", "b", "--reason", "VOD"],
                           input="n\n")
    assert result.exit_code == 0, result.output
    assert "match_won_reversed" in result.output and "nothing written" in result.output
    session.rollback()
    assert session.scalar(select(func.count()).select_from(MatchResolution)) == 0


def test_resolve_with_yes_writes_the_correction(runner, session, disputed):
    match, bob = disputed
    result = runner.invoke(args=["disputes", "resolve", str(match.id), "--outcome", "b", "--reason", "VOD", "--yes"])
    assert result.exit_code == 0, result.output
    assert "4 events written" in result.output
    session.rollback()
    assert session.get(Match, match.id).winner_side == "b"
    assert session.get(PlayerStats, (bob.id, "all")).matches_won == 1


def test_resolving_a_match_without_an_open_dispute_exits_non_zero_and_writes_nothing(runner, session, disputed):
    match, _bob = disputed
    runner.invoke(args=["disputes", "resolve", str(match.id), "--outcome", "b", "--reason", "VOD", "--yes"])
    session.rollback()
    before = session.scalar(select(func.count()).select_from(ActivityEvent))
    result = runner.invoke(args=["disputes", "resolve", str(match.id), "--outcome", "a", "--reason", "x", "--yes"])
    assert result.exit_code == 2 and "no open dispute" in result.output
    session.rollback()
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == before
