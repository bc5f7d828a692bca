"""Disputes: reports, case files, resolutions by reversal, and the holds they place."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import T0
from webapp.domain.archive import held_player_ids
from webapp.domain.audit import Actor
from webapp.domain.disputes import (
    MatchChanged,
    add_note,
    case_file,
    dispute_queue,
    match_record,
    plan_resolution,
    players_with_open_disputes,
    record_case_view,
    report_dispute,
    resolve_dispute,
)
from webapp.domain.errors import Conflict, Invalid, NotFound
from webapp.domain.reconciliation import find_drift
from webapp.domain.results import record_match_result, record_tournament_result
from webapp.models import (
    ActivityEvent,
    ArchiveFile,
    AuditEntry,
    Dispute,
    DisputeNote,
    DisputeReport,
    DisputeView,
    Match,
    MatchResolution,
    Placement,
    PlayerStats,
    TeamMembership,
    TournamentResult,
)
from webapp.transaction import unit_of_work

PLATFORM = Actor(staff_id=None, ip_address="10.0.0.1")


@pytest.fixture
def staff(make_staff):
    member = make_staff("trust_safety")
    return Actor(staff_id=member.id, ip_address="10.0.0.2")


def recorded(session, match):
    with unit_of_work(session):
        record_match_result(session, match.id)
    return match


def report(session, match, reason="score entered the wrong way round", reporter="DC-25-000001"):
    with unit_of_work(session):
        return report_dispute(session, PLATFORM, match.id, reason, reporter=reporter)


def resolve(session, actor, match, outcome, reason="video evidence", token=None, version=None):
    session.expire_all()
    current = session.get(Match, match.id)
    with unit_of_work(session):
        return resolve_dispute(
            session, actor, match.id, outcome, reason,
            expected_version=current.version if version is None else version,
            token=token or f"{match.id}-{outcome}-{current.version}",
        )


def stats(session, player, scope="all"):
    session.expire_all()
    row = session.get(PlayerStats, (player.id, scope))
    return {} if row is None else {k: v for k, v in row.as_dict().items() if v}


def effective(session, match):
    """(player, type) of the match's outcome events nobody reversed."""
    session.expire_all()
    events = session.scalars(select(ActivityEvent)).all()
    reversed_ids = {e.reverses_event_id for e in events if e.reverses_event_id}
    return sorted(
        (e.player_id, e.event_type) for e in events
        if e.id not in reversed_ids and e.reverses_event_id is None and e.event_type.startswith("match_")
    )


def counts(session):
    session.expire_all()
    return {
        model.__name__: session.scalar(select(func.count()).select_from(model))
        for model in (ActivityEvent, Dispute, DisputeReport, MatchResolution, AuditEntry, PlayerStats)
    } | {"matches": [(m.id, m.state, m.winner_side, m.version) for m in session.scalars(select(Match))]}


@pytest.fixture
def duel(make_player, make_tournament, make_match, session):
    """alice beat bob, recorded; bob says the score was entered the wrong way round."""
    alice, bob = make_player("alice"), make_player("bob")
    cup = make_tournament()
    match = recorded(session, make_match(cup, alice, bob, winner="a"))
    return alice, bob, cup, match


# Reports.


def test_a_report_opens_a_case_marks_the_match_disputed_and_further_reports_join_it(session, duel):
    alice, bob, _cup, match = duel
    first = report(session, match, reporter=bob.public_id)
    second = report(session, match, reason="I was there: bob won", reporter="DC-25-000099")

    session.expire_all()
    disputed = session.get(Match, match.id)
    assert first.opened and not second.opened
    assert first.dispute.id == second.dispute.id
    assert disputed.state == "disputed" and disputed.winner_side == "a" and disputed.version == 2
    assert [r.reporter for r in session.scalars(select(DisputeReport))] == [bob.public_id, "DC-25-000099"]
    assert players_with_open_disputes(session) == {alice.id, bob.id}
    assert session.scalar(select(func.count()).where(AuditEntry.action == "dispute.reported")) == 2


