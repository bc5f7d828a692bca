"""``flask import-atp``: import the ATP match files into platform records (no events)."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import click
from tqdm import tqdm

from webapp.domain.atp_import import (
    DEFAULT_CHUNK_SIZE,
    SKIP_REASONS,
    ImportReport,
    ImportStep,
    default_data_dir,
    parse_years,
    plan_import,
)
from webapp.domain.errors import DomainError, Invalid
from webapp.extensions import db
from webapp.jobs.atp_import import run_atp_import

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
def import_atp_command(data_dir: Path | None, years: range | None, no_doubles: bool,
                       chunk_size: int) -> None:
    """Import ATP players, tournaments, matches and results; run the backfill for their events.

    Idempotent: what is already stored is left as it is. Exit code 1 if the files are unusable.
    """
    started = time.perf_counter()
    bar = None

    def show(step: ImportStep) -> None:
        nonlocal bar
        if bar is None:
            # disable=None: the bar shows on a terminal and stays quiet in logs and tests.
            bar = tqdm(total=step.files_total, unit=" files", desc="importing", disable=None)
        bar.update(step.files_done - bar.n)

    try:
        plan = plan_import(data_dir or default_data_dir(), years=years, include_doubles=not no_doubles)
        report = run_atp_import(db.session(), plan, chunk_size=chunk_size, during_step=show)
    except DomainError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    finally:
        if bar is not None:
            bar.close()
    _print_report(report, time.perf_counter() - started)


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
