"""Writing the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from webapp.models.audit import AuditEntry
from webapp.models.base import utcnow


@dataclass(frozen=True)
class Actor:
    """Who is acting, and from where: passed explicitly into every audited operation."""

    staff_id: int | None
    ip_address: str | None = None
    # With no staff member signed in: who acted all the same, and how, such as
    # "command line (alice@ops-1)". Kept with the audit entry and the runs started.
    via: str | None = None


SYSTEM = Actor(staff_id=None, ip_address=None)


def record_audit(session: Session, actor: Actor, action: str, *, target_type: str | None = None,
                 target_id: int | None = None, **details: Any) -> AuditEntry:
    """Append an entry to the audit trail in the caller's transaction."""
    entry = AuditEntry(
        occurred_at=utcnow(),
        staff_id=actor.staff_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        ip_address=actor.ip_address,
        details={**details, "via": actor.via} if actor.via else details,
    )
    session.add(entry)
    session.flush()
    return entry