@pytest.mark.parametrize(
    ("match_id", "reason", "error"),
    [(999_999, "wrong score", NotFound), ("nope", "wrong score", NotFound), (None, "   ", Invalid)],
)
def test_a_bad_report_is_refused_and_changes_nothing(session, duel, match_id, reason, error):
    match = duel[3]
    before = counts(session)
    with pytest.raises(error), unit_of_work(session):
        report_dispute(session, PLATFORM, match.id if match_id is None else match_id, reason)
    assert counts(session) == before


def test_a_match_not_played_yet_cannot_be_disputed(session, duel, make_match):
    alice, bob, cup, _match = duel
    scheduled = make_match(cup, alice, bob, state="scheduled", round="R2")
    before = counts(session)
    with pytest.raises(Invalid, match="only a played match"), unit_of_work(session):
        report_dispute(session, PLATFORM, scheduled.id, "never played")
    assert counts(session) == before


def test_the_queue_lists_open_cases_oldest_first_with_who_reported_and_why(session, duel, make_match):
    alice, bob, cup, match = duel
    later = recorded(session, make_match(cup, bob, alice, round="R2"))
    report(session, match, reason="wrong way round", reporter="DC-1")
    report(session, later, reason="opponent cheated", reporter="DC-2")

    queue = dispute_queue(session)
    assert [item.match.id for item in queue] == [match.id, later.id]
    assert [(r.reporter, r.reason) for r in queue[1].reports] == [("DC-2", "opponent cheated")]


# Resolutions.


def test_a_corrected_winner_reverses_the_original_outcome_and_records_the_new_one(session, duel, staff):
    alice, bob, _cup, match = duel
    originals = {e.player_id: e for e in session.scalars(select(ActivityEvent))}
    report(session, match)

    outcome = resolve(session, staff, match, "b", reason="the referee's sheet says bob won")

    resolution = outcome.resolution
    events = session.scalars(select(ActivityEvent).where(ActivityEvent.source_model == "match_resolution")).all()
    assert sorted((e.player_id, e.event_type, e.reverses_event_id) for e in events) == sorted([
        (alice.id, "match_won_reversed", originals[alice.id].id),
        (bob.id, "match_lost_reversed", originals[bob.id].id),
        (bob.id, "match_won", None),
        (alice.id, "match_lost", None),
    ])
    assert {(e.source_id, e.origin, e.origin_id) for e in events} == {(resolution.id, "dispute", resolution.id)}
    # The originals are untouched.
    assert {e.id: e.event_type for e in originals.values()} == {
        e.id: e.event_type for e in session.scalars(select(ActivityEvent).where(ActivityEvent.source_model == "match"))
    }
    assert stats(session, alice) == {"matches_played": 1, "matches_lost": 1}
    assert stats(session, bob) == {"matches_played": 1, "matches_won": 1}
    session.expire_all()
    corrected = session.get(Match, match.id)
    assert (corrected.state, corrected.winner_side, corrected.version) == ("completed", "b", 3)
    assert session.get(Dispute, resolution.dispute_id).status == "resolved"
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "dispute.resolved")).one()
    assert (audit.staff_id, audit.target_id, audit.details["resolution_id"]) == (staff.staff_id, match.id, resolution.id)
    assert not find_drift(session).drifts
    assert players_with_open_disputes(session) == set()


def test_the_stored_preview_is_exactly_what_was_written(session, duel, staff):
    _alice, bob, _cup, match = duel
    report(session, match)
    session.expire_all()
    preview = plan_resolution(session, match.id, "b").as_json()
    session.rollback()

    resolution = resolve(session, staff, match, "b").resolution
    session.expire_all()
    resolution = session.get(MatchResolution, resolution.id)
    written = session.scalars(
        select(ActivityEvent).where(ActivityEvent.source_id == resolution.id,
                                    ActivityEvent.source_model == "match_resolution")
    ).all()
    assert resolution.preview == preview
    assert sorted((e["player_id"], e["event_type"], e["reverses_event_id"])
                  for e in preview["reversals"] + preview["new_events"]) == sorted(
        (e.player_id, e.event_type, e.reverses_event_id) for e in written)
    for change in preview["stat_changes"]:
        assert resolution.stats_before[str(change["player_id"])][change["scope"]][change["stat"]] == change["before"]
        assert resolution.stats_after[str(change["player_id"])][change["scope"]][change["stat"]] == change["after"]
    assert resolution.stats_after[str(bob.id)]["all"]["matches_won"] == 1


