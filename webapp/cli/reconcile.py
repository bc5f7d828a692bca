"""``flask reconcile``: compare stats with events, and repair with ``--fix``.

The run is a job run like the dashboard's and the nightly one: it shows on
the Jobs page, and a fix is refused while another fix is queued or running.
It runs in this process unless ``--queue`` hands it to the workers.
"""

from __future__ import annotations

import click
from flask import current_app

from webapp.cli.actor import command_line_actor
from webapp.cli.jobs import progress_bar, queue_run
from webapp.domain import operations
from webapp.domain.errors import NotFound
from webapp.domain.reconciliation import require_player
from webapp.extensions import db
from webapp.jobs.runner import execute_run

DRIFT_LINES_SHOWN = 20


@click.command("reconcile")
@click.option("--fix", is_flag=True, help="Repair the drift found (in transactional batches).")
@click.option("--player", "player_id", type=int, help="Check only this player (internal id).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Players' corrections per repair transaction.")
@click.option("--queue", "via_queue", is_flag=True, help="Hand it to the workers instead of running it here.")
def reconcile_command(fix: bool, player_id: int | None, batch_size: int | None, via_queue: bool) -> None:
    """Recompute stats from events and report (or repair) any drift."""
    batch_size = batch_size or current_app.config["RECONCILE_FIX_BATCH_SIZE"]
    session = db.session()
    if player_id is not None:
        try:
            require_player(session, player_id)
        except NotFound as exc:  # exit 2, as for a bad option; nothing is queued
            click.secho(f"error: {exc}", fg="red", err=True)
            raise SystemExit(2) from None
        finally:
            session.rollback()
    job_id = queue_run(
        lambda s: operations.queue_reconciliation(
            s, command_line_actor(), fix=fix, batch_size=batch_size, player_id=player_id
        ).id,
        via_queue=via_queue,
    )
    if via_queue:
        click.echo(f"job run {job_id} queued")
        return

    with progress_bar(f"reconciling (job run {job_id})", unit=" players") as show:
        job = execute_run(session, job_id, listeners=[show])
    if job.status != "succeeded":
        # The first line of the stored error names the reconciliation run and what went wrong.
        click.secho((job.error or f"job run {job_id} {job.status}").splitlines()[0], fg="red", err=True)
        raise SystemExit(1)
    result = job.result or {}
    run_id = result["reconciliation_run_id"]
    drifted = result["players_drifted"]
    click.secho(
        f"reconciliation run {run_id}: {result['players_checked']} players checked, {drifted} drifted "
        f"({result['drifted_share']:.2%}), {result['players_fixed']} fixed (job run {job_id})",
        fg="green" if drifted == 0 else "yellow",
    )
    _show_drift(run_id)


def _show_drift(run_id: int) -> None:
    session = db.session()
    shown = operations.first_drifted_stats(session, run_id, DRIFT_LINES_SHOWN)
    for d in shown:
        click.echo(f"  player {d.player_id} {d.scope:<6} {d.stat:<22} expected {d.expected:>6}  stored {d.actual:>6}")
    total = operations.drifted_stats(session, run_id)
    if total > len(shown):
        click.echo(f"  ... and {total - len(shown)} more stats")
    session.rollback()
