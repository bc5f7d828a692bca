"""Job runs: the stored lifecycle of every long job, whoever runs it.

queued -> running -> succeeded | failed | cancelled; a failed or cancelled run
can be resumed (queued again, keeping its checkpoint). A running run whose
worker stopped sending heartbeats is failed by ``fail_stale_runs`` so that it
can be resumed. Each time a worker starts the run is an attempt; its rate and
time left are measured over the current attempt alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session

from webapp.domain.audit import Actor, record_audit
from webapp.domain.errors import Conflict, NotFound
from webapp.models.base import utcnow
from webapp.models.jobs import ACTIVE_STATUSES, FINISHED_STATUSES, JobRun

JOB_KINDS = ("backfill", "backfill_rollback", "reconcile", "archive", "archive_restore", "import_atp",
             "gdpr_export")


def queue_run(session: Session, actor: Actor, kind: str, params: dict[str, Any] | None = None,
              total: int | None = None) -> JobRun:
    """Store a new run, queued; the caller enqueues it after the commit."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    now = utcnow()
    run = JobRun(kind=kind, params=params or {}, requested_by_id=actor.staff_id,
                 requested_via=actor.via, status="queued", queued_at=now, progress_total=total,
                 created_at=now)
    session.add(run)
    session.flush()
    record_audit(session, actor, f"job.{kind}.queue", target_type="job", target_id=run.id, params=run.params)
    return run


class NotQueued(Conflict):
    """The run could not be claimed: it is no longer queued (taken by another worker, cancelled, done)."""


class RunTakenOver(Conflict):
    """The worker no longer holds its run: the sweep failed it as stale, and it may run elsewhere since."""