def test_a_match_can_be_resolved_again_and_back_with_stats_exact(session, duel, staff):
    alice, bob, _cup, match = duel
    report(session, match)
    resolve(session, staff, match, "b")
    report(session, match, reason="the sheet was forged")
    resolve(session, staff, match, "a")

    assert effective(session, match) == [(alice.id, "match_won"), (bob.id, "match_lost")]
    assert stats(session, alice) == {"matches_played": 1, "matches_won": 1}
    assert stats(session, bob) == {"matches_played": 1, "matches_lost": 1}
    # Each resolution's events are its own: the second reversed the first's.
    first, second = session.scalars(select(MatchResolution).order_by(MatchResolution.id)).all()
    reversed_by_second = {
        e.reverses_event_id for e in session.scalars(
            select(ActivityEvent).where(ActivityEvent.source_id == second.id,
                                        ActivityEvent.source_model == "match_resolution"))
    } - {None}
    assert reversed_by_second == {
        e.id for e in session.scalars(
            select(ActivityEvent).where(ActivityEvent.source_id == first.id,
                                        ActivityEvent.source_model == "match_resolution",
                                        ActivityEvent.reverses_event_id.is_(None)))
    }
    assert not find_drift(session).drifts


def test_void_takes_the_result_away_and_a_later_resolution_gives_a_winner(session, duel, staff):
    alice, bob, _cup, match = duel
    report(session, match)
    resolve(session, staff, match, "void", reason="match fixing")
    session.expire_all()
    assert (session.get(Match, match.id).state, session.get(Match, match.id).winner_side) == ("void", None)
    assert effective(session, match) == []
    assert stats(session, alice) == {} and stats(session, bob) == {}

    report(session, match, reason="the fixing claim was withdrawn")
    resolve(session, staff, match, "b")
    assert effective(session, match) == sorted([(bob.id, "match_won"), (alice.id, "match_lost")])
    assert stats(session, bob) == {"matches_played": 1, "matches_won": 1}
    assert session.get(Match, match.id).state == "completed"
    assert not find_drift(session).drifts


def test_upholding_the_result_closes_the_case_and_writes_no_events(session, duel, staff):
    alice, _bob, _cup, match = duel
    report(session, match)
    before = session.scalar(select(func.count()).select_from(ActivityEvent))
    outcome = resolve(session, staff, match, "a", reason="result stands")
    assert outcome.plan.events == []
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == before
    assert session.get(Match, match.id).state == "completed"
    assert stats(session, alice) == {"matches_played": 1, "matches_won": 1}


def test_a_forfeit_stays_a_forfeit_when_its_winner_is_corrected(session, make_player, make_tournament,
                                                                make_match, staff):
    alice, bob = make_player(), make_player()
    match = recorded(session, make_match(make_tournament(), alice, bob, state="forfeit", winner="a"))
    report(session, match)
    resolve(session, staff, match, "b")
    assert effective(session, match) == sorted([(bob.id, "match_forfeit_won"), (alice.id, "match_forfeit_lost")])
    assert stats(session, bob) == {"forfeit_wins": 1}
    assert session.get(Match, match.id).state == "forfeit"
    assert not find_drift(session).drifts


def test_team_sides_fan_out_to_every_member_at_the_time(session, make_player, make_team, make_tournament,
                                                        make_match, staff):
    owls = [make_player() for _ in range(2)]
    larks = [make_player() for _ in range(3)]
    latecomer = make_player()
    owl_team, lark_team = make_team("Owls", owls), make_team("Larks", larks)
    with unit_of_work(session):
        session.add(TeamMembership(team_id=owl_team.id, player_id=latecomer.id, joined_at=T0 + timedelta(days=5)))
    match = recorded(session, make_match(make_tournament(is_team_based=True), owl_team, lark_team, winner="a"))
    report(session, match)
    resolve(session, staff, match, "b")

    assert effective(session, match) == sorted(
        [(p.id, "match_won") for p in larks] + [(p.id, "match_lost") for p in owls])
    assert stats(session, latecomer) == {}
    record = match_record(session, match.id)
    assert [sorted(p.id for p in side.members) for side in record.sides] == [
        sorted(p.id for p in owls), sorted(p.id for p in larks)]
    assert not find_drift(session).drifts


