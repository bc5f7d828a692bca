"""GDPR erasure: two people, one unit of work, no personal data left, everyone else's history intact."""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.racing import race
from webapp.domain import archive
from webapp.domain.archive import ArchiveStorage
from webapp.domain.audit import SYSTEM, Actor
from webapp.domain.disputes import report_dispute
from webapp.domain.erasure import ErasureRefused, erase_player, request_erasure
from webapp.domain.errors import Conflict, Invalid, NotFound
from webapp.domain.gdpr_export import start_export
from webapp.domain.gdpr_requests import (
    IdentityNotVerified,
    add_note,
    get_request,
    open_request,
    record_identity_verification,
)
from webapp.domain.privacy import DELETED_PLAYER, Viewer
from webapp.domain.reconciliation import find_drift
from webapp.domain.recording import NewEvent, record_events
from webapp.domain.results import record_match_result
from webapp.domain.timeline import feed_page
from webapp.jobs.runner import execute_run
from webapp.models import (
    ActivityEvent,
    ArchivedEventCount,
    ArchiveFile,
    AuditEntry,
    DataQualityFinding,
    DisputeReport,
    GdprExport,
    Match,
    Player,
    PlayerStats,
)
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work

NOW = utcnow()
# Far above the ids of matches the tests create, so a synthetic event never shares
# its idempotency key with the events of a real match (recording would call that a conflict).
_source_ids = itertools.count(1_000_000)


def match_event(player, opponent, event_type="match_won", *, at=None, round_="R1") -> NewEvent:
    return NewEvent(
        player_id=player.id,
        event_type=event_type,
        occurred_at=at or NOW - timedelta(days=3),
        source_model="match",
        source_id=next(_source_ids),
        metadata={"round": round_, "side": "a", "opponent_player_ids": [opponent.id]},
    )


@pytest.fixture
def privacy(make_staff):
    return Actor(staff_id=make_staff("privacy").id)


@pytest.fixture
def second_privacy(make_staff):
    return Actor(staff_id=make_staff("privacy").id)


@pytest.fixture
def storage(app, tmp_path, monkeypatch) -> ArchiveStorage:
    url = str(tmp_path / "cold")
    monkeypatch.setitem(app.config, "ARCHIVE_URL", url)
    return ArchiveStorage(url)


@pytest.fixture
def league(session, make_player):
    """Alice (to be erased), Bob and Carol, with matches between them."""
    alice = make_player("alice", display_name="Alice Liddell", email="alice@example.test")
    bob, carol = make_player("bob"), make_player("carol")
    facts = []
    for k in range(3):
        at = NOW - timedelta(days=3 + k)
        facts += [
            match_event(alice, bob, at=at), match_event(bob, alice, "match_lost", at=at),
            match_event(carol, alice, at=at), match_event(alice, carol, "match_lost", at=at),
            match_event(bob, carol, at=at), match_event(carol, bob, "match_lost", at=at),
        ]
    # Free text in metadata that names her: the one kind metadata allows.
    facts.append(match_event(bob, alice, round_="Grudge match vs Alice", at=NOW - timedelta(days=9)))
    with unit_of_work(session):
        record_events(session, facts)
    return alice, bob, carol


def stats_of_others(session, erased_id: int) -> dict:
    found = {
        (s.player_id, s.scope): s.as_dict()
        for s in session.scalars(select(PlayerStats).where(PlayerStats.player_id != erased_id))
    }
    session.rollback()
    return found


def verified_erasure_request(session, actor, player) -> int:
    with unit_of_work(session):
        request = open_request(session, actor, "erasure", player.public_id)
        record_identity_verification(session, actor, request.id,
                                     f"Signed-in request from {player.email}, account {player.username}")
    return request.id


def erase(session, first, second, request_id, storage=None):
    with unit_of_work(session):
        request_erasure(session, first, request_id)
    with unit_of_work(session):
        return erase_player(session, second, request_id, storage=storage)


