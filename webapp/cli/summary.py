"""``flask summary``: what the database holds, in a few lines."""

from __future__ import annotations

import click

from webapp.domain.summary import database_summary
from webapp.extensions import db


@click.command("summary")
def summary_command() -> None:
    """Print counts of platform records, events by type and the last reconciliation."""
    summary = database_summary(db.session())
    db.session().rollback()
    click.secho("Platform records", bold=True)
    for name, count in summary.records.items():
        click.echo(f"  {name:<22} {count:>10,}")
    click.secho("Activity events by type", bold=True)
    for name, count in summary.events_by_type.items():
        click.echo(f"  {name:<28} {count:>10,}")
    click.echo(f"  {'total':<28} {sum(summary.events_by_type.values()):>10,}")
    if summary.last_reconciliation is not None:
        run = summary.last_reconciliation
        click.echo(
            f"Last reconciliation: run {run.id} {run.status}, {run.players_checked:,} players checked, "
            f"{run.players_drifted:,} drifted"
        )