def test_a_private_tournament_correction_stays_out_of_public_stats(session, make_player, make_tournament,
                                                                   make_match, staff):
    alice, bob = make_player(), make_player()
    match = recorded(session, make_match(make_tournament(is_private=True), alice, bob))
    report(session, match)
    resolve(session, staff, match, "b")
    assert stats(session, bob, "public") == {}
    assert stats(session, bob) == {"matches_played": 1, "matches_won": 1}
    assert not find_drift(session).drifts


def test_the_final_carries_the_tournament_win_to_the_corrected_winner(
    session, make_player, make_team, make_tournament, make_match, make_registration, make_result, staff
):
    owls = [make_player() for _ in range(2)]
    larks = [make_player() for _ in range(2)]
    owl_team, lark_team = make_team("Owls", owls), make_team("Larks", larks)
    cup = make_tournament(is_team_based=True)
    for team in (owl_team, lark_team):
        make_registration(cup, team)
    final = recorded(session, make_match(cup, owl_team, lark_team, winner="a", is_final=True, round="F"))
    result = make_result(cup, owl_team)
    with unit_of_work(session):
        session.add_all([Placement(result_id=result.id, place=1, team_id=owl_team.id),
                         Placement(result_id=result.id, place=2, team_id=lark_team.id)])
        record_tournament_result(session, cup.id)
    report(session, final)

    outcome = resolve(session, staff, final, "b")

    won = session.scalars(select(ActivityEvent).where(ActivityEvent.event_type.like("tournament_won%"))).all()
    assert sorted((e.player_id, e.event_type, e.team_id) for e in won) == sorted(
        [(p.id, "tournament_won", owl_team.id) for p in owls]
        + [(p.id, "tournament_won_reversed", owl_team.id) for p in owls]
        + [(p.id, "tournament_won", lark_team.id) for p in larks])
    assert all(e.source_id == outcome.resolution.id for e in won if e.team_id == lark_team.id)
    assert stats(session, larks[0])["team_tournament_wins"] == 1
    assert "tournaments_won" not in stats(session, owls[0])
    session.expire_all()
    assert session.scalars(select(TournamentResult)).one().winner_team_id == lark_team.id
    assert sorted((p.place, p.team_id) for p in session.scalars(select(Placement))) == [
        (1, lark_team.id), (2, owl_team.id)]
    assert not find_drift(session).drifts

    # Voided, nobody holds the win.
    report(session, final)
    resolve(session, staff, final, "void")
    assert all("tournaments_won" not in stats(session, p) for p in owls + larks)
    assert not find_drift(session).drifts


