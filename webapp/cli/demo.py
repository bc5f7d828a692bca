"""``flask demo-data``: fill an empty database with a deterministic demo history and its events."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click
from flask.cli import with_appcontext
from tqdm import tqdm

from webapp.domain.demo import (
    DEFAULT_AS_OF,
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEED,
    MAX_SCALE,
    DatabaseNotEmpty,
    DemoSummary,
    generate_demo_data,
)
from webapp.domain.errors import DomainError
from webapp.extensions import db
from webapp.transaction import unit_of_work


def _parse_as_of(_ctx, _param, value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time") from None
    # A date or time without an offset is taken as UTC, like every time we store.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class _Progress:
    """Short lines for writing the records, a progress bar for recording the events."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.started = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "records" and done == total:
            click.echo(f"platform records written ({time.perf_counter() - self.started:.1f} s)")
        if stage != "events":
            return
        if self.bar is None:
            # disable=None: the bar shows on a terminal and stays quiet in logs and tests.
            self.bar = tqdm(total=total, unit=" events", desc="recording events", disable=None)
        self.bar.update(done - self.bar.n)
        if done == total:
            self.bar.close()
            click.echo(f"{total:,} events recorded ({time.perf_counter() - self.started:.1f} s)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command("demo-data")
@with_appcontext
@click.option(
    "--seed",
    type=int,
    default=DEFAULT_SEED,
    show_default=True,
    help="The same seed (and scale and --as-of) always gives the same data.",
)
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True, max=MAX_SCALE),
    default=1.0,
    show_default=True,
    help="Multiplier of the default size (about 2,000 players, 20,000 matches).",
)
@click.option(
    "--as-of",
    "as_of",
    default=DEFAULT_AS_OF.isoformat(),
    show_default=True,
    callback=_parse_as_of,
    help="The reference time the ~2 years of history end at (UTC).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Events per call to record_events.",
)
@click.option(
    "--if-empty",
    is_flag=True,
    help="Succeed without writing anything when the database already holds data.",
)
def demo_data_command(
    seed: int, scale: float, as_of: datetime, batch_size: int, if_empty: bool
) -> None:
    """Generate demo players, teams, tournaments and matches, and record their events.

    Refuses (exit code 1, nothing written) a database that already holds
    players, teams or tournaments, unless --if-empty makes that a no-op.
    """
    session = db.session()
    progress = _Progress()
    try:
        with unit_of_work(session):
            summary = generate_demo_data(
                session,
                seed=seed,
                scale=scale,
                as_of=as_of,
                batch_size=batch_size,
                progress=progress,
            )
    except DatabaseNotEmpty as exc:
        progress.close()
        if if_empty:
            click.secho(f"demo data skipped: {exc}", fg="yellow")
            return
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    except DomainError as exc:
        progress.close()
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    progress.close()
    _print_summary(summary, seed, scale, as_of, time.perf_counter() - progress.started)


def _print_summary(
    summary: DemoSummary, seed: int, scale: float, as_of: datetime, elapsed: float
) -> None:
    click.secho(
        f"demo data written (seed {seed}, scale {scale:g}, as of {as_of.isoformat()}) "
        f"in {elapsed:.1f} s",
        fg="green",
        bold=True,
    )
    click.echo(f"  {'players':<22} {summary.players:>10,}")
    click.echo(f"  {'teams':<22} {summary.teams:>10,}  ({summary.team_memberships:,} memberships)")
    click.echo(
        f"  {'tournaments':<22} {summary.tournaments:>10,}  "
        f"({summary.private_tournaments:,} private, "
        f"{summary.team_tournaments:,} team-based, {summary.tournament_results:,} decided)"
    )
    for label, counts in (("registrations", summary.registrations), ("matches", summary.matches)):
        detail = ", ".join(f"{count:,} {name}" for name, count in counts.items())
        click.echo(f"  {label:<22} {sum(counts.values()):>10,}  ({detail})")
    requests = ", ".join(f"{kind} {status}" for kind, status in summary.gdpr_requests)
    click.echo(f"  {'GDPR requests':<22} {len(summary.gdpr_requests):>10,}  ({requests})")
    click.secho(f"  {'events recorded':<22} {summary.events_recorded:>10,}", fg="cyan")
    for name, count in summary.events_by_type.items():
        click.echo(f"    {name:<26} {count:>8,}")
