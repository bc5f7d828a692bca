"""``flask reconcile``: compare stats with events, and repair with ``--fix``."""

from __future__ import annotations

import click
from flask import current_app

from webapp.domain.errors import DomainError
from webapp.extensions import db
from webapp.jobs.reconcile import ReconciliationFailed, run_reconciliation

DRIFT_LINES_SHOWN = 20


@click.command("reconcile")
@click.option("--fix", is_flag=True, help="Repair the drift found (in transactional batches).")
@click.option("--player", "player_id", type=int, help="Check only this player (internal id).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Players' corrections per repair transaction.")
def reconcile_command(fix: bool, player_id: int | None, batch_size: int | None) -> None:
    """Recompute stats from events and report (or repair) any drift."""
    batch_size = batch_size or current_app.config["RECONCILE_FIX_BATCH_SIZE"]
    try:
        outcome = run_reconciliation(db.session(), fix=fix, player_id=player_id, batch_size=batch_size)
    except ReconciliationFailed as exc:
        click.secho(f"reconciliation run {exc.run_id} failed: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    except DomainError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(2) from None

    report = outcome.report
    drifted = len(report.drifted_players)
    colour = "green" if drifted == 0 else "yellow"
    click.secho(
        f"run {outcome.run_id}: {report.players_checked} players checked, {drifted} drifted "
        f"({report.drifted_share:.2%}), {outcome.players_fixed} fixed",
        fg=colour,
    )
    for d in report.drifts[:DRIFT_LINES_SHOWN]:
        click.echo(f"  player {d.player_id} {d.scope:<6} {d.stat:<22} expected {d.expected:>6}  stored {d.actual:>6}")
    if len(report.drifts) > DRIFT_LINES_SHOWN:
        click.echo(f"  ... and {len(report.drifts) - DRIFT_LINES_SHOWN} more stats")