def test_a_void_final_leaves_the_result_void_and_resolving_it_again_restores_a_winner(
    session, make_player, make_tournament, make_match, make_registration, make_result, staff
):
    from tests.jobs.test_backfill import run_backfill

    alice, bob, carol = make_player("alice"), make_player("bob"), make_player("carol")
    cup = make_tournament()
    for player in (alice, bob, carol):
        make_registration(cup, player)
    final = recorded(session, make_match(cup, alice, bob, winner="a", is_final=True, round="F"))
    result = make_result(cup, alice)
    with unit_of_work(session):
        session.add_all([Placement(result_id=result.id, place=1, player_id=alice.id),
                         Placement(result_id=result.id, place=2, player_id=bob.id),
                         Placement(result_id=result.id, place=3, player_id=carol.id)])
        record_tournament_result(session, cup.id)
    assert run_backfill(session).status == "succeeded"
    report(session, final)

    plan = plan_resolution(session, final.id, "void")
    assert plan.tournament_winner_before == (alice.id, None) and plan.tournament_winner_after is None
    resolve(session, staff, final, "void")

    session.expire_all()
    voided = session.get(TournamentResult, result.id)
    assert (voided.status, voided.winner_player_id, voided.winner_team_id) == ("void", None, None)
    assert sorted((p.place, p.player_id) for p in session.scalars(select(Placement))) == [
        (2, alice.id), (2, bob.id), (3, carol.id)]
    # A void match was not played, and nobody won the tournament.
    assert stats(session, alice) == stats(session, bob) == {"tournaments_completed": 1,
                                                            "tournaments_played": 1}
    assert not find_drift(session).drifts

    # Nothing that reads the result again gives the void result a winner.
    events_before = session.scalar(select(func.count()).select_from(ActivityEvent))
    with unit_of_work(session):
        assert record_tournament_result(session, cup.id).recorded == []
    run = run_backfill(session)
    assert run.status == "succeeded", run.error
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == events_before

    report(session, final, reason="the replay shows bob won the final")
    again = plan_resolution(session, final.id, "b")
    assert again.tournament_winner_before is None and again.tournament_winner_after == (bob.id, None)
    outcome = resolve(session, staff, final, "b")

    session.expire_all()
    decided = session.get(TournamentResult, result.id)
    assert (decided.status, decided.winner_player_id, decided.winner_team_id) == ("decided", bob.id, None)
    assert sorted((p.place, p.player_id) for p in session.scalars(select(Placement))) == [
        (1, bob.id), (2, alice.id), (3, carol.id)]
    wins = session.scalars(select(ActivityEvent).where(ActivityEvent.event_type == "tournament_won",
                                                       ActivityEvent.player_id == bob.id)).all()
    assert [(w.source_model, w.source_id) for w in wins] == [("match_resolution", outcome.resolution.id)]
    assert stats(session, bob) == {"matches_played": 1, "matches_won": 1, "tournaments_completed": 1,
                                   "tournaments_played": 1, "tournaments_won": 1,
                                   "solo_tournament_wins": 1}
    assert stats(session, alice) == {"matches_played": 1, "matches_lost": 1, "tournaments_completed": 1,
                                     "tournaments_played": 1}
    assert not find_drift(session).drifts

    events_before = session.scalar(select(func.count()).select_from(ActivityEvent))
    run = run_backfill(session)
    assert run.status == "succeeded", run.error
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == events_before
    assert not find_drift(session).drifts


def test_a_void_result_must_name_nobody_and_a_decided_one_exactly_one_winner(
    session, make_player, make_tournament
):
    alice, cup = make_player(), make_tournament()
    for status, winner in (("void", alice.id), ("decided", None)):
        with pytest.raises(Conflict, match="winner_unless_void"), unit_of_work(session):
            session.add(TournamentResult(tournament_id=cup.id, status=status, winner_player_id=winner,
                                         decided_at=T0))
            session.flush()


# Repetition, concurrency and bad input.


def test_a_double_submit_returns_the_stored_resolution_and_writes_nothing(session, duel, staff):
    match = duel[3]
    report(session, match)
    session.expire_all()
    version = session.get(Match, match.id).version
    first = resolve(session, staff, match, "b", token="form-123", version=version)
    before = counts(session)
    again = resolve(session, staff, match, "b", token="form-123", version=version)
    assert again.replayed and again.resolution.id == first.resolution.id
    assert counts(session) == before


def test_a_resolution_prepared_on_an_older_version_is_refused(session, duel, staff):
    match = duel[3]
    report(session, match)
    session.expire_all()
    seen = session.get(Match, match.id).version
    resolve(session, staff, match, "b", token="first", version=seen)
    report(session, match, reason="reopened")
    before = counts(session)
    with pytest.raises(MatchChanged, match="changed since you opened it"):
        resolve(session, staff, match, "void", token="second", version=seen)
    assert counts(session) == before


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"match_id": 999_999}, NotFound),
        ({"reason": "  "}, Invalid),
        ({"outcome": "c"}, Invalid),
        ({"token": ""}, Invalid),
        ({"expected_version": None}, Invalid),
    ],
)
def test_bad_resolutions_are_refused_and_change_nothing(session, duel, staff, change, error):
    match = duel[3]
    report(session, match)
    session.expire_all()
    arguments = {"match_id": match.id, "outcome": "b", "reason": "evidence", "token": "t",
                 "expected_version": session.get(Match, match.id).version} | change
    before = counts(session)
    with pytest.raises(error), unit_of_work(session):
        resolve_dispute(session, staff, arguments.pop("match_id"), arguments.pop("outcome"),
                        arguments.pop("reason"), **arguments)
    assert counts(session) == before


