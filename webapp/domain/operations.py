"""What the Operations pages read, how they queue a reconciliation and resume a run.

Job runs with who started them, reconciliation history, drift by player: reads
only, and the caller ends the transaction. ``queue_reconciliation`` and
``resume_job`` flush and leave the commit to the caller, like every domain write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from webapp.domain import archive, atp_import, backfill, gdpr_export
from webapp.domain.audit import Actor
from webapp.domain.errors import Conflict, NotFound
from webapp.domain.gdpr_requests import require_gdpr_staff
from webapp.domain.jobs import get_run, queue_run, require_resumable, resume_run
from webapp.domain.reconciliation import StatDrift, require_player
from webapp.models.jobs import JobRun
from webapp.models.players import Player
from webapp.models.reconciliation import ReconciliationDrift, ReconciliationRun
from webapp.models.staff import StaffUser


@dataclass(frozen=True)
class RunListing:
    """A job run and the email of the staff member who started it (None: the schedule or the CLI)."""

    run: JobRun
    requested_by: str | None


@dataclass(frozen=True)
class RunsPage:
    listings: list[RunListing]
    # Pass as ``before_id`` for the next (older) page; None on the last page.
    next_before: int | None


def job_runs(session: Session, *, kind: str | None = None, before_id: int | None = None,
             limit: int = 50) -> RunsPage:
    """Return job runs newest first, ``limit`` at a time, each with who started it."""
    statement = (
        select(JobRun, StaffUser.email)
        .outerjoin(StaffUser, StaffUser.id == JobRun.requested_by_id)
        .order_by(JobRun.id.desc())
        .limit(limit + 1)
    )
    if kind:
        statement = statement.where(JobRun.kind == kind)
    if before_id is not None:
        statement = statement.where(JobRun.id < before_id)
    rows = session.execute(statement).all()
    listings = [RunListing(run, email) for run, email in rows[:limit]]
    more = len(rows) > limit
    return RunsPage(listings, listings[-1].run.id if more else None)


def job_run(session: Session, run_id: int) -> RunListing:
    """Return one job run with who started it.

    :raise NotFound: for an unknown run.
    """
    run = get_run(session, run_id)
    email = None
    if run.requested_by_id is not None:
        email = session.scalar(select(StaffUser.email).where(StaffUser.id == run.requested_by_id))
    return RunListing(run, email)


def active_runs(session: Session, kind: str, limit: int = 20) -> list[JobRun]:
    """Return the queued and running runs of ``kind``, oldest first."""
    return list(session.scalars(
        select(JobRun).where(JobRun.kind == kind, JobRun.status.in_(("queued", "running")))
        .order_by(JobRun.id).limit(limit)
    ))


@dataclass(frozen=True)
class ReconciliationPage:
    runs: list[ReconciliationRun]
    next_before: int | None


def reconciliation_history(session: Session, *, before_id: int | None = None,
                           limit: int = 25) -> ReconciliationPage:
    """Return reconciliation runs (nightly, CLI and dashboard alike) newest first."""
    statement = select(ReconciliationRun).order_by(ReconciliationRun.id.desc()).limit(limit + 1)
    if before_id is not None:
        statement = statement.where(ReconciliationRun.id < before_id)
    runs = list(session.scalars(statement))
    more = len(runs) > limit
    runs = runs[:limit]
    return ReconciliationPage(runs, runs[-1].id if more else None)


def reconciliation_run(session: Session, run_id: int) -> ReconciliationRun:
    """Return one reconciliation run.

    :raise NotFound: for an unknown run.
    """
    run = session.get(ReconciliationRun, run_id)
    if run is None:
        raise NotFound(f"reconciliation run {run_id} does not exist")
    return run


@dataclass(frozen=True)
class PlayerDrift:
    """Every stat of one player that a run found drifted, with how staff know the player."""

    player_id: int
    # None once the player is gone (erased): the drift stays on record under the internal id.
    public_id: str | None
    display_name: str | None
    drifts: list[StatDrift]


@dataclass(frozen=True)
class DriftPage:
    players: list[PlayerDrift]
    # Pass as ``after_player_id`` for the next page; None on the last page.
    next_after: int | None


def drift_by_player(session: Session, run_id: int, *, after_player_id: int | None = None,
                    limit: int = 25) -> DriftPage:
    """Return the drift a run found, ``limit`` players at a time in player id order."""
    drifts = ReconciliationDrift
    ids_statement = (
        select(drifts.player_id).where(drifts.run_id == run_id)
        .group_by(drifts.player_id).order_by(drifts.player_id).limit(limit + 1)
    )
    if after_player_id is not None:
        ids_statement = ids_statement.where(drifts.player_id > after_player_id)
    player_ids = list(session.scalars(ids_statement))
    more = len(player_ids) > limit
    player_ids = player_ids[:limit]
    if not player_ids:
        return DriftPage([], None)
    names = {
        player_id: (public_id, display_name)
        for player_id, public_id, display_name in session.execute(
            select(Player.id, Player.public_id, Player.display_name).where(Player.id.in_(player_ids))
        )
    }
    found: dict[int, list[StatDrift]] = {player_id: [] for player_id in player_ids}
    for row in session.scalars(
        select(drifts).where(drifts.run_id == run_id, drifts.player_id.in_(player_ids))
        .order_by(drifts.player_id, drifts.scope, drifts.stat)
    ):
        found[row.player_id].append(StatDrift(row.player_id, row.scope, row.stat, row.expected, row.actual))
    players = [
        PlayerDrift(player_id, *names.get(player_id, (None, None)), found[player_id])
        for player_id in player_ids
    ]
    return DriftPage(players, player_ids[-1] if more else None)


def first_drifted_stats(session: Session, run_id: int, limit: int) -> list[StatDrift]:
    """Return the first ``limit`` stats a run found drifted, by player, scope and stat."""
    drifts = ReconciliationDrift
    return [
        StatDrift(row.player_id, row.scope, row.stat, row.expected, row.actual)
        for row in session.scalars(
            select(drifts).where(drifts.run_id == run_id)
            .order_by(drifts.player_id, drifts.scope, drifts.stat).limit(limit)
        )
    ]


def drifted_stats(session: Session, run_id: int) -> int:
    """Count the drifted stats a run recorded."""
    return session.scalar(
        select(func.count()).select_from(ReconciliationDrift).where(ReconciliationDrift.run_id == run_id)
    ) or 0


def refuse_a_second_fix(session: Session) -> None:
    """Refuse while a reconciliation that fixes what it finds is queued or running.

    :raise Conflict: naming that run. Each fix adds the drift its own snapshot
        found, so two at once would apply the same corrections twice.
    """
    for run in active_runs(session, "reconcile"):
        if (run.params or {}).get("fix"):
            raise Conflict(
                f"reconciliation run {run.id} is already {run.status} and fixes what it finds; two fixes at "
                "once would apply the same corrections twice. Wait for it to end"
            )


def queue_reconciliation(
    session: Session,
    actor: Actor,
    *,
    fix: bool,
    batch_size: int,
    player_id: int | None = None,
    scheduled: bool = False,
) -> JobRun:
    """Queue a reconciliation run (audited); the caller enqueues or runs it after the commit.

    The dashboard, the command line and the nightly schedule all start theirs
    here. ``player_id`` limits it to one player (who must exist).

    :raise Conflict: for a fix while another fix is queued or running. Each
        adds the drift its own snapshot found, so two at once would apply the
        same corrections twice. A check writes no stats and may always start.
    :raise NotFound: for an unknown ``player_id``.
    """
    if player_id is not None:
        require_player(session, player_id)
    if fix:
        refuse_a_second_fix(session)
    params: dict[str, Any] = {"fix": fix, "batch_size": batch_size}
    if player_id is not None:
        params["player_id"] = player_id
    if scheduled:
        params["scheduled"] = True
    return queue_run(session, actor, "reconcile", params)


def resume_job(
    session: Session, actor: Actor, run_id: int, *, safeguards: backfill.Safeguards
) -> JobRun:
    """Queue a failed or cancelled run again, from its checkpoint.

    A run resumes only if one like it could start now, refused the same way:
    a backfill under its safeguards; a reconciliation fix, an archive or
    restore, a backfill rollback, an ATP import or a player's export only
    while no run that excludes it is queued or running (two fixes at once, for
    one, would apply the same corrections twice, and the fix does not check
    again as it runs); a player's export only by privacy staff, as it was
    started (the command line, with no staff account, may).

    :raise BackfillRefused: if a backfill safeguard refuses now.
    :raise Conflict: if the run cannot be resumed, or another run stands in its way.
    :raise IdentityNotVerified: for an export whose request is no longer verified.
    :raise Forbidden: for an export resumed by staff without a GDPR role.
    """
    run = get_run(session, run_id)
    if run.kind == "backfill":
        return backfill.resume_backfill(session, actor, run_id, safeguards=safeguards)
    require_resumable(run)
    _refuse_what_would_refuse_a_start(session, actor, run)
    return resume_run(session, actor, run_id)


def _refuse_what_would_refuse_a_start(session: Session, actor: Actor, run: JobRun) -> None:
    params = run.params or {}
    if run.kind == "reconcile" and params.get("fix"):
        refuse_a_second_fix(session)
    elif run.kind in archive.RUN_KINDS:
        archive.refuse_while_another_runs(session)
    elif run.kind == "backfill_rollback":
        backfill.plan_rollback(session, int(params["run_id"]), rollback_run_id=run.id)
    elif run.kind == "import_atp":
        atp_import.refuse_while_another_import(session)
    elif run.kind == gdpr_export.EXPORT_KIND:
        if actor.staff_id is not None:
            require_gdpr_staff(session, actor)
        gdpr_export.refuse_unless_exportable(session, int(params["request_id"]))