def test_erasure_moves_history_to_a_tombstone_and_leaves_no_trace(
    session, league, privacy, second_privacy, storage
):
    alice, bob, _carol = league
    alice_id = alice.id
    erased = (alice.username, alice.email, alice.public_id)
    others_before = stats_of_others(session, alice_id)
    her_events = set(session.scalars(select(ActivityEvent.id).where(ActivityEvent.player_id == alice_id)))
    request_id = verified_erasure_request(session, privacy, alice)

    step = erase(session, privacy, second_privacy, request_id, storage)

    assert step.changed and step.result.events_moved == len(her_events) == 6
    report = get_request(session, request_id).verification_report
    assert report["total_hits"] == 0, report["hits"]
    assert report["columns_searched"] > 30 and report["searched_for"] == ["email", "public_id", "username"]
    for value in erased:
        assert value not in json.dumps(report)

    shell = session.get(Player, alice_id)
    assert shell.erased_at is not None and shell.display_name == DELETED_PLAYER
    assert {shell.username, shell.email, shell.public_id}.isdisjoint(erased)
    tombstone = session.scalars(select(Player).where(Player.is_tombstone)).one()
    moved = set(session.scalars(select(ActivityEvent.id).where(ActivityEvent.player_id == tombstone.id)))
    assert moved == her_events
    assert session.scalar(select(func.count()).where(ActivityEvent.player_id == alice_id)) == 0
    assert session.scalar(select(func.count()).select_from(PlayerStats).where(
        PlayerStats.player_id.in_((alice_id, tombstone.id)))) == 0
    # Nothing stored links the tombstone back to the request's player.
    audits = session.scalars(select(AuditEntry)).all()
    assert all(tombstone.id != e.target_id and tombstone.id not in e.details.values() for e in audits)
    assert tombstone.created_at == datetime(2000, 1, 1, tzinfo=UTC)

    assert stats_of_others(session, alice_id) == others_before
    assert find_drift(session).drifts == []
    session.rollback()

    bobs_feed = feed_page(session, bob, Viewer.staff_full("checking"), limit=50).items
    assert not [i for i in bobs_feed if alice_id in [o["id"] for o in i["opponents"]]]
    against_her = [i for i in bobs_feed if tombstone.id in [o["id"] for o in i["opponents"]]]
    assert against_her and all(
        o["label"] == DELETED_PLAYER and o["public_id"] is None
        for i in against_her for o in i["opponents"]
    )
    grudge = next(i for i in bobs_feed if i["details"]["round"].startswith("Grudge"))
    assert grudge["details"]["round"] == "Grudge match vs [erased]"
    entries = get_request(session, request_id).entries
    assert [e.kind for e in entries][-2:] == ["erasure_approved", "completed"]
    assert "[erased]" in entries[1].text and "alice" not in entries[1].text.lower()


def test_the_verification_report_finds_what_erasure_cannot_remove(
    session, league, privacy, second_privacy
):
    alice = league[0]
    request_id = verified_erasure_request(session, privacy, alice)
    # The audit trail is append-only: a reason typed with her email stays there.
    with unit_of_work(session):
        from webapp.domain.audit import record_audit
        record_audit(session, privacy, "player.view_unredacted", target_type="player",
                     target_id=alice.id, reason=f"complaint from {alice.email}")

    step = erase(session, privacy, second_privacy, request_id)

    report = step.result.report
    # Her email, and her username as the word before its "@".
    assert sorted(report["hits"], key=lambda h: h["value"]) == [
        {"where": "audit_entries.details", "value": "email", "count": 1},
        {"where": "audit_entries.details", "value": "username", "count": 1},
    ]
    assert report["total_hits"] == 2


def test_dispute_reports_naming_the_player_are_scrubbed(
    session, league, privacy, second_privacy, make_tournament, make_match
):
    alice, bob, carol = league
    played = make_match(make_tournament("Old Cup"), bob, carol, winner="a")
    # Alice reported Bob and Carol's match; the dispute holds neither her nor her events.
    with unit_of_work(session):
        dispute = report_dispute(session, SYSTEM, played.id, "wrong score", reporter=alice.public_id)
    request_id = verified_erasure_request(session, privacy, alice)
    step = erase(session, privacy, second_privacy, request_id)
    assert step.result.report["total_hits"] == 0
    assert session.get(DisputeReport, dispute.report.id).reporter == "[erased]"