def test_a_match_without_an_open_dispute_cannot_be_resolved(session, duel, staff):
    match = duel[3]
    before = counts(session)
    with pytest.raises(Invalid, match="no open dispute"), unit_of_work(session):
        resolve_dispute(session, staff, match.id, "b", "evidence", expected_version=1, token="t")
    assert counts(session) == before


# The case file.


def test_the_case_file_keeps_reports_notes_viewers_and_the_resolution(session, duel, staff):
    _alice, _bob, _cup, match = duel
    dispute_id = report(session, match).dispute.id
    with unit_of_work(session):
        add_note(session, staff, dispute_id, "Stream VOD at 12:30 shows bob's winning goal.")
        record_case_view(session, staff, dispute_id)
    with pytest.raises(Invalid), unit_of_work(session):
        add_note(session, staff, dispute_id, " ")
    resolve(session, staff, match, "b")

    case = case_file(session, dispute_id)
    assert [n.body for n in case.notes] == ["Stream VOD at 12:30 shows bob's winning goal."]
    assert [v.staff_id for v in case.views] == [staff.staff_id]
    assert case.resolution.outcome == "b"
    assert sorted(e.event_type for e in case.resolution_events) == [
        "match_lost", "match_lost_reversed", "match_won", "match_won_reversed"]
    assert session.scalar(select(func.count()).select_from(DisputeNote)) == 1
    assert session.scalar(select(func.count()).select_from(DisputeView)) == 1
    assert {a.action for a in session.scalars(select(AuditEntry))} >= {
        "dispute.reported", "dispute.note_added", "dispute.viewed", "dispute.resolved"}


def test_open_disputes_hold_both_sides_including_the_team_members_of_the_time(
    session, make_player, make_team, make_tournament, make_match
):
    solo, left_before, member, other_member, bystander = (make_player() for _ in range(5))
    team = make_team("Owls", [member, other_member])
    with unit_of_work(session):
        # Left the team before the match: the match's events never reached them.
        session.add(TeamMembership(team_id=team.id, player_id=left_before.id,
                                   joined_at=T0 - timedelta(days=100), left_at=T0 - timedelta(days=50)))
    tournament = make_tournament(is_team_based=True)
    disputed = make_match(tournament, solo, team)
    settled = make_match(tournament, bystander, team, round="R2")
    report(session, disputed)
    report(session, settled)
    resolve(session, Actor(staff_id=None), settled, "a")

    assert players_with_open_disputes(session) == {solo.id, member.id, other_member.id}
    assert players_with_open_disputes(session, [member.id, bystander.id, left_before.id]) == {member.id}
    assert players_with_open_disputes(session, []) == set()
    assert held_player_ids(session) >= {solo.id, member.id, other_member.id}
    assert bystander.id not in held_player_ids(session)


# A corrected match stays corrected when its result arrives again.


def test_a_repeated_report_or_a_backfill_does_not_count_a_corrected_result_twice(
    session, make_player, make_tournament, make_match, make_result, staff
):
    from tests.jobs.test_backfill import run_backfill

    alice, bob = make_player(), make_player()
    cup = make_tournament()
    final = recorded(session, make_match(cup, alice, bob, winner="a", is_final=True, round="F"))
    make_result(cup, alice)
    with unit_of_work(session):
        record_tournament_result(session, cup.id)
    report(session, final)
    resolve(session, staff, final, "b")
    before = (stats(session, alice), stats(session, bob),
              session.scalar(select(func.count()).select_from(ActivityEvent)))

    with unit_of_work(session):
        assert record_match_result(session, final.id).recorded == []
        assert record_tournament_result(session, cup.id).recorded == []
    run = run_backfill(session)

    assert run.status == "succeeded", run.error
    assert (stats(session, alice), stats(session, bob),
            session.scalar(select(func.count()).select_from(ActivityEvent))) == before
    assert stats(session, bob)["tournaments_won"] == 1 and "tournaments_won" not in stats(session, alice)
    assert not find_drift(session).drifts


