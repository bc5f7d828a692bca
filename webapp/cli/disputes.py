"""``flask disputes``: the open dispute queue, and resolving a match after seeing its preview."""

from __future__ import annotations

import uuid

import click

from webapp.cli.actor import command_line_actor
from webapp.domain import disputes
from webapp.domain.errors import DomainError
from webapp.extensions import db
from webapp.transaction import unit_of_work


@click.group("disputes")
def disputes_group() -> None:
    """Disputed matches: list the queue, resolve one."""


@disputes_group.command("list")
@click.option("--resolved", is_flag=True, help="List resolved cases (newest first) instead of open ones.")
def list_command(resolved: bool) -> None:
    """List dispute cases, open ones oldest first."""
    queue = disputes.dispute_queue(db.session(), status="resolved" if resolved else "open")
    if not queue:
        click.echo("no resolved disputes" if resolved else "no open disputes")
    for item in queue:
        click.echo(f"case {item.dispute.id}  match {item.match.id}  {item.tournament.name} {item.match.round}  "
                   f"opened {item.dispute.opened_at:%Y-%m-%d %H:%M}  {len(item.reports)} report(s)")
        for report in item.reports:
            click.echo(f"    {report.reporter or report.source}: {report.reason}")


@disputes_group.command("resolve")
@click.argument("match_id", type=int)
@click.option("--outcome", type=click.Choice(["a", "b", "void"]), required=True,
              help="The corrected winner side, or void.")
@click.option("--reason", required=True, help="Why: kept with the resolution and in the audit trail.")
@click.option("--yes", is_flag=True, help="Resolve without asking after the preview.")
def resolve_command(match_id: int, outcome: str, reason: str, yes: bool) -> None:
    """Preview the correction of a disputed match, then resolve it on the version previewed."""
    session = db.session()
    try:
        plan = disputes.plan_resolution(session, match_id, outcome)
        session.rollback()
    except DomainError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(2) from None
    click.echo(f"match {plan.match_id} (version {plan.based_on_version}): {plan.state_before} "
               f"-> {plan.state_after}{f' (side {plan.winner_side_after} won)' if plan.winner_side_after else ''}")
    for event in plan.events:
        reverses = f" reverses event {event.reverses_event_id}" if event.reverses_event_id else ""
        click.echo(f"  event  player {event.player_id}: {event.event_type}{reverses}")
    for change in plan.stat_changes:
        click.echo(f"  stat   player {change.player_id} {change.scope:<6} {change.stat:<22} "
                   f"{change.before} -> {change.after}")
    if not plan.events:
        click.echo("  the current result stands: no events are written")
    if not yes and not click.confirm("Resolve?", default=False):
        click.echo("nothing written")
        return
    try:
        with unit_of_work(session):
            resolved = disputes.resolve_dispute(
                session, command_line_actor(), match_id, outcome, reason,
                expected_version=plan.based_on_version, token=uuid.uuid4().hex,
            )
            resolution_id = resolved.resolution.id
    except DomainError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    click.secho(f"resolution {resolution_id}: {len(plan.events)} events written", fg="green")
