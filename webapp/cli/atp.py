"""``flask import-atp``: import the ATP match files into platform records (no events), as a job run."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import click

from webapp.cli.actor import command_line_actor
from webapp.cli.jobs import progress_bar, queue_run
from webapp.domain.atp_import import (
    DEFAULT_CHUNK_SIZE,
    SKIP_REASONS,
    ImportReport,
    default_data_dir,
    parse_years,
    start_import,
)
from webapp.domain.errors import Invalid
from webapp.extensions import db
from webapp.jobs.runner import execute_run

RECORD_KINDS = ("players", "teams", "team_memberships", "tournaments", "registrations", "matches",
                "tournament_results")
# Players and pairs are looked up wherever they play, so only the new ones are counted.
COUNTED_WHEN_STORED = ("tournaments", "registrations", "matches", "tournament_results")


def _parse_years(_ctx, _param, value: str | None) -> range | None:
    if value is None:
        return None
    try:
        return parse_years(value)
    except Invalid as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("import-atp")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the gzip files (default: ../shared/data/atp beside the project).")
@click.option("--years", callback=_parse_years, metavar="YYYY[-YYYY]",
              help="Only these seasons (default: all files present).")
@click.option("--no-doubles", is_flag=True, help="Leave out the doubles files.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=DEFAULT_CHUNK_SIZE, show_default=True,
              help="Match rows per transaction.")
@click.option("--queue", "via_queue", is_flag=True,
              help="Hand the run to the queue's workers instead of running it here.")
def import_atp_command(data_dir: Path | None, years: range | None, no_doubles: bool,
                       chunk_size: int, via_queue: bool) -> None:
    """Import ATP players, tournaments, matches and results; run the backfill for their events.

    The import is a job run, listed on the Jobs page, cancellable, resumable.
    Idempotent: what is already stored is left as it is. Exit code 1 if the
    files are unusable or the run does not succeed.
    """
    started = time.perf_counter()
    run_id = queue_run(
        lambda session: start_import(
            session, command_line_actor(), data_dir or default_data_dir(), years=years,
            include_doubles=not no_doubles, chunk_size=chunk_size,
        ).id,
        via_queue=via_queue,
    )
    if via_queue:
        click.echo(f"import run {run_id} queued")
        return
    with progress_bar(f"importing (run {run_id})", unit=" files") as show:
        run = execute_run(db.session(), run_id, listeners=[show])
    if run.status != "succeeded":
        click.secho(f"import run {run.id} {run.status}", fg="yellow" if run.status == "cancelled" else "red")
        if run.error:
            click.secho(run.error, fg="red", err=True)
        raise SystemExit(1)
    click.echo(f"import run {run.id} succeeded")
    _print_report(ImportReport.from_dict(run.result), time.perf_counter() - started)


def _print_report(report: ImportReport, elapsed: float) -> None:
    # ru_maxrss is in kilobytes on Linux: the peak of the whole process, not only the import.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    click.secho(
        f"ATP import done in {elapsed:.1f} s (peak memory {peak_mb:.0f} MB): {len(report.files_read)} files, "
        f"{report.rows_read:,} match rows, {report.rows_skipped:,} skipped",
        fg="green", bold=True,
    )
    click.echo(f"  {'records':<22} {'inserted':>10} {'already stored':>15} {'updated':>8}")
    for kind in RECORD_KINDS:
        existing = f"{report.existing[kind]:,}" if kind in COUNTED_WHEN_STORED else "-"
        click.echo(f"  {kind:<22} {report.inserted[kind]:>10,} {existing:>15} {report.updated[kind]:>8,}")
    click.echo("  matches by score")
    for category, count in sorted(report.scores.items(), key=lambda item: -item[1]):
        click.echo(f"    {category:<24} {count:>10,}")
    click.echo("  tournaments")
    for outcome, count in sorted(report.tournaments.items(), key=lambda item: -item[1]):
        click.echo(f"    {outcome:<36} {count:>8,}")
    click.echo(f"  players in atp_players.csv: {report.players_in_file:,}, imported when a match needs them")
    for title, counts in (("match rows skipped", report.skipped),
                          ("atp_players.csv rows skipped", report.players_skipped)):
        if not counts:
            continue
        click.secho(f"  {title}", fg="yellow")
        for reason, count in sorted(counts.items(), key=lambda item: -item[1]):
            examples = ", ".join(report.examples.get(reason, []))
            click.echo(f"    {count:>7,}  {SKIP_REASONS.get(reason, reason)} (e.g. {examples})")