def test_an_approver_must_be_a_different_staff_member(session, league, privacy):
    request_id = verified_erasure_request(session, privacy, league[0])
    with unit_of_work(session):
        request_erasure(session, privacy, request_id)
    with pytest.raises(ErasureRefused, match="cannot approve it"), unit_of_work(session):
        erase_player(session, privacy, request_id)
    request = get_request(session, request_id)
    assert request.status == "awaiting_approval" and request.approved_by_id is None
    assert session.get(Player, league[0].id).erased_at is None


def test_repeating_a_request_or_an_approval_changes_nothing(
    session, league, privacy, second_privacy, make_staff
):
    alice = league[0]
    request_id = verified_erasure_request(session, privacy, alice)
    with unit_of_work(session):
        assert request_erasure(session, privacy, request_id).changed
    with unit_of_work(session):
        again = request_erasure(session, second_privacy, request_id)
    assert not again.changed and "already requested" in again.message
    assert get_request(session, request_id).erasure_requested_by_id == privacy.staff_id

    with unit_of_work(session):
        erase_player(session, second_privacy, request_id)
    audits = session.scalar(select(func.count()).select_from(AuditEntry))
    tombstones = session.scalar(select(func.count()).select_from(Player).where(Player.is_tombstone))
    third = Actor(staff_id=make_staff("admin").id)
    with unit_of_work(session):
        repeated = erase_player(session, third, request_id)
    assert not repeated.changed and "already erased" in repeated.message
    with unit_of_work(session):
        assert not request_erasure(session, privacy, request_id).changed
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == audits + 1  # the admin's staff.create
    assert session.scalar(select(func.count()).select_from(Player).where(Player.is_tombstone)) == tombstones
    assert get_request(session, request_id).approved_by_id == second_privacy.staff_id


def test_nothing_is_erased_before_identity_is_verified(session, league, privacy):
    with unit_of_work(session):
        request = open_request(session, privacy, "erasure", league[0].public_id)
    with pytest.raises(IdentityNotVerified), unit_of_work(session):
        request_erasure(session, privacy, request.id)
    assert get_request(session, request.id).status == "open"


def test_an_export_request_cannot_be_erased(session, league, privacy):
    with unit_of_work(session):
        request = open_request(session, privacy, "export", league[0].public_id)
        record_identity_verification(session, privacy, request.id, "Verified by email")
    with pytest.raises(Invalid, match="not an erasure"), unit_of_work(session):
        request_erasure(session, privacy, request.id)


def test_erasure_is_refused_while_the_player_is_in_an_open_dispute(
    session, league, privacy, second_privacy, make_tournament, make_match
):
    alice, bob, _ = league
    played = make_match(make_tournament("Cup"), alice, bob, winner="a")
    request_id = verified_erasure_request(session, privacy, alice)
    with unit_of_work(session):
        report_dispute(session, SYSTEM, played.id, "score was wrong")
    with pytest.raises(ErasureRefused, match="open dispute"), unit_of_work(session):
        request_erasure(session, privacy, request_id)
    assert get_request(session, request_id).status == "verified"


def test_approval_is_refused_when_a_dispute_opened_after_the_request(
    session, league, privacy, second_privacy, make_tournament, make_match
):
    alice, bob, _ = league
    played = make_match(make_tournament("Cup"), alice, bob, winner="a")
    request_id = verified_erasure_request(session, privacy, alice)
    with unit_of_work(session):
        request_erasure(session, privacy, request_id)
    with unit_of_work(session):
        report_dispute(session, SYSTEM, played.id, "score was wrong")
    with pytest.raises(ErasureRefused, match="open dispute"), unit_of_work(session):
        erase_player(session, second_privacy, request_id)
    assert session.get(Player, alice.id).erased_at is None


