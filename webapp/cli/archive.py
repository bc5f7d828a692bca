"""``flask archive``: move old events to cold storage; restore, verify and list archive files."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from flask import current_app

from webapp.cli.actor import command_line_actor
from webapp.cli.jobs import run_in_foreground
from webapp.domain import archive
from webapp.domain.archive import ArchivePlan
from webapp.domain.errors import DomainError
from webapp.extensions import db
from webapp.transaction import unit_of_work


@click.group("archive")
def archive_group() -> None:
    """Cold storage of old events: archive, restore, verify, list."""


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    raise SystemExit(1)


def _storage() -> archive.ArchiveStorage:
    return archive.ArchiveStorage(current_app.config["ARCHIVE_URL"])


@archive_group.command("run")
@click.option("--dry-run", is_flag=True, help="Show what would move; write nothing.")
@click.option(
    "--older-than-days",
    type=click.IntRange(min=1),
    default=None,
    help="Archive events older than this many days; default ARCHIVE_AFTER_DAYS.",
)
@click.option(
    "--hold",
    "holds",
    type=click.IntRange(min=1),
    multiple=True,
    metavar="PLAYER_ID",
    help="Keep this player's events hot (repeatable).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def run_command(dry_run: bool, older_than_days: int | None, holds: tuple[int, ...], yes: bool) -> None:
    """Show what would move to cold storage, then (unless --dry-run) archive it month by month."""
    config = current_app.config
    days = older_than_days or config["ARCHIVE_AFTER_DAYS"]
    now = datetime.now(UTC)
    session = db.session()
    try:
        plan = archive.plan_archive(session, now, days, holds)
    except DomainError as exc:
        _fail(str(exc))
    finally:
        session.rollback()
    _print_plan(plan, config["ARCHIVE_URL"])
    if dry_run:
        click.secho("dry run: nothing was written", fg="green")
        return
    if not plan.events:
        click.echo("nothing to archive")
        return
    if not yes and not _confirmed(
        f"Move {plan.events:,} events in {len(plan.months)} month file(s) to cold storage?"
    ):
        _fail("not confirmed; nothing was archived")
    try:
        with unit_of_work(session):
            run_id = archive.start_archive(
                session, command_line_actor(), now=now, after_days=days, url=config["ARCHIVE_URL"],
                hold_player_ids=holds,
            ).id
    except DomainError as exc:
        _fail(str(exc))
    run_in_foreground(run_id)


@archive_group.command("restore")
@click.argument("file_id", type=int)
def restore_command(file_id: int) -> None:
    """Put an archive file's events back in the hot table (a repeat inserts nothing)."""
    session = db.session()
    try:
        with unit_of_work(session):
            run_id = archive.start_restore(
                session, command_line_actor(), file_id, url=current_app.config["ARCHIVE_URL"]
            ).id
    except DomainError as exc:
        _fail(str(exc))
    run_in_foreground(run_id)


@archive_group.command("verify")
@click.argument("file_id", type=int, required=False)
def verify_command(file_id: int | None) -> None:
    """Read archive files again and check them against their manifest; exit 1 on any mismatch."""
    session = db.session()
    storage = _storage()
    try:
        ids = [file_id] if file_id is not None else [f.id for f in archive.list_files(session)]
        checks = [archive.verify_archive(session, storage, i) for i in ids]
    except DomainError as exc:
        _fail(str(exc))
    finally:
        session.rollback()
    for check in checks:
        if check.ok:
            click.secho(f"file {check.file_id}: ok  {check.url}", fg="green")
        else:
            click.secho(f"file {check.file_id}: FAILED  {check.url}", fg="red")
            for problem in check.problems:
                click.secho(f"  {problem}", fg="red")
    failed = sum(not c.ok for c in checks)
    click.echo(f"{len(checks)} file(s) checked, {failed} failed")
    if failed:
        raise SystemExit(1)


@archive_group.command("list")
def list_command() -> None:
    """List archive files with their manifest, and files no manifest row names."""
    session = db.session()
    try:
        files = archive.list_files(session)
        orphans = archive.orphan_files(session, _storage())
    finally:
        session.rollback()
    click.echo(f"{'id':>6} {'month':<8} {'events':>9} {'bytes':>11} {'sha256':<12} {'run':>5}  state")
    for f in files:
        state = f"restored {f.restored_at:%Y-%m-%d}" if f.restored_at else "archived"
        click.echo(
            f"{f.id:>6} {f.month:<8} {f.event_count:>9,} {f.bytes:>11,} {f.sha256[:12]:<12} "
            f"{f.run_id or '-':>5}  {state}"
        )
    if not files:
        click.echo("no archive files")
    for url in orphans:
        click.secho(f"not in the manifest (an unfinished write; safe to delete): {url}", fg="yellow")


def _print_plan(plan: ArchivePlan, url: str) -> None:
    click.echo(f"archive of events before {plan.cutoff:%Y-%m-%d %H:%M} UTC to {url}")
    click.echo(f"  events to move       {plan.events:>10,}")
    click.echo(f"  players affected     {plan.players_affected:>10,}")
    for month in plan.months:
        click.echo(f"    {month.month}           {month.events:>10,}")
    click.echo("kept hot:")
    labels = {
        archive.HELD: "players on hold",
        archive.REVERSAL: "linked by a reversal",
        archive.FINDING: "data-quality finding",
    }
    for reason in archive.EXCLUSION_REASONS:
        click.echo(f"  {labels[reason]:<20} {plan.excluded.get(reason, 0):>10,}")
    for player_id, n in sorted(plan.held_players.items()):
        click.secho(f"  player {player_id} is on hold: {n:,} events skipped", fg="yellow")


def _confirmed(question: str) -> bool:
    try:
        return click.confirm(question, default=False)
    except click.Abort:  # no answer (end of input) is no
        click.echo()
        return False
