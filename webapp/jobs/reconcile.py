"""A whole reconciliation run: record it, look for drift, repair in batches, store the outcome."""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from sqlalchemy.orm import Session

from webapp.domain import reconciliation
from webapp.domain.reconciliation import DriftReport
from webapp.jobs.alerting import check_persistent_drift, current_settings, raise_alert_now
from webapp.jobs.runner import JobCancelled, JobContext, failed_subject
from webapp.models.jobs import JobRun
from webapp.transaction import unit_of_work

# The checkpoint key under which a reconcile job run names its reconciliation run.
RECONCILIATION_RUN = "reconciliation_run_id"


@dataclass(frozen=True)
class ReconciliationOutcome:
    run_id: int
    report: DriftReport
    players_fixed: int


class ReconciliationFailed(Exception):
    """The run failed; it is stored as failed with this error."""

    def __init__(self, run_id: int, error: str) -> None:
        super().__init__(error)
        self.run_id = run_id


def run_reconciliation(
    session: Session, *, fix: bool = False, player_id: int | None = None, batch_size: int = 500,
    context: JobContext | None = None,
) -> ReconciliationOutcome:
    """Run one reconciliation; with ``fix``, repair the drift in transactional batches.

    Each batch repairs ``batch_size`` players, all of a player's stats in one transaction.
    Run as a job (``context``), it stops when staff cancel it: before the drift
    search, before storing what it found, and before each repair batch, so a
    cancelled fix leaves every player either wholly repaired or as it was.

    :raise NotFound: for an unknown ``player_id``; then no run is stored.
    :raise ReconciliationFailed: after the run was stored as failed.
    :raise JobCancelled: after the run was stored as cancelled.
    """
    if player_id is not None:
        # Bad input is refused before anything is written, not stored as a failed run.
        reconciliation.require_player(session, player_id)
    with unit_of_work(session):
        run_id = reconciliation.start_run(session, fix=fix, player_id=player_id).id
        if context is not None:
            # Committed with the run itself: a worker killed from here on leaves a job
            # run that names the reconciliation run it must close (webapp.jobs.stale).
            context.progress(0, checkpoint={RECONCILIATION_RUN: run_id})
    stop_if_cancelled = context.raise_if_cancelled if context is not None else _never

    # Batches repaired before a failure stay committed, so a failed run still counts them.
    fixed_players: set[int] = set()
    try:
        stop_if_cancelled()
        report = reconciliation.find_drift(session, player_id)
        session.rollback()  # end the read snapshot
        stop_if_cancelled()
        # Stored before repairing, so that what was found survives a failed repair.
        with unit_of_work(session):
            reconciliation.record_findings(session, run_id, report)
        for batch in report.correction_batches(batch_size) if fix else ():
            stop_if_cancelled()
            with unit_of_work(session):
                reconciliation.repair_drift(session, batch)
                repaired = fixed_players | {player for player, _scope in batch}
                reconciliation.record_repaired(session, run_id, len(repaired))
                if context is not None:
                    # Also the heartbeat that keeps a long fix from looking dead.
                    context.progress(len(repaired), total=len(report.drifted_players))
            fixed_players = repaired
        with unit_of_work(session):
            reconciliation.finish_run(session, run_id, len(fixed_players))
    except JobCancelled:
        session.rollback()
        with unit_of_work(session):
            reconciliation.cancel_run(
                session,
                run_id,
                f"cancelled by staff (job run {context.run_id}); "
                f"players repaired before it stopped: {len(fixed_players)}",
                players_fixed=len(fixed_players),
            )
        raise
    except Exception as exc:
        session.rollback()
        error = "".join(traceback.format_exception_only(exc)).strip()
        with unit_of_work(session):
            reconciliation.fail_run(
                session,
                run_id,
                f"{error}\n\n{traceback.format_exc()}",
                players_fixed=len(fixed_players),
            )
        raise_alert_now(
            session, "job_failed", failed_subject("reconciliation", run_id), {"error": error}
        )
        raise ReconciliationFailed(run_id, error) from exc
    if player_id is None:
        # The share of drifted players means something only over all of them: a
        # one-player check that finds drift is 100% and says nothing of the rest.
        _alert_on_drift(session, run_id, report)
        if report.drifted_players:
            check_persistent_drift(session)
    return ReconciliationOutcome(run_id, report, len(fixed_players))


def _never() -> None:
    """Outside a job run nobody can cancel the reconciliation."""


def reconciliation_run_of(job_run: JobRun) -> int | None:
    """Return the id of the reconciliation run a reconcile job run started, if it got that far."""
    return (job_run.checkpoint or {}).get(RECONCILIATION_RUN)


def _alert_on_drift(session: Session, run_id: int, report: DriftReport) -> None:
    threshold = current_settings().drift_share
    if report.players_checked and report.drifted_share > threshold:
        raise_alert_now(
            session,
            "drift",
            f"Stats drift above {threshold:.0%} of players",
            {
                "reconciliation_run": run_id,
                "players_drifted": len(report.drifted_players),
                "players_checked": report.players_checked,
                "share": f"{report.drifted_share:.2%}",
            },
        )


def reconcile_procedure(session: Session, context: JobContext) -> dict:
    """The job-queue form of a reconciliation run: from the dashboard or the nightly schedule."""
    params = context.params
    try:
        outcome = run_reconciliation(
            session,
            fix=bool(params.get("fix")),
            player_id=params.get("player_id"),
            batch_size=int(params.get("batch_size", 500)),
            context=context,
        )
    except ReconciliationFailed as exc:
        raise RuntimeError(f"reconciliation run {exc.run_id} failed: {exc}") from exc
    report = outcome.report
    with unit_of_work(session):
        context.progress(report.players_checked, total=report.players_checked)
    return {
        "reconciliation_run_id": outcome.run_id,
        "players_checked": report.players_checked,
        "players_drifted": len(report.drifted_players),
        "drifted_share": report.drifted_share,
        "players_fixed": outcome.players_fixed,
    }