def test_erasure_is_refused_while_an_export_of_the_player_runs(
    session, league, privacy, tmp_path
):
    alice = league[0]
    with unit_of_work(session):
        export_request = open_request(session, privacy, "export", alice.public_id)
        record_identity_verification(session, privacy, export_request.id, "Verified by email")
        start_export(session, privacy, export_request.id, storage_url=str(tmp_path / "exports"),
                     archive_url=None)
    request_id = verified_erasure_request(session, privacy, alice)
    with pytest.raises(ErasureRefused, match="export"), unit_of_work(session):
        request_erasure(session, privacy, request_id)


def test_a_player_with_an_open_request_keeps_their_events_hot(session, league, privacy):
    alice = league[0]
    assert alice.id not in archive.held_player_ids(session)
    verified_erasure_request(session, privacy, alice)
    assert alice.id in archive.held_player_ids(session)


# Archived events.


def _archive_everything_older_than_a_day(session, url: str):
    with unit_of_work(session):
        run_id = archive.start_archive(session, SYSTEM, now=NOW, after_days=1, url=url).id
    run = execute_run(session, run_id)
    session.rollback()
    assert run.status == "succeeded", run.error
    return run


def _lines(url: str) -> list[dict]:
    with gzip.open(Path(url.removeprefix("file://")), "rt") as f:
        return [json.loads(line) for line in f]


def test_archived_events_are_rewritten_to_the_tombstone_and_restore_as_such(
    session, league, privacy, second_privacy, storage
):
    alice, _bob, _carol = league
    alice_id = alice.id
    others_before = stats_of_others(session, alice_id)
    _archive_everything_older_than_a_day(session, storage.url)
    old_files = {f.id: f.url for f in session.scalars(select(ArchiveFile))}
    assert old_files and any(
        line["player_id"] == alice_id for url in old_files.values() for line in _lines(url)
    )
    session.rollback()
    request_id = verified_erasure_request(session, privacy, alice)

    step = erase(session, privacy, second_privacy, request_id, storage)

    assert step.result.archived_events_moved == 6 and step.result.archive_files_rewritten >= 1
    assert step.result.report["total_hits"] == 0
    assert step.result.report["archive_files_searched"] == len(old_files)
    tombstone_id = session.scalars(select(Player.id).where(Player.is_tombstone)).one()
    for file in session.scalars(select(ArchiveFile)):
        lines = _lines(file.url)
        assert all(line["player_id"] != alice_id for line in lines)
        assert not any("alice" in json.dumps(line["metadata"]).lower() for line in lines)
        assert archive.verify_archive(session, storage, file.id).ok
    # The superseded files are gone once the erasure committed.
    for file_id, url in old_files.items():
        if session.get(ArchiveFile, file_id).url != url:
            assert not Path(url.removeprefix("file://")).exists()
    assert session.scalar(select(func.count()).select_from(ArchivedEventCount).where(
        ArchivedEventCount.player_id == alice_id)) == 0
    assert stats_of_others(session, alice_id) == others_before
    assert find_drift(session).drifts == []
    session.rollback()

    for file_id in old_files:
        with unit_of_work(session):
            archive.restore_archive(session, storage, file_id)
    assert session.scalar(select(func.count()).where(ActivityEvent.player_id == alice_id)) == 0
    assert session.scalar(select(func.count()).where(ActivityEvent.player_id == tombstone_id)) == 6
    assert stats_of_others(session, alice_id) == others_before
    assert find_drift(session).drifts == []
    session.rollback()


