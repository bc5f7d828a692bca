"""GDPR requests: receiving them, verifying who asked, keeping their timeline.

Nothing is exported or erased for a request until staff have recorded how the
requester's identity was verified (``require_verified``). Every state change
writes a timeline entry and an audit entry; audit details name players by
internal id only, so an erasure never leaves personal data in the append-only
audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, select
from sqlalchemy.orm import Session, selectinload

from webapp.domain.audit import Actor, record_audit
from webapp.domain.errors import Conflict, Forbidden, Invalid, NotFound
from webapp.models.base import utcnow
from webapp.models.gdpr import (
    CLOSED_STATUSES,
    REQUEST_KINDS,
    REQUEST_STATUSES,
    RESPONSE_PERIOD,
    GdprRequest,
    GdprRequestEntry,
)
from webapp.models.players import Player
from webapp.models.staff import StaffUser

# Who may handle GDPR requests; the web layer checks the same roles per view,
# the domain checks them again because jobs and the CLI act too.
GDPR_ROLES = ("privacy", "admin")
MAX_TEXT = 4000


class IdentityNotVerified(Conflict):
    """The request's requester has not had their identity verified yet."""


def require_verified(request: GdprRequest) -> None:
    """Raise ``IdentityNotVerified`` unless staff recorded how the requester was identified."""
    if request.verified_at is None or not request.identity_verification:
        raise IdentityNotVerified(
            f"GDPR request {request.id}: the requester's identity has not been verified; "
            "record how it was verified before acting on the request"
        )


def require_gdpr_staff(session: Session, actor: Actor) -> StaffUser:
    """Return the acting staff member, or raise ``Forbidden`` unless they hold a GDPR role."""
    staff = session.get(StaffUser, actor.staff_id) if actor.staff_id is not None else None
    if staff is None or not staff.active or not staff.has_any_role(GDPR_ROLES):
        raise Forbidden("GDPR requests are handled by privacy staff and admins only")
    return staff


