"""Archival: old events move to verified cold-storage files, stats stay exact, restore brings them back."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from webapp.domain import archive, operations
from webapp.domain.archive import ArchiveStorage, ArchiveVerificationFailed
from webapp.domain.audit import SYSTEM
from webapp.domain.backfill import Safeguards
from webapp.domain.errors import Conflict
from webapp.domain.projection import expected_stats
from webapp.domain.reconciliation import find_drift
from webapp.domain.recording import NewEvent, RecordStatus, record_event, record_events
from webapp.jobs.runner import execute_run
from webapp.models import (
    ActivityEvent,
    ArchivedEventCount,
    ArchiveFile,
    DataQualityFinding,
    JobRun,
    PlayerStats,
)
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
AFTER_DAYS = 365
CUTOFF = NOW - timedelta(days=AFTER_DAYS)

_source_ids = itertools.count(1)


def match(player, event_type="match_won", *, at, **fields) -> NewEvent:
    return NewEvent(
        player_id=player.id,
        event_type=event_type,
        occurred_at=at,
        source_model="match",
        source_id=next(_source_ids),
        metadata={"round": "R1", "side": "a", "opponent_player_ids": [999]},
        **fields,
    )


@dataclass
class History:
    """Two years of events of three players; the older year is past the cutoff."""

    alice: object
    bob: object
    carol: object
    events: dict[int, dict]  # every event's row as stored, by id

    def ids(self, *, old: bool | None = None, player=None) -> set[int]:
        return {
            i for i, row in self.events.items()
            if (old is None or (row["occurred_at"] < CUTOFF) == old)
            and (player is None or row["player_id"] == player.id)
        }


@pytest.fixture
def history(session, make_player, make_team, make_tournament) -> History:
    alice, bob, carol = make_player("alice"), make_player("bob"), make_player("carol")
    team = make_team("Pair", [alice, bob], joined_at=NOW - timedelta(days=1000))
    private = make_tournament("Invitational", is_private=True)
    facts = []
    # One step a month, 10 to 700 days back: months 12..23 are older than the cutoff.
    for k in range(24):
        at = NOW - timedelta(days=10 + 30 * k)
        facts += [match(alice, at=at), match(bob, "match_lost", at=at),
                  match(carol, "match_forfeit_won", at=at)]
        if k % 3 == 0:
            facts += [match(p, at=at + timedelta(hours=1), team_id=team.id,
                            tournament_id=private.id) for p in (alice, bob)]
        if k % 6 == 0:
            facts.append(NewEvent(
                player_id=alice.id, event_type="tournament_won", occurred_at=at + timedelta(hours=2),
                source_model="tournament_result", source_id=next(_source_ids), team_id=team.id,
                metadata={"is_team_win": True},
            ))
    with unit_of_work(session):
        record_events(session, facts)
    return History(alice, bob, carol, hot_rows(session))


@pytest.fixture
def archive_url(app, tmp_path, monkeypatch) -> str:
    url = str(tmp_path / "cold")
    monkeypatch.setitem(app.config, "ARCHIVE_URL", url)
    return url


@pytest.fixture
def storage(archive_url) -> ArchiveStorage:
    return ArchiveStorage(archive_url)


# Helpers.


def hot_rows(session) -> dict[int, dict]:
    rows = {r["id"]: dict(r) for r in session.execute(select(ActivityEvent.__table__)).mappings()}
    session.rollback()
    return rows


def stored_stats(session) -> dict:
    found = {(s.player_id, s.scope): s.as_dict() for s in session.scalars(select(PlayerStats))}
    session.rollback()
    return {key: values for key, values in found.items() if any(values.values())}


def assert_stats_exact(session, before: dict) -> None:
    """Stored stats did not move, equal what events add up to, and no player drifts."""
    assert stored_stats(session) == before
    assert expected_stats(session) == before
    assert find_drift(session).drifts == []
    session.rollback()


def files(session) -> list[ArchiveFile]:
    found = list(session.scalars(select(ArchiveFile).order_by(ArchiveFile.month)))
    for f in found:
        session.expunge(f)  # keep what was read: the rows are compared after later changes
    session.rollback()
    return found


def archived_total(session) -> int:
    n = session.scalar(select(func.coalesce(func.sum(ArchivedEventCount.n), 0)))
    session.rollback()
    return n


def path_of(url: str) -> Path:
    return Path(url.removeprefix("file://"))


def lines_of(url: str) -> list[dict]:
    with gzip.open(path_of(url), "rt") as f:
        return [json.loads(line) for line in f]


def archive_now(session, url: str, *, holds=()) -> JobRun:
    with unit_of_work(session):
        run_id = archive.start_archive(
            session, SYSTEM, now=NOW, after_days=AFTER_DAYS, url=url, hold_player_ids=holds
        ).id
    run = execute_run(session, run_id)
    session.rollback()
    return run


def restore(session, url: str, file_id: int) -> JobRun:
    with unit_of_work(session):
        run_id = archive.start_restore(session, SYSTEM, file_id, url=url).id
    run = execute_run(session, run_id)
    session.rollback()
    return run


# Archiving.


def test_archiving_the_older_half_moves_it_to_verified_month_files_and_keeps_stats_exact(
    session, history, archive_url
):
    before = stored_stats(session)
    old = history.ids(old=True)

    run = archive_now(session, archive_url)

    assert run.status == "succeeded", run.error
    assert run.result["events_archived"] == len(old)
    assert set(hot_rows(session)) == history.ids(old=False)
    archived = files(session)
    months = {f"{history.events[i]['occurred_at']:%Y-%m}" for i in old}
    assert [f.month for f in archived] == sorted(months)
    seen: list[dict] = []
    for f in archived:
        assert f.url == f"file://{archive_url}/events/{f.month}/events-{f.month}-run{run.id}.jsonl.gz"
        data = path_of(f.url).read_bytes()
        assert (f.bytes, f.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        lines = lines_of(f.url)
        assert f.event_count == len(lines) and f.verified_at is not None and f.restored_at is None
        assert {f"{datetime.fromisoformat(r['occurred_at']):%Y-%m}" for r in lines} == {f.month}
        seen += lines
    assert sorted(r["id"] for r in seen) == sorted(old)
    team_win = next(r for r in seen if r["event_type"] == "tournament_won")
    original = history.events[team_win["id"]]
    assert team_win == {
        **{k: v for k, v in original.items() if k not in ("occurred_at", "recorded_at")},
        "occurred_at": original["occurred_at"].isoformat(),
        "recorded_at": original["recorded_at"].isoformat(),
    }
    assert archived_total(session) == len(old)
    assert_stats_exact(session, before)
    for player in (history.alice, history.bob, history.carol):
        assert find_drift(session, player.id).drifts == []
        session.rollback()


def test_a_dry_run_shows_what_would_move_and_writes_nothing(session, history, storage, archive_url):
    old = history.ids(old=True)

    plan = archive.plan_archive(session, NOW, AFTER_DAYS)
    session.rollback()

    assert plan.cutoff == CUTOFF
    assert plan.events == len(old)
    assert {m.month: m.events for m in plan.months} == {
        month: sum(1 for i in old if f"{history.events[i]['occurred_at']:%Y-%m}" == month)
        for month in {f"{history.events[i]['occurred_at']:%Y-%m}" for i in old}
    }
    assert plan.players_affected == 3
    assert plan.held_players == {}
    assert plan.excluded == {"held": 0, "reversal": 0, "data_quality_finding": 0}
    assert set(hot_rows(session)) == set(history.events)
    assert files(session) == [] and archived_total(session) == 0
    assert session.scalar(select(func.count()).select_from(JobRun)) == 0
    assert not Path(archive_url).exists()


def test_held_players_and_linked_events_stay_hot_and_are_said_to(session, history, archive_url):
    old_of = {p.id: sorted(history.ids(old=True, player=p)) for p in (history.alice, history.bob)}
    reversed_id, findings_id = old_of[history.alice.id][0], old_of[history.bob.id][0]
    with unit_of_work(session):
        reversal = record_event(session, NewEvent(
            player_id=history.alice.id, event_type="match_won_reversed", occurred_at=CUTOFF - timedelta(days=1),
            source_model="dispute_resolution", source_id=1, origin="dispute", reverses_event_id=reversed_id,
        ))
        original = history.events[findings_id]
        repeat = NewEvent(
            player_id=original["player_id"], event_type=original["event_type"],
            occurred_at=original["occurred_at"], source_model="match", source_id=original["source_id"],
            metadata={**original["metadata"], "round": "final"},
        )
        assert record_event(session, repeat).status is RecordStatus.CONFLICT
    assert session.scalar(select(func.count()).select_from(DataQualityFinding)) == 1
    before = stored_stats(session)
    carol_old = history.ids(old=True, player=history.carol)

    plan = archive.plan_archive(session, NOW, AFTER_DAYS, {history.carol.id})
    session.rollback()
    assert plan.held_players == {history.carol.id: len(carol_old)}
    assert plan.excluded == {"held": len(carol_old), "reversal": 2, "data_quality_finding": 1}
    assert plan.players_affected == 2

    run = archive_now(session, archive_url, holds=[history.carol.id])

    assert run.status == "succeeded", run.error
    assert run.result["held_players_skipped"] == {str(history.carol.id): len(carol_old)}
    assert run.result["excluded"] == plan.excluded
    kept = carol_old | {reversed_id, reversal.event_id, findings_id}
    assert set(hot_rows(session)) == history.ids(old=False) | kept
    assert run.result["events_archived"] == len(history.ids(old=True)) - len(carol_old) - 2
    assert_stats_exact(session, before)


def test_a_file_that_fails_verification_leaves_every_event_hot(session, history, storage, archive_url):
    with unit_of_work(session):
        run_id = archive.start_archive(session, SYSTEM, now=NOW, after_days=AFTER_DAYS, url=archive_url).id
    month = archive.plan_archive(session, NOW, AFTER_DAYS).months[0]
    written = archive.write_month(session, storage, month.month, run_id=run_id, cutoff=CUTOFF)
    session.rollback()
    assert written.event_count == month.events
    # Storage hands back a well-formed file that lost its last event.
    lines = path_of(written.url).read_bytes()
    kept = gzip.decompress(lines).splitlines(keepends=True)[:-1]
    path_of(written.url).write_bytes(gzip.compress(b"".join(kept), mtime=0))

    with pytest.raises(ArchiveVerificationFailed, match="lines instead of .*no event was deleted"):
        archive.verify_written(storage, written)

    # A truncated file fails too, as unreadable.
    path_of(written.url).write_bytes(lines[: len(lines) // 2])
    with pytest.raises(ArchiveVerificationFailed, match="cannot be read"):
        archive.verify_written(storage, written)
    assert set(hot_rows(session)) == set(history.events)
    assert files(session) == [] and archived_total(session) == 0


def test_a_run_that_cannot_write_its_files_fails_with_its_error_and_deletes_nothing(
    session, history, tmp_path
):
    before = stored_stats(session)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be")

    run = archive_now(session, str(blocker / "archive"))

    assert run.status == "failed"
    assert "not-a-folder" in run.error
    assert set(hot_rows(session)) == set(history.events)
    assert files(session) == [] and archived_total(session) == 0
    assert_stats_exact(session, before)


def test_a_failed_run_is_not_resumed_while_another_archive_run_is_queued(
    session, history, tmp_path, archive_url
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be")
    failed = archive_now(session, str(blocker / "archive"))
    assert failed.status == "failed"
    with unit_of_work(session):
        queued = archive.start_archive(
            session, SYSTEM, now=NOW, after_days=AFTER_DAYS, url=archive_url
        ).id

    with pytest.raises(Conflict, match=f"archive run {queued} is queued"):
        with unit_of_work(session):
            operations.resume_job(session, SYSTEM, failed.id, safeguards=Safeguards(now=NOW))

    session.rollback()
    assert session.get(JobRun, failed.id).status == "failed"
    assert execute_run(session, queued).status == "succeeded"
    blocker.unlink()
    with unit_of_work(session):
        operations.resume_job(session, SYSTEM, failed.id, safeguards=Safeguards(now=NOW))
    assert execute_run(session, failed.id).status == "succeeded"


# Restoring and reading back.


def test_restoring_twice_puts_every_event_back_exactly_once(session, history, archive_url, storage):
    before = stored_stats(session)
    archive_now(session, archive_url)
    archived = files(session)

    first = restore(session, archive_url, archived[0].id)
    first_restored_at = files(session)[0].restored_at
    again = restore(session, archive_url, archived[0].id)
    for f in archived[1:]:
        with unit_of_work(session):
            assert archive.restore_archive(session, storage, f.id).inserted == f.event_count
    with unit_of_work(session):
        repeat = archive.restore_archive(session, storage, archived[-1].id)

    assert first.status == again.status == "succeeded"
    assert first.result["inserted"] == archived[0].event_count
    assert again.result == {**first.result, "inserted": 0, "already_present": archived[0].event_count}
    assert repeat.inserted == 0
    assert hot_rows(session) == history.events
    assert archived_total(session) == 0
    restored = files(session)
    assert all(f.restored_at is not None for f in restored)
    assert restored[0].restored_at == first_restored_at  # a repeat changes nothing
    assert_stats_exact(session, before)
    # New events still get fresh ids after explicit ones went back in.
    with unit_of_work(session):
        assert record_event(session, match(history.alice, at=NOW)).status is RecordStatus.RECORDED


def fact_of(row: dict) -> NewEvent:
    """The fact a stored event row was recorded from, to record it again."""
    return NewEvent(
        player_id=row["player_id"], event_type=row["event_type"], occurred_at=row["occurred_at"],
        source_model=row["source_model"], source_id=row["source_id"], origin=row["origin"],
        origin_id=row["origin_id"], team_id=row["team_id"], tournament_id=row["tournament_id"],
        metadata=row["metadata"], reverses_event_id=row["reverses_event_id"],
    )


def test_recording_an_archived_fact_again_is_a_duplicate_of_the_archived_event(
    session, history, archive_url, storage
):
    before = stored_stats(session)
    archive_now(session, archive_url)
    archived_ids = history.ids(old=True) - set(hot_rows(session))
    assert archived_ids, "the history has archived events"
    again = [fact_of(history.events[i]) for i in sorted(archived_ids)]

    with unit_of_work(session):
        outcome = record_events(session, again)

    assert {o.status for o in outcome.outcomes} == {RecordStatus.DUPLICATE}
    assert [o.event_id for o in outcome.outcomes] == sorted(archived_ids)
    assert set(hot_rows(session)) == history.ids(old=False) | (history.ids(old=True) - archived_ids)
    assert_stats_exact(session, before)

    for f in files(session):
        with unit_of_work(session):
            archive.restore_archive(session, storage, f.id)
    with unit_of_work(session):
        outcome = record_events(session, again)
    assert {o.status for o in outcome.outcomes} == {RecordStatus.DUPLICATE}
    assert hot_rows(session) == history.events
    assert_stats_exact(session, before)


def test_a_players_archived_events_are_read_back_for_their_timeline_marked_from_cold_storage(
    session, history, archive_url, storage
):
    archive_now(session, archive_url, holds=[history.carol.id])
    alice_old = history.ids(old=True, player=history.alice)

    events = archive.archived_events_for_player(session, history.alice.id, storage=storage)

    assert [e.id for e in events] == sorted(
        alice_old, key=lambda i: (history.events[i]["occurred_at"], i), reverse=True
    )
    assert all(e.from_cold_storage for e in events)
    first = events[0]
    original = history.events[first.id]
    assert (first.event_type, first.occurred_at, first.team_id, first.is_private, first.details) == (
        original["event_type"], original["occurred_at"], original["team_id"],
        original["is_private"], original["metadata"],
    )
    window = archive.archived_events_for_player(
        session, history.alice.id, storage=storage,
        occurred_from=CUTOFF - timedelta(days=100), occurred_to=CUTOFF - timedelta(days=40),
    )
    assert window and {e.id for e in window} == {
        i for i in alice_old
        if CUTOFF - timedelta(days=100) <= history.events[i]["occurred_at"] < CUTOFF - timedelta(days=40)
    }
    # Carol was held: she has no archived events, so no file is even opened.
    for f in files(session):
        path_of(f.url).unlink()
    assert archive.archived_events_for_player(session, history.carol.id, storage=storage) == []
    with pytest.raises(ArchiveVerificationFailed, match="missing"):
        archive.archived_events_for_player(session, history.alice.id, storage=storage)
    session.rollback()


# The command line.


def test_flask_archive_dry_runs_archives_lists_verifies_and_restores(runner, session, make_player,
                                                                     archive_url):
    held, moving = make_player("held"), make_player("moving")
    long_ago, lately = utcnow() - timedelta(days=800), utcnow() - timedelta(days=10)
    with unit_of_work(session):
        record_events(session, [match(p, at=at) for p in (held, moving) for at in (long_ago, lately)])
    before = stored_stats(session)

    dry = runner.invoke(args=["archive", "run", "--dry-run", "--hold", str(held.id)])
    assert dry.exit_code == 0, dry.output
    assert re.search(r"events to move +1\n", dry.output)
    assert f"player {held.id} is on hold: 1 events skipped" in dry.output
    assert "dry run: nothing was written" in dry.output
    assert files(session) == []

    done = runner.invoke(args=["archive", "run", "--yes", "--hold", str(held.id)])
    assert done.exit_code == 0, done.output
    assert "succeeded" in done.output and "events_archived: 1" in done.output
    assert f"held_players_skipped: {{'{held.id}': 1}}" in done.output
    (archived,) = files(session)

    listed = runner.invoke(args=["archive", "list"])
    assert listed.exit_code == 0 and f"{archived.month}" in listed.output
    assert archived.sha256[:12] in listed.output

    assert runner.invoke(args=["archive", "verify"]).exit_code == 0
    restored = runner.invoke(args=["archive", "restore", str(archived.id)])
    assert restored.exit_code == 0, restored.output
    assert "inserted: 1" in restored.output
    assert len(hot_rows(session)) == 4 and archived_total(session) == 0
    assert_stats_exact(session, before)

    path_of(archived.url).write_bytes(b"not gzip at all")
    broken = runner.invoke(args=["archive", "verify", str(archived.id)])
    assert broken.exit_code == 1
    assert f"file {archived.id}: FAILED" in broken.output and "1 failed" in broken.output
    path_of(archived.url).with_name("orphan.jsonl.gz").write_bytes(b"")
    assert "not in the manifest" in runner.invoke(args=["archive", "list"]).output