def test_a_failed_erasure_changes_nothing(session, league, privacy, second_privacy, storage, monkeypatch):
    alice = league[0]
    _archive_everything_older_than_a_day(session, storage.url)
    request_id = verified_erasure_request(session, privacy, alice)
    with unit_of_work(session):
        request_erasure(session, privacy, request_id)
    urls = set(session.scalars(select(ArchiveFile.url)))
    session.rollback()

    def broken(*args, **kwargs):
        raise RuntimeError("storage went away")

    monkeypatch.setattr("webapp.domain.erasure.verification_report", broken)
    with pytest.raises(RuntimeError), unit_of_work(session):
        erase_player(session, second_privacy, request_id, storage=storage)

    assert session.get(Player, alice.id).username == "alice"
    assert session.scalar(select(func.count()).select_from(Player).where(Player.is_tombstone)) == 0
    assert set(session.scalars(select(ArchiveFile.url))) == urls
    assert all(Path(u.removeprefix("file://")).exists() for u in urls)
    assert get_request(session, request_id).status == "awaiting_approval"


def test_erasing_archived_events_needs_the_archive(session, league, privacy, second_privacy, storage):
    _archive_everything_older_than_a_day(session, storage.url)
    request_id = verified_erasure_request(session, privacy, league[0])
    with unit_of_work(session):
        request_erasure(session, privacy, request_id)
    with pytest.raises(Invalid, match="archive storage"), unit_of_work(session):
        erase_player(session, second_privacy, request_id)


def test_a_note_naming_the_player_is_scrubbed_from_the_timeline(session, league, privacy, second_privacy):
    alice = league[0]
    request_id = verified_erasure_request(session, privacy, alice)
    with unit_of_work(session):
        add_note(session, privacy, request_id, f"Called ALICE back on {alice.email.upper()}")
    erase(session, privacy, second_privacy, request_id)
    notes = [e.text for e in get_request(session, request_id).entries if e.kind == "note"]
    assert notes == ["Called [erased] back on [erased]"]


def test_a_data_quality_finding_moves_with_the_events(session, league, privacy, second_privacy):
    alice, _bob, _ = league
    event = session.scalars(select(ActivityEvent).where(ActivityEvent.player_id == alice.id)).first()
    conflicting = NewEvent(
        player_id=alice.id, event_type=event.event_type, occurred_at=event.occurred_at,
        source_model=event.source_model, source_id=event.source_id,
        metadata={**event.details, "round": "Semi vs alice"},
    )
    with unit_of_work(session):
        record_events(session, [conflicting])
    finding = session.scalars(select(DataQualityFinding)).one()
    request_id = verified_erasure_request(session, privacy, alice)
    step = erase(session, privacy, second_privacy, request_id)
    session.refresh(finding)
    assert finding.player_id != alice.id
    assert "alice" not in json.dumps(finding.attempted).lower()
    assert step.result.report["total_hits"] == 0


# Properties.


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    outcomes=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans()), min_size=1, max_size=12),
    erased_index=st.integers(0, 3),
)
def test_erasing_any_player_keeps_every_other_players_stats_and_leaves_no_drift(
    app, session, make_player, make_staff, outcomes, erased_index
):
    suffix = next(_source_ids)
    players = [make_player(f"p{suffix}x{i}") for i in range(4)]
    facts = []
    for a, b, a_won in outcomes:
        if a == b:
            continue
        winner, loser = (players[a], players[b]) if a_won else (players[b], players[a])
        facts += [match_event(winner, loser), match_event(loser, winner, "match_lost")]
    if facts:
        with unit_of_work(session):
            record_events(session, facts)
    erased = players[erased_index]
    first, second = (Actor(staff_id=make_staff("privacy").id) for _ in range(2))
    before = stats_of_others(session, erased.id)
    request_id = verified_erasure_request(session, first, erased)

    step = erase(session, first, second, request_id)

    assert step.result.report["total_hits"] == 0
    assert stats_of_others(session, erased.id) == before
    assert find_drift(session).drifts == []
    session.rollback()


def test_erasure_rejects_an_unknown_request_and_one_never_asked_for(session, league, privacy):
    with pytest.raises(NotFound), unit_of_work(session):
        erase_player(session, privacy, 999_999)
    request_id = verified_erasure_request(session, privacy, league[0])
    with pytest.raises(Conflict, match="has not been requested"), unit_of_work(session):
        erase_player(session, privacy, request_id)


