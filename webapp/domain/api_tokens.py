"""API tokens for the platform: created and revoked by staff, only a hash stored.

A token is ``aops_`` followed by 43 URL-safe random characters (256 bits). It
is shown once, when it is created; the database keeps its SHA-256 and its
first characters (so that staff can tell tokens apart). A fast hash is enough
for a random secret this long, and it lets a request find its token with one
lookup on the unique hash index; comparing hashes through that index never
compares the secret itself character by character.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from webapp.domain.audit import Actor, record_audit
from webapp.domain.errors import Invalid, NotFound
from webapp.models.api_tokens import TOKEN_SCOPES, ApiToken
from webapp.models.base import utcnow
from webapp.models.staff import StaffUser

TOKEN_PREFIX = "aops_"
# Shown to staff: the fixed prefix and the first random characters.
SHOWN_PREFIX_LENGTH = 12
MAX_NAME_LENGTH = 100
# Longer than any token we issue: anything longer is refused before hashing.
MAX_TOKEN_LENGTH = 128
# How stale last_used_at may get: noting every use would make each read a write.
LAST_USED_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    # The only copy of the secret: show it once, never store or log it.
    plaintext: str


def hash_token(plaintext: str) -> str:
    """Return the stored form of a token."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def checked_scopes(scopes: Iterable[str]) -> list[str]:
    """Return ``scopes`` sorted and deduplicated.

    :raise Invalid: if none is given or one is unknown.
    """
    if isinstance(scopes, str):
        scopes = [scopes]
    chosen = sorted(set(scopes))
    unknown = [s for s in chosen if s not in TOKEN_SCOPES]
    if unknown or not chosen:
        raise Invalid(
            f"scopes must be chosen from {', '.join(TOKEN_SCOPES)}; "
            f"got {', '.join(chosen) or 'none'}"
        )
    return chosen


def create_token(session: Session, actor: Actor, name: str, scopes: Iterable[str]) -> NewToken:
    """Create a token for the platform and return it with its plaintext (shown once)."""
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise Invalid(f"a token needs a name of 1 to {MAX_NAME_LENGTH} characters")
    scopes = checked_scopes(scopes)
    if actor.staff_id is None:
        raise Invalid("a token is created by a staff member, who answers for it")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:SHOWN_PREFIX_LENGTH],
        scopes=scopes,
        created_by_id=actor.staff_id,
    )
    session.add(token)
    session.flush()
    record_audit(
        session,
        actor,
        "api_token.create",
        target_type="api_token",
        target_id=token.id,
        name=name,
        prefix=token.prefix,
        scopes=scopes,
    )
    return NewToken(token, plaintext)


def revoke_token(session: Session, actor: Actor, token_id: int) -> ApiToken:
    """Revoke a token so that it no longer authenticates; revoking it again changes nothing."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"API token {token_id} does not exist")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
        record_audit(
            session,
            actor,
            "api_token.revoke",
            target_type="api_token",
            target_id=token.id,
            name=token.name,
            prefix=token.prefix,
        )
    return token


@dataclass(frozen=True)
class TokenListing:
    token: ApiToken
    created_by_email: str


def list_tokens(session: Session) -> list[TokenListing]:
    """Return every token with its creator's email, newest first."""
    rows = session.execute(
        select(ApiToken, StaffUser.email)
        .join(StaffUser, StaffUser.id == ApiToken.created_by_id)
        .order_by(ApiToken.id.desc())
    )
    return [TokenListing(token, email) for token, email in rows]


@dataclass(frozen=True)
class TokenGrant:
    """What a live token allows: read once per request, never expired by a commit."""

    token_id: int
    scopes: tuple[str, ...]
    last_used_at: datetime | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


_tokens = ApiToken.__table__
# Built once, read through the connection: every API request runs it, and an
# ORM object would cost more than the indexed lookup itself.
_BY_HASH = select(_tokens.c.id, _tokens.c.scopes, _tokens.c.last_used_at).where(
    _tokens.c.token_hash == bindparam("token_hash"), _tokens.c.revoked_at.is_(None)
)


def authenticate_token(session: Session, plaintext: str | None) -> TokenGrant | None:
    """Return what the live token ``plaintext`` allows, or None if it is unknown or revoked."""
    if not plaintext or not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > MAX_TOKEN_LENGTH:
        return None
    row = session.connection().execute(_BY_HASH, {"token_hash": hash_token(plaintext)}).first()
    if row is None:
        return None
    return TokenGrant(row.id, tuple(row.scopes), row.last_used_at)


def use_is_due(last_used_at: datetime | None, now: datetime | None = None) -> bool:
    """Whether a use at ``now`` should be noted on a token last noted at ``last_used_at``."""
    now = now or utcnow()
    return last_used_at is None or now - last_used_at >= LAST_USED_PRECISION


def note_token_use(session: Session, token_id: int, now: datetime | None = None) -> bool:
    """Set the token's last use to ``now`` unless it was noted less than a minute ago.

    The condition is in the UPDATE itself, so concurrent requests note a use
    once. Returns whether it was noted.
    """
    now = now or utcnow()
    result = session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(
                ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_PRECISION
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1
