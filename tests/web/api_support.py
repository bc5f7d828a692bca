"""Helpers shared by the API tests: tokens, headers and counts of what a request wrote."""

from __future__ import annotations

from sqlalchemy import func, select

from webapp.domain.api_tokens import create_token, revoke_token
from webapp.domain.audit import Actor
from webapp.models import (
    ActivityEvent,
    DataQualityFinding,
    Match,
    Placement,
    PlayerStats,
    StaffUser,
    TournamentResult,
)
from webapp.models.api_tokens import ApiToken
from webapp.transaction import unit_of_work

WRITTEN_TABLES = (
    Match,
    TournamentResult,
    Placement,
    ActivityEvent,
    PlayerStats,
    DataQualityFinding,
)


def token_owner(session, email: str = "platform-owner@staff.test") -> StaffUser:
    """An admin who owns the API tests' tokens; never signs in, so no password hash is computed."""
    staff = StaffUser(email=email, password_hash="!unusable", roles=["admin"], active=True)
    session.add(staff)
    session.commit()
    return staff


def issue_token(session, staff, *scopes: str, name: str = "platform") -> str:
    """Create a token as ``staff`` and return its plaintext."""
    with unit_of_work(session):
        new = create_token(session, Actor(staff.id), name, scopes or ("read",))
    return new.plaintext


def revoke(session, staff, plaintext: str) -> None:
    from webapp.domain.api_tokens import hash_token

    with unit_of_work(session):
        token = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext))
        ).one()
        revoke_token(session, Actor(staff.id), token.id)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def written(session) -> dict[str, int]:
    """Rows in every table a result report writes, with the sum of every stat."""
    session.rollback()  # see what requests committed, not the test's old snapshot
    counts = {
        model.__tablename__: session.scalar(select(func.count()).select_from(model))
        for model in WRITTEN_TABLES
    }
    counts["stat_total"] = session.scalar(
        select(
            func.coalesce(
                func.sum(
                    PlayerStats.matches_played
                    + PlayerStats.tournaments_completed
                    + PlayerStats.tournaments_won
                ),
                0,
            )
        )
    )
    return counts