def test_finished_exports_of_the_player_expire_and_their_files_go(
    session, league, privacy, second_privacy, storage, tmp_path
):
    alice = league[0]
    with unit_of_work(session):
        export_request = open_request(session, privacy, "export", alice.public_id)
        record_identity_verification(session, privacy, export_request.id, "Verified by email")
        export = start_export(session, privacy, export_request.id,
                              storage_url=str(tmp_path / "exports"), archive_url=storage.url)
        export_id, run_id = export.id, export.job_run_id
    assert execute_run(session, run_id).status == "succeeded"
    session.rollback()
    export = session.get(GdprExport, export_id)
    files = [Path(u.removeprefix("file://")) for u in (export.json_url, export.csv_url, export.manifest_url)]
    assert all(f.exists() for f in files)
    session.rollback()
    request_id = verified_erasure_request(session, privacy, alice)

    step = erase(session, privacy, second_privacy, request_id, storage)

    assert step.result.exports_withdrawn == 1
    assert not any(f.exists() for f in files)
    export = session.get(GdprExport, export_id)
    assert export.is_expired() and export.player_id == alice.id


def test_recording_the_players_matches_again_adds_nothing_for_either_row(
    session, league, privacy, second_privacy, make_tournament, make_match
):
    alice, bob, _ = league
    alice_id = alice.id
    played = make_match(make_tournament("Summer Cup"), alice, bob, winner="a")
    with unit_of_work(session):
        record_match_result(session, played.id)
    request_id = verified_erasure_request(session, privacy, alice)
    erase(session, privacy, second_privacy, request_id)
    tombstone_id = session.scalars(select(Player.id).where(Player.is_tombstone)).one()
    match = session.get(Match, played.id)
    assert match.side_a_player_id == tombstone_id
    events_before = session.scalar(select(func.count()).select_from(ActivityEvent))
    session.rollback()

    # A backfill run over the same match: every fact is already there.
    with unit_of_work(session):
        outcome = record_match_result(session, played.id, origin="backfill")
    assert {o.status.value for o in outcome.outcomes} == {"duplicate"}
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == events_before
    assert session.scalar(select(func.count()).where(ActivityEvent.player_id == alice_id)) == 0
    assert session.scalar(select(func.count()).select_from(DataQualityFinding)) == 0


def test_two_approvers_at_once_erase_once(app, session, league, privacy, make_staff):
    from webapp.extensions import db

    request_id = verified_erasure_request(session, privacy, league[0])
    with unit_of_work(session):
        request_erasure(session, privacy, request_id)
    approvers = [Actor(staff_id=make_staff("privacy").id) for _ in range(2)]
    session.rollback()

    def approve(own, actor: Actor) -> tuple[str, str]:
        with unit_of_work(own):
            return ("changed" if erase_player(own, actor, request_id).changed else "no-op", "")

    results = race(db.engine, approvers, approve, timeout=120, app=app)
    assert [status for status, _ in results] == ["changed", "no-op"], results
    assert session.scalar(select(func.count()).select_from(Player).where(Player.is_tombstone)) == 1
    assert session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "gdpr.erasure.approve")) == 1
    assert find_drift(session).drifts == []
    session.rollback()


def test_a_missing_archive_file_stops_the_erasure_and_leaves_nothing_behind(
    session, league, privacy, second_privacy, storage
):
    alice = league[0]
    _archive_everything_older_than_a_day(session, storage.url)
    request_id = verified_erasure_request(session, privacy, alice)
    with unit_of_work(session):
        request_erasure(session, privacy, request_id)
    urls = sorted(session.scalars(select(ArchiveFile.url)))
    session.rollback()
    Path(urls[-1].removeprefix("file://")).unlink()
    before = sorted(storage.list_files())

    with pytest.raises(archive.ArchiveVerificationFailed, match="missing"), unit_of_work(session):
        erase_player(session, second_privacy, request_id, storage=storage)

    assert sorted(storage.list_files()) == before
    assert session.get(Player, alice.id).erased_at is None
    assert get_request(session, request_id).status == "awaiting_approval"