def test_a_backfill_batch_read_before_a_resolution_records_the_resolution_not_the_old_result(
    session, make_player, make_tournament, make_match, staff
):
    # A backfill reads its next batch ahead of the transaction that records it.
    from tests.jobs.test_backfill import ALL_HISTORY, start
    from webapp.domain import backfill

    alice, bob = make_player(), make_player()
    match = make_match(make_tournament(), alice, bob, winner="a")  # never recorded live
    run_id = start(session)
    prepared = backfill.prepare_batch(session, run_id, ALL_HISTORY, backfill.START, 500)
    session.rollback()
    assert [f.event_type for row in prepared.rows for f in row.facts] == ["match_won", "match_lost"]

    report(session, match)
    resolve(session, staff, match, "b")
    with unit_of_work(session):
        line = backfill.record_batch(session, run_id, 1, prepared)

    assert line.counts.events_inserted == 0 and line.counts.skipped_undecided == 1
    assert stats(session, bob) == {"matches_played": 1, "matches_won": 1}
    assert stats(session, alice) == {"matches_played": 1, "matches_lost": 1}
    assert not find_drift(session).drifts


def test_a_packed_batch_read_before_a_resolution_is_left_for_the_general_way_with_nothing_written(
    session, make_player, make_tournament, make_match, staff
):
    # A batch prepared in another process comes back packed, without its facts.
    from tests.jobs.test_backfill import ALL_HISTORY, start
    from webapp.domain import backfill

    alice, bob = make_player(), make_player()
    match = make_match(make_tournament(), alice, bob, winner="a")  # never recorded live
    run_id = start(session)
    prepared = backfill.prepare_batch(session, run_id, ALL_HISTORY, backfill.START, 500)
    packed = backfill.pack_batch(prepared, backfill.START, session.get_bind().dialect)
    session.rollback()
    assert packed.counts.rows_read == 1 and len(packed.converted.values) == 2

    report(session, match)
    resolve(session, staff, match, "b")
    events_before = session.scalar(select(func.count()).select_from(ActivityEvent))
    with unit_of_work(session):
        assert backfill.record_packed_batch(session, run_id, 1, packed) is None
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == events_before
    assert backfill.ledger(session, run_id) == []
    session.rollback()
    assert stats(session, bob) == {"matches_played": 1, "matches_won": 1}


def test_a_match_whose_events_are_in_cold_storage_is_resolved_only_after_restoring_them(
    session, app, tmp_path, monkeypatch, make_player, make_tournament, make_match, staff
):
    from tests.jobs.test_archive import AFTER_DAYS, NOW, archive_now, restore

    url = str(tmp_path / "cold")
    monkeypatch.setitem(app.config, "ARCHIVE_URL", url)
    alice, bob = make_player(), make_player()
    old = recorded(session, make_match(make_tournament(starts_at=NOW - timedelta(days=AFTER_DAYS + 60),
                                                      ends_at=NOW - timedelta(days=AFTER_DAYS + 59)),
                                      alice, bob, at=NOW - timedelta(days=AFTER_DAYS + 60)))
    assert archive_now(session, url).status == "succeeded"
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == 0
    report(session, old)

    with pytest.raises(Conflict, match="restore them"), unit_of_work(session):
        resolve_dispute(session, staff, old.id, "b", "evidence", expected_version=2, token="t")

    file_id = session.scalars(select(ArchiveFile.id)).one()
    assert restore(session, url, file_id).status == "succeeded"
    resolve(session, staff, old, "b")
    assert stats(session, bob) == {"matches_played": 1, "matches_won": 1}
    assert not find_drift(session).drifts