def hold(session: Session, run_id: int, worker: str) -> None:
    """Check ``worker`` still holds the run, and keep it: a heartbeat that locks the row until the commit.

    A worker that went silent past the stale limit (one long transaction, a
    stalled machine) finds its run failed by the sweep, perhaps resumed by
    staff on another worker: it must not write another batch, nor the run's end.

    :raise RunTakenOver: if the run is no longer running on ``worker``.
    """
    held = session.execute(
        update(JobRun)
        .where(JobRun.id == run_id, JobRun.status == "running", JobRun.worker == worker)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not held:
        raise RunTakenOver(
            f"job run {run_id} is no longer held by worker {worker} (failed as stale, or resumed "
            "elsewhere); this attempt stops without writing more"
        )


def first_active_run(
    session: Session, kinds: Iterable[str], *, except_run: int | None = None
) -> JobRun | None:
    """The oldest queued or running run of one of ``kinds``, other than ``except_run``; None if none.

    What the rules that keep kinds of runs apart (one backfill at a time, no
    rollback beside archival, ...) look for before a run starts or resumes.
    """
    return session.scalars(
        select(JobRun)
        .where(JobRun.kind.in_(tuple(kinds)), JobRun.status.in_(ACTIVE_STATUSES))
        .where(JobRun.id != (except_run or 0))
        .order_by(JobRun.id)
    ).first()


def _reloaded(session: Session, run_id: int) -> JobRun:
    """The run as stored now, after a statement that changed it behind the session's back."""
    run = session.get(JobRun, run_id, populate_existing=True)
    if run is None:
        raise NotFound(f"job run {run_id} does not exist")
    return run


def get_run(session: Session, run_id: int) -> JobRun:
    run = session.get(JobRun, run_id)
    if run is None:
        raise NotFound(f"job run {run_id} does not exist")
    return run


def start_run(session: Session, run_id: int, worker: str) -> JobRun:
    """Mark a queued run as running on ``worker``.

    One conditional update claims the run: of two workers handed the same run
    (see ``webapp.jobs.stale.requeue_lost_runs``), on PostgreSQL the second
    waits for the first's row lock, then finds the run no longer queued.

    :raise NotQueued: if the run is not queued (already running elsewhere, finished or cancelled).
    """
    now = utcnow()
    claimed = session.execute(
        update(JobRun)
        .where(JobRun.id == run_id, JobRun.status == "queued")
        .values(
            status="running",
            started_at=func.coalesce(JobRun.started_at, literal(now, JobRun.started_at.type)),
            attempt_started_at=now,
            attempt_done_from=JobRun.progress_done,
            heartbeat_at=now,
            worker=worker,
            error=None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    run = _reloaded(session, run_id)
    if not claimed:
        raise NotQueued(f"job run {run_id} is {run.status}, not queued")
    return run


def record_progress(session: Session, run_id: int, *, done: int, total: int | None = None,
                    checkpoint: dict[str, Any] | None = None, worker: str | None = None) -> JobRun:
    """Store progress and the checkpoint to resume from; counts as a heartbeat.

    :raise RunTakenOver: given the ``worker`` storing it, if it no longer holds the run (``hold``).
    """
    if worker is not None:
        hold(session, run_id, worker)
    run = get_run(session, run_id)
    if run.attempt_done_from is not None and done < run.attempt_done_from:
        # The procedure counts again from zero (an ATP import or an export starts over):
        # all it has done, it has done in this attempt.
        run.attempt_done_from = 0
    run.progress_done = done
    if total is not None:
        run.progress_total = total
    if checkpoint is not None:
        run.checkpoint = checkpoint
    run.heartbeat_at = utcnow()
    session.flush()
    return run


def finish_run(session: Session, run_id: int, result: dict[str, Any] | None) -> JobRun:
    run = get_run(session, run_id)
    run.status = "succeeded"
    run.result = result
    run.finished_at = utcnow()
    if run.progress_total is not None:
        run.progress_done = max(run.progress_done, run.progress_total)
    session.flush()
    return run


def fail_run(session: Session, run_id: int, error: str, result: dict[str, Any] | None = None) -> JobRun:
    run = get_run(session, run_id)
    run.status = "failed"
    run.error = error
    if result is not None:
        run.result = result
    run.finished_at = utcnow()
    session.flush()
    return run


def cancel_run(session: Session, run_id: int) -> JobRun:
    """Mark a run cancelled (a worker calls this at a batch boundary)."""
    run = get_run(session, run_id)
    run.status = "cancelled"
    run.finished_at = utcnow()
    session.flush()
    return run


def request_cancel(session: Session, actor: Actor, run_id: int) -> JobRun:
    """Ask a run to stop at its next batch boundary; a queued run is cancelled at once.

    A queued run is cancelled by one conditional update, as ``start_run`` claims
    it: of a cancel and a worker's claim at the same moment, one wins, and a
    run a worker took meanwhile is asked to stop like any running run.
    """
    cancelled = session.execute(
        update(JobRun)
        .where(JobRun.id == run_id, JobRun.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    run = _reloaded(session, run_id)
    if not cancelled:
        if run.is_finished:
            raise Conflict(f"job run {run_id} has already {run.status}")
        run.cancel_requested = True
    record_audit(session, actor, f"job.{run.kind}.cancel", target_type="job", target_id=run.id)
    session.flush()
    return run


def require_resumable(run: JobRun) -> None:
    """Refuse to resume a run unless it failed or was cancelled.

    :raise Conflict: for a queued, running or succeeded run.
    """
    if run.status not in ("failed", "cancelled"):
        raise Conflict(f"job run {run.id} is {run.status}; only failed or cancelled runs can be resumed")


def resume_run(session: Session, actor: Actor, run_id: int) -> JobRun:
    """Queue a failed or cancelled run again; it continues from its checkpoint.

    This checks nothing about other runs; ``operations.resume_job`` applies the
    rules that keep some kinds from running beside others.
    """
    run = get_run(session, run_id)
    require_resumable(run)
    run.status = "queued"
    run.queued_at = utcnow()
    run.cancel_requested = False
    run.finished_at = None
    run.worker = None
    record_audit(session, actor, f"job.{run.kind}.resume", target_type="job", target_id=run.id,
                 checkpoint=run.checkpoint)
    session.flush()
    return run


def queued_before(session: Session, cutoff: datetime) -> list[int]:
    """Return the ids of the runs still queued that were last queued before ``cutoff``, oldest first."""
    # Runs queued before queued_at was recorded have only their creation time.
    queued_at = func.coalesce(JobRun.queued_at, JobRun.created_at)
    return list(session.scalars(
        select(JobRun.id).where(JobRun.status == "queued", queued_at < cutoff).order_by(JobRun.id)
    ))


def fail_stale_runs(session: Session, stale_after: timedelta, now: datetime | None = None) -> list[JobRun]:
    """Fail running runs whose worker has not sent a heartbeat for ``stale_after``.

    On PostgreSQL the runs are locked as they are read, skipping any locked
    already: by another sweep at the same moment (each run is failed, and
    alerted, once) or by its worker writing a batch (then it is alive).
    """
    now = now or utcnow()
    stale = session.scalars(
        select(JobRun)
        .where(JobRun.status == "running", JobRun.heartbeat_at < now - stale_after)
        .with_for_update(skip_locked=True)
    ).all()
    for run in stale:
        run.status = "failed"
        run.finished_at = now
        run.error = (
            f"worker {run.worker or '?'} stopped: no heartbeat since "
            f"{run.heartbeat_at.isoformat() if run.heartbeat_at else 'start'}; resume to continue "
            "from the last checkpoint"
        )
    session.flush()
    return list(stale)


@dataclass(frozen=True)
class RunProgress:
    """Progress as people read it: share done, rate and time left."""

    done: int
    total: int | None
    percent: float | None
    rate_per_second: float | None
    seconds_left: float | None


def progress_of(run: JobRun, now: datetime | None = None) -> RunProgress:
    """Compute share done, rate and estimated time left from a run's stored progress.

    The rate is the work done in the current (or, once ended, the last)
    attempt over that attempt's time: a run resumed a day after it stopped
    was not working meanwhile. A run queued again has no rate until it starts.
    """
    now = now or utcnow()
    percent = None
    if run.progress_total:
        percent = min(100.0, 100.0 * run.progress_done / run.progress_total)
    elif run.status == "succeeded":
        percent = 100.0
    rate = None
    # Runs started before attempts were recorded have only their first start.
    began = run.attempt_started_at or run.started_at
    done = run.progress_done - (run.attempt_done_from or 0)
    if began and done > 0 and run.status != "queued":
        elapsed = ((run.finished_at or now) - began).total_seconds()
        rate = done / elapsed if elapsed > 0 else None
    seconds_left = None
    if rate and run.progress_total and run.status == "running":
        seconds_left = max(0.0, (run.progress_total - run.progress_done) / rate)
    return RunProgress(run.progress_done, run.progress_total, percent, rate, seconds_left)


def recent_runs(session: Session, kind: str | None = None, limit: int = 50) -> list[JobRun]:
    statement = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
    if kind:
        statement = statement.where(JobRun.kind == kind)
    return list(session.scalars(statement))


__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "JOB_KINDS",
    "RunProgress",
    "cancel_run",
    "fail_run",
    "fail_stale_runs",
    "finish_run",
    "get_run",
    "progress_of",
    "queue_run",
    "recent_runs",
    "record_progress",
    "request_cancel",
    "require_resumable",
    "resume_run",
    "start_run",
]