def get_request(session: Session, request_id: int, *, lock: bool = False) -> GdprRequest:
    """Load a request with its timeline, or raise ``NotFound``."""
    query = (
        select(GdprRequest)
        .where(GdprRequest.id == request_id)
        .options(selectinload(GdprRequest.entries))
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    request = session.scalars(query).first()
    if request is None:
        raise NotFound(f"no GDPR request {request_id}")
    return request


def log_entry(session: Session, request: GdprRequest, actor: Actor, kind: str,
              text: str = "") -> GdprRequestEntry:
    """Append a line to the request's timeline (no audit: callers audit their action)."""
    entry = GdprRequestEntry(
        request_id=request.id, at=utcnow(), staff_id=actor.staff_id, kind=kind, text=text
    )
    session.add(entry)
    session.flush()
    return entry


def _clean_text(text: str | None, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise Invalid(f"{what} must not be empty")
    if len(text) > MAX_TEXT:
        raise Invalid(f"{what} must be at most {MAX_TEXT} characters long")
    return text


def open_request(session: Session, actor: Actor, kind: str, player_public_id: str,
                 received_at: datetime | None = None) -> GdprRequest:
    """Record a GDPR request received for a player; it is due 30 days after receipt."""
    require_gdpr_staff(session, actor)
    if kind not in REQUEST_KINDS:
        raise Invalid(f"kind must be one of {', '.join(REQUEST_KINDS)}; got {kind!r}")
    now = utcnow()
    received_at = received_at or now
    if received_at.tzinfo is None:
        raise Invalid("received_at must carry a timezone")
    if received_at > now:
        raise Invalid("received_at must not be in the future")
    public_id = (player_public_id or "").strip()
    player = session.scalars(select(Player).where(Player.public_id == public_id)).first()
    if player is None or player.is_deleted:
        raise NotFound(f"no player with public id {public_id!r}")
    if kind == "erasure":
        existing = session.scalar(
            select(GdprRequest.id).where(
                GdprRequest.player_id == player.id,
                GdprRequest.kind == "erasure",
                GdprRequest.status.not_in(CLOSED_STATUSES),
            )
        )
        if existing is not None:
            raise Conflict(f"GDPR request {existing} is already an open erasure request for this player")
    request = GdprRequest(
        kind=kind,
        player_id=player.id,
        received_at=received_at,
        due_at=received_at + RESPONSE_PERIOD,
        status="open",
        handled_by_id=actor.staff_id,
    )
    session.add(request)
    session.flush()
    log_entry(session, request, actor, "opened", f"{kind} request received")
    record_audit(session, actor, "gdpr.request.open", target_type="gdpr_request",
                 target_id=request.id, player_id=player.id, kind=kind)
    return request


def record_identity_verification(session: Session, actor: Actor, request_id: int,
                                 how: str) -> GdprRequest:
    """Record how the requester's identity was verified, which unlocks the request."""
    require_gdpr_staff(session, actor)
    how = _clean_text(how, "how the identity was verified")
    request = get_request(session, request_id, lock=True)
    if request.is_closed:
        raise Conflict(f"GDPR request {request.id} is {request.status}")
    if request.verified_at is not None:
        raise Conflict(f"GDPR request {request.id}: the identity was already verified")
    request.identity_verification = how
    request.verified_by_id = actor.staff_id
    request.verified_at = utcnow()
    request.status = "verified"
    session.flush()
    log_entry(session, request, actor, "identity_verified", how)
    record_audit(session, actor, "gdpr.request.verify_identity", target_type="gdpr_request",
                 target_id=request.id, player_id=request.player_id)
    return request


def add_note(session: Session, actor: Actor, request_id: int, text: str) -> GdprRequestEntry:
    """Add a staff note to the request's timeline."""
    require_gdpr_staff(session, actor)
    text = _clean_text(text, "the note")
    request = get_request(session, request_id)
    entry = log_entry(session, request, actor, "note", text)
    record_audit(session, actor, "gdpr.request.note", target_type="gdpr_request",
                 target_id=request.id, entry_id=entry.id)
    return entry


def refuse_request(session: Session, actor: Actor, request_id: int, reason: str) -> GdprRequest:
    """Close a request without acting on it, giving the reason."""
    require_gdpr_staff(session, actor)
    reason = _clean_text(reason, "the reason")
    request = get_request(session, request_id, lock=True)
    if request.is_closed:
        raise Conflict(f"GDPR request {request.id} is already {request.status}")
    request.status = "refused"
    request.refusal_reason = reason
    request.completed_at = utcnow()
    session.flush()
    log_entry(session, request, actor, "refused", reason)
    record_audit(session, actor, "gdpr.request.refuse", target_type="gdpr_request",
                 target_id=request.id, player_id=request.player_id)
    return request


def mark_completed(session: Session, actor: Actor, request_id: int, text: str = "") -> GdprRequest:
    """Close a verified request as done (e.g. once its export was delivered)."""
    require_gdpr_staff(session, actor)
    request = get_request(session, request_id, lock=True)
    if request.status == "completed":
        return request
    if request.is_closed:
        raise Conflict(f"GDPR request {request.id} is {request.status}")
    require_verified(request)
    request.status = "completed"
    request.completed_at = utcnow()
    session.flush()
    log_entry(session, request, actor, "completed", text)
    record_audit(session, actor, "gdpr.request.complete", target_type="gdpr_request",
                 target_id=request.id, player_id=request.player_id)
    return request


def _overdue_first(now: datetime):
    is_overdue = (GdprRequest.status.not_in(CLOSED_STATUSES)) & (GdprRequest.due_at < now)
    return case((is_overdue, 0), else_=1)


def list_requests(session: Session, status: str | None = None, *, now: datetime | None = None,
                  limit: int = 200) -> list[GdprRequest]:
    """Requests, overdue ones first, then by due date; optionally of one status."""
    now = now or utcnow()
    query = select(GdprRequest)
    if status:
        if status not in REQUEST_STATUSES:
            raise Invalid(f"status must be one of {', '.join(REQUEST_STATUSES)}; got {status!r}")
        query = query.where(GdprRequest.status == status)
    query = query.order_by(_overdue_first(now), GdprRequest.due_at, GdprRequest.id).limit(limit)
    return list(session.scalars(query))


def overdue(session: Session, *, now: datetime | None = None) -> list[GdprRequest]:
    """Open requests past their due date, the longest overdue first."""
    now = now or utcnow()
    return list(session.scalars(
        select(GdprRequest)
        .where(GdprRequest.status.not_in(CLOSED_STATUSES), GdprRequest.due_at < now)
        .order_by(GdprRequest.due_at, GdprRequest.id)
    ))


def open_request_player_ids(session: Session) -> set[int]:
    """Players with a GDPR request still open: their events stay hot (not archived)."""
    return set(session.scalars(
        select(GdprRequest.player_id).where(GdprRequest.status.not_in(CLOSED_STATUSES))
    ))


@dataclass(frozen=True)
class RequestRow:
    """A request as the dashboard lists it, with the player as every staff member sees them."""

    request: GdprRequest
    player_public_id: str
    player_display_name: str
    overdue: bool


def request_rows(session: Session, status: str | None = None, *,
                 now: datetime | None = None) -> list[RequestRow]:
    """``list_requests`` with each request's player and whether it is overdue."""
    now = now or utcnow()
    requests = list_requests(session, status, now=now)
    players = {
        p.id: p for p in session.scalars(
            select(Player).where(Player.id.in_({r.player_id for r in requests}))
        )
    } if requests else {}
    return [
        RequestRow(r, players[r.player_id].public_id, players[r.player_id].display_name,
                   r.is_overdue(now))
        for r in requests
    ]


def staff_emails(session: Session, staff_ids) -> dict[int, str]:
    """The email of each staff member named by id (to say who did what on a request)."""
    ids = {i for i in staff_ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(StaffUser.id, StaffUser.email).where(StaffUser.id.in_(ids))).all())
