"""Staff accounts: creation, deactivation and sign-in checks."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from webapp.domain.audit import Actor, record_audit
from webapp.domain.errors import Conflict, Invalid, NotFound
from webapp.models.base import utcnow
from webapp.models.staff import ROLES, StaffUser

_hasher = PasswordHasher()
# A hash of a random password, verified when the email is unknown so that a
# failed sign-in takes the same time whichever part was wrong.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def use_password_profile(name: str) -> None:
    """Hash new passwords with one of argon2-cffi's named parameter profiles.

    Production keeps the library's default (RFC 9106 low-memory profile); the
    test suite uses the cheapest, since it signs in hundreds of times.
    Existing hashes keep verifying: each carries its own parameters.
    """
    global _hasher, _DUMMY_HASH
    _hasher = PasswordHasher.from_parameters(getattr(profiles, name))
    _DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MIN_PASSWORD_LENGTH = 12
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class NewStaff:
    staff: StaffUser
    # Set only when the password was generated: shown once, never stored.
    generated_password: str | None


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_staff(session: Session, actor: Actor, email: str, roles: list[str],
                 password: str | None = None) -> NewStaff:
    """Create a staff account; generate a password when none is given."""
    email = normalise_email(email)
    if not _EMAIL.match(email):
        raise Invalid(f"{email!r} is not an email address")
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise Invalid(f"roles must be chosen from {', '.join(ROLES)}; got {', '.join(roles) or 'none'}")
    generated = None
    if password is None:
        password = generated = secrets.token_urlsafe(18)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if session.scalar(select(func.count()).select_from(StaffUser).where(StaffUser.email == email)):
        raise Conflict(f"a staff account for {email} already exists")
    staff = StaffUser(email=email, password_hash=_hasher.hash(password), roles=sorted(set(roles)), active=True)
    session.add(staff)
    session.flush()
    record_audit(session, actor, "staff.create", target_type="staff", target_id=staff.id, roles=staff.roles)
    return NewStaff(staff, generated)


def deactivate_staff(session: Session, actor: Actor, email: str) -> StaffUser:
    """Deactivate a staff account so it can no longer sign in."""
    staff = session.scalars(select(StaffUser).where(StaffUser.email == normalise_email(email))).first()
    if staff is None:
        raise NotFound(f"no staff account for {email}")
    if staff.active:
        staff.active = False
        record_audit(session, actor, "staff.deactivate", target_type="staff", target_id=staff.id)
    session.flush()
    return staff


def authenticate(session: Session, email: str, password: str) -> StaffUser | None:
    """Return the active staff member with these credentials, or None (never saying which part failed)."""
    staff = session.scalars(select(StaffUser).where(StaffUser.email == normalise_email(email))).first()
    try:
        _hasher.verify(staff.password_hash if staff else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if staff is None or not staff.active:
        return None
    return staff


def record_sign_in(session: Session, staff: StaffUser, ip_address: str | None) -> None:
    """Note a successful sign-in on the account and in the audit trail."""
    staff.last_sign_in_at = utcnow()
    record_audit(session, Actor(staff.id, ip_address), "staff.sign_in", target_type="staff", target_id=staff.id)
    session.flush()


DEMO_EMAIL_DOMAIN = "demo.activity-ops.test"


def demo_account_email(role: str) -> str:
    """Return the email of the demo account of ``role``."""
    return f"{role.replace('_', '-')}@{DEMO_EMAIL_DOMAIN}"


def ensure_demo_accounts(session: Session, actor: Actor) -> list[tuple[str, str, str]]:
    """Give every role a demo account with a freshly generated password.

    Returns ``(email, role, password)`` for each; the passwords exist only in
    this return value. Used by the demo run command, never by a deployment.
    """
    accounts = []
    for role in ROLES:
        email = demo_account_email(role)
        password = secrets.token_urlsafe(12)
        staff = session.scalars(select(StaffUser).where(StaffUser.email == email)).first()
        if staff is None:
            create_staff(session, actor, email, [role], password)
        else:
            staff.password_hash = _hasher.hash(password)
            staff.roles = [role]
            staff.active = True
            record_audit(session, actor, "staff.reset_demo_password", target_type="staff", target_id=staff.id)
        accounts.append((email, role, password))
    session.flush()
    return accounts
