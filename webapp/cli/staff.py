"""``flask staff``: create and deactivate staff accounts."""

from __future__ import annotations

import click

from webapp.cli.actor import command_line_actor
from webapp.domain import staff as staff_domain
from webapp.domain.errors import DomainError
from webapp.extensions import db
from webapp.models.staff import ROLES
from webapp.transaction import unit_of_work


@click.group("staff")
def staff_group() -> None:
    """Manage staff accounts."""


@staff_group.command("create")
@click.argument("email")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES),
              help="A role to grant; repeat for several.")
@click.option("--password", "ask_password", flag_value=True, default=False,
              help="Prompt for the password instead of generating one.")
def create_staff_command(email: str, roles: tuple[str, ...], ask_password: bool) -> None:
    """Create a staff account; the generated password is printed once."""
    password = None
    if ask_password:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    session = db.session()
    try:
        with unit_of_work(session):
            created = staff_domain.create_staff(
                session, command_line_actor(), email, list(roles), password
            )
    except DomainError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    click.secho(f"created {created.staff.email} with roles {', '.join(created.staff.roles)}", fg="green")
    if created.generated_password:
        click.echo(f"password (shown once): {created.generated_password}")


@staff_group.command("deactivate")
@click.argument("email")
def deactivate_staff_command(email: str) -> None:
    """Deactivate a staff account so it can no longer sign in."""
    session = db.session()
    try:
        with unit_of_work(session):
            staff = staff_domain.deactivate_staff(session, command_line_actor(), email)
    except DomainError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    click.secho(f"deactivated {staff.email}", fg="yellow")


@staff_group.command("demo-accounts")
def demo_accounts_command() -> None:
    """Create (or reset) one demo account per role and print their credentials."""
    session = db.session()
    with unit_of_work(session):
        accounts = staff_domain.ensure_demo_accounts(session, command_line_actor())
    click.secho("Demo staff accounts (passwords are new on every run):", bold=True)
    for email, role, password in accounts:
        click.echo(f"  {role:<13} {email:<40} {password}")
