"""``flask backfill``: turn historical records into events; resume, roll back, show runs."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from flask import current_app

from webapp.cli.actor import command_line_actor
from webapp.cli.jobs import queue_run, run_in_foreground, safeguards_now
from webapp.domain import backfill
from webapp.domain.backfill import BackfillPreview, BackfillReport, BackfillScope
from webapp.domain.errors import DomainError
from webapp.extensions import db

# Exit code of a run that finished but whose parity check flagged differences.
PARITY_FLAGGED = 3


@click.group("backfill")
def backfill_group() -> None:
    """Turn historical platform records into activity events, like live traffic would."""


def _parse_before(_ctx, _param, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time") from None
    # A date or time without an offset is taken as UTC, like every time we store.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _fail(message: str, code: int = 1) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    raise SystemExit(code)


@backfill_group.command("run")
@click.option("--dry-run", is_flag=True, help="Report what the backfill would do; write nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Source records per batch (one transaction each); default BACKFILL_BATCH_SIZE.",
)
@click.option("--force", is_flag=True, help="Start even inside the peak window.")
@click.option(
    "--yes",
    is_flag=True,
    help="Start at once: no confirmation, and so no dry run first (see it with --dry-run).",
)
@click.option("--tournament-from", type=click.IntRange(min=1), help="First tournament id in scope.")
@click.option("--tournament-to", type=click.IntRange(min=1), help="Last tournament id in scope.")
@click.option(
    "--before", callback=_parse_before, help="Only tournaments that started before this date (UTC)."
)
@click.option(
    "--queue",
    "via_queue",
    is_flag=True,
    help="Hand the run to the workers instead of running it here.",
)
def run_command(
    dry_run: bool,
    batch_size: int | None,
    force: bool,
    yes: bool,
    tournament_from: int | None,
    tournament_to: int | None,
    before: datetime | None,
    via_queue: bool,
) -> None:
    """Report what a backfill would do and ask, then (unless --dry-run) run it in batches.

    With --yes there is nobody to ask: the run starts without the dry run,
    which derives every event the run would and so costs nearly as much as
    the run itself. Exits 1 when refused or failed, and 3 when the run
    finished but its parity check flagged differences.
    """
    app = current_app._get_current_object()
    session = db.session()
    batch_size = batch_size or app.config["BACKFILL_BATCH_SIZE"]
    scope = BackfillScope(tournament_from, tournament_to, before)
    report = None
    if dry_run or not yes:
        try:
            report = backfill.preview(session, scope, batch_size=batch_size)
        except DomainError as exc:
            _fail(str(exc))
        finally:
            session.rollback()
        _print_preview(report)
    if dry_run:
        click.secho("dry run: nothing was written", fg="green")
        return

    safeguards = safeguards_now(app, force)
    try:
        backfill.check_safeguards(safeguards)
    except DomainError as exc:
        in_peak = backfill.in_peak_window(safeguards.now, safeguards.peak_window)
        _fail(f"{exc}" + (" (--force)" if in_peak and not force else ""))
    if report is not None and not _confirmed(
        f"Create {report.events_to_create:,} events in batches of {batch_size:,}?"
    ):
        _fail("not confirmed; nothing was started")
    run_id = queue_run(
        lambda session: backfill.start_backfill(
            session,
            command_line_actor(),
            scope,
            safeguards=safeguards,
            batch_size=batch_size,
            pause_seconds=app.config["BACKFILL_PAUSE_SECONDS"],
            # The run's total comes from the dry run above, if there was one,
            # so the write transaction reads no source table.
            dry_run=report,
        ).id,
        via_queue=via_queue,
    )
    if via_queue:
        click.echo(f"backfill run {run_id} queued")
        return
    _run_and_report(run_id)


@backfill_group.command("resume")
@click.argument("run_id", type=int)
@click.option("--force", is_flag=True, help="Resume even inside the peak window.")
@click.option(
    "--queue",
    "via_queue",
    is_flag=True,
    help="Hand the run to the workers instead of running it here.",
)
def resume_command(run_id: int, force: bool, via_queue: bool) -> None:
    """Resume a failed or cancelled backfill from its last committed batch."""
    app = current_app._get_current_object()
    queue_run(
        lambda session: backfill.resume_backfill(
            session, command_line_actor(), run_id, safeguards=safeguards_now(app, force)
        ).id,
        via_queue=via_queue,
    )
    if via_queue:
        click.echo(f"backfill run {run_id} queued")
        return
    _run_and_report(run_id)


@backfill_group.command("rollback")
@click.argument("run_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Events deleted per transaction; default BACKFILL_BATCH_SIZE.",
)
@click.option("--queue", "via_queue", is_flag=True, help="Hand the rollback to the workers.")
def rollback_command(run_id: int, yes: bool, batch_size: int | None, via_queue: bool) -> None:
    """Delete the events a backfill run made and take their stats back out (audited)."""
    app = current_app._get_current_object()
    session = db.session()
    batch_size = batch_size or app.config["BACKFILL_BATCH_SIZE"]
    try:
        plan = backfill.plan_rollback(session, run_id)
    except DomainError as exc:
        _fail(str(exc))
    finally:
        session.rollback()
    click.echo(
        f"backfill run {run_id}: {plan.events:,} events of {plan.players:,} players to delete"
    )
    for event_type, n in plan.events_by_type.items():
        click.echo(f"  {event_type:<24} {n:>10,}")
    if not yes and not _confirmed(f"Delete {plan.events:,} events and take their stats back out?"):
        _fail("not confirmed; nothing was deleted")
    rollback_id = queue_run(
        lambda session: backfill.start_rollback(
            session, command_line_actor(), run_id, batch_size=batch_size
        ).id,
        via_queue=via_queue,
    )
    if via_queue:
        click.echo(f"rollback run {rollback_id} queued")
        return
    run_in_foreground(rollback_id)


@backfill_group.command("show")
@click.argument("run_id", type=int)
@click.option(
    "--recheck", is_flag=True, help="Check parity against the tables now, not as stored at the end."
)
def show_command(run_id: int, recheck: bool) -> None:
    """Show a backfill run: its ledger batch by batch, totals and parity check."""
    session = db.session()
    try:
        report = backfill.backfill_report(session, run_id, recheck=recheck)
    except DomainError as exc:
        _fail(str(exc))
    finally:
        session.rollback()
    _print_report(report)


def _confirmed(question: str) -> bool:
    try:
        return click.confirm(question, default=False)
    except click.Abort:  # no answer (end of input) is no
        click.echo()
        return False


def _run_and_report(run_id: int) -> None:
    run_in_foreground(run_id)  # exits non-zero unless the run succeeded
    report = backfill.backfill_report(db.session(), run_id)
    db.session.rollback()
    _print_refusals(report.totals.failed, [e for line in report.lines if line.committed for e in line.errors])
    if report.parity is not None and not report.parity.ok:
        click.secho("parity check flagged differences:", fg="yellow")
        for flag in report.parity.flags:
            click.secho(f"  {flag}", fg="yellow")
        click.echo(f"see `flask backfill show {run_id}` for the ledger")
        raise SystemExit(PARITY_FLAGGED)
    click.secho("parity check: every count matches the source tables", fg="green")


def _print_refusals(refused: int, reasons: list[str]) -> None:
    """Say how many records were refused and why (the first few reasons of each batch)."""
    click.echo(f"  records refused      {refused:>10,}")
    for reason in reasons:
        click.secho(f"    {reason}", fg="yellow")


def _print_preview(report: BackfillPreview) -> None:
    counts = report.counts
    click.echo(f"backfill of {report.scope.describe()}")
    click.echo(f"  source records       {counts.rows_read:>10,}")
    click.echo(f"  events to create     {report.events_to_create:>10,}")
    click.echo(f"  already recorded     {counts.duplicates:>10,}")
    click.echo(f"  players affected     {report.players_affected:>10,}")
    click.echo(f"  forfeits (no won/lost) {counts.rejected_forfeit:>8,}")
    click.echo(f"  no-shows (no completion) {counts.rejected_no_show:>6,}")
    click.echo(f"  undecided matches    {counts.skipped_undecided:>10,}")
    _print_refusals(counts.failed, report.failures)
    if report.events_by_type:
        click.echo("events by type:")
        for event_type, n in report.events_by_type.items():
            click.echo(f"  {event_type:<24} {n:>10,}")
    for scope, changes in report.stat_changes.items():
        if changes:
            click.echo(f"stat changes ({scope}):")
            for stat, delta in changes.items():
                click.echo(f"  {stat:<24} {delta:>+10,}")
    if report.sample:
        click.echo("sample events:")
        for fact in report.sample:
            click.echo(
                f"  {fact.occurred_at:%Y-%m-%d %H:%M} player {fact.player_id:<8} "
                f"{fact.event_type:<22} {fact.source_model} {fact.source_id}"
            )


def _print_report(report: BackfillReport) -> None:
    run = report.run
    click.echo(f"backfill run {run.id}: {run.status}, {report.scope.describe()}")
    if run.error:
        click.secho(run.error.splitlines()[0], fg="red")
    for rollback in report.rollbacks:
        click.secho(f"rolled back by run {rollback.id} ({rollback.status})", fg="yellow")
    click.echo(
        f"{'batch':>6} {'read':>7} {'inserted':>9} {'dupes':>7} {'forfeit':>8} {'no-show':>8} "
        f"{'failed':>7} {'undecided':>9}  event ids"
    )
    for line in report.lines:
        if not line.committed:
            error = line.errors[0] if line.errors else ""
            click.secho(f"{line.batch_no:>6} rolled back: {error}", fg="red")
            continue
        ids = "-" if line.first_event_id is None else f"{line.first_event_id}-{line.last_event_id}"
        click.echo(f"{_counts_row(str(line.batch_no), line.counts)}  {ids}")
        for error in line.errors:
            click.secho(f"         {error}", fg="yellow")
    click.echo(_counts_row("total", report.totals))
    if report.parity is None:
        return
    when = "now" if report.parity_checked_now else "at the end of the run"
    colour = "green" if report.parity.ok else "yellow"
    click.secho(
        f"parity (checked {when}): {'ok' if report.parity.ok else 'differences flagged'}", fg=colour
    )
    for check in report.parity.checks:
        click.secho(
            f"  {'ok  ' if check.ok else 'FLAG'} {check.describe()}",
            fg=None if check.ok else "yellow",
        )


def _counts_row(label: str, c: backfill.BatchCounts) -> str:
    return (
        f"{label:>6} {c.rows_read:>7,} {c.events_inserted:>9,} {c.duplicates:>7,} "
        f"{c.rejected_forfeit:>8,} {c.rejected_no_show:>8,} {c.failed:>7,} "
        f"{c.skipped_undecided:>9,}"
    )
