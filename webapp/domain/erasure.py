"""GDPR erasure: two people decide, one unit of work erases, a report proves it.

Asking and approving
--------------------
A privacy staff member (or an admin) asks for the erasure of a verified
erasure request (``request_erasure``); a *different* one approves it
(``erase_player``), which erases at once, in the approver's transaction.
Both steps are refused, with the reason, while the player is part of an open
dispute (its resolution must reverse their events first) or while an export of
their data runs (it would read rows being moved). Asking twice, or approving an
erasure already done, changes nothing and says so.

What erasure does
-----------------
- The player's events, hot and archived, move to a new **tombstone** player:
  random placeholders, ``is_tombstone`` set, and no column anywhere naming the
  player it came from. Keeping the original id next to the events would only
  pseudonymise them. ``activity_events.player_id`` is rewritten in place: the
  one sanctioned change to an event's subject (no trigger forbids it;
  application code otherwise only inserts events).
- Every other foreign key naming the player moves with them: data-quality
  findings, archived totals and keys, and the platform records (match sides,
  registrations, placements, results, team memberships). So does the
  player's id in other players' events (``opponent_player_ids``), hot and in
  archive files. The tombstone thus takes the player's place everywhere, and
  recording a match again (a backfill run) finds the tombstone's events
  instead of re-creating the player's history.
- The player's own row stays only for the GDPR paperwork (this request,
  exports, audit entries name it by id), emptied: username, display name,
  email and public id become random placeholders (the ``search_*`` columns
  are generated from them by the database, STORED on PostgreSQL and VIRTUAL
  with an index on SQLite, so they follow), the feed is private and
  ``erased_at`` is set. Nothing links it to the tombstone.
- Archive files holding affected events are rewritten
  (``webapp.domain.archive.rewrite_files``): a restore brings the events back
  already under the tombstone; the superseded files are deleted after commit.
- Erased rows and tombstones are left out of the name lookup
  (``webapp.domain.timeline``), so they read "[deleted player]" everywhere.
- The only free text in event metadata is ``round`` and ``side`` (see
  ``webapp.domain.taxonomy``). The erased username, email, public id and
  display name are replaced by ``[erased]`` wherever they stand as words in
  free text or JSON: event metadata, data-quality findings, the request's own
  identity-verification text and notes, dispute reports (whose ``reporter``
  is often a public id) and notes, any table but those in ``_NOT_SCRUBBED``.
- Finished exports of the player's data expire at once and their files are
  deleted after the commit (the export rows stay as the record of what was
  handed out).
- The player's stats rows are deleted. Tombstones keep none and
  reconciliation leaves them out, so it reports no drift; every other
  player's stats are untouched (nothing here writes them).

Not rewritten: the stats snapshots stored with dispute resolutions
(``match_resolutions``), keyed by player id, keep the emptied row's id.

Audit and verification
----------------------
The audit trail is append-only, so nothing written there can be taken back:
erasure's own entries, like every GDPR entry, name the player by internal id
only (the emptied row, never the tombstone), and record counts. Other audit
entries already follow the same rule (``AuditEntry``: details hold ids, not
personal data).

The verification report searches every text and JSON column of every table in
the metadata, and every archive file, for the erased username, email and
public id, and stores where it looked and how many hits each place had. The
erased values are never stored, not even hashed: the report is computed in the
same transaction as the erasure, from values held in memory only, and the
report keeps names of places and counts.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, String, Text, cast, delete, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from webapp.domain.archive import RUN_KINDS as ARCHIVE_RUN_KINDS
from webapp.domain.archive import ArchiveStorage, rewrite_files, scan_files
from webapp.domain.audit import Actor, record_audit
from webapp.domain.disputes import players_with_open_disputes
from webapp.domain.errors import Conflict, Invalid
from webapp.domain.gdpr_export import ExportStorage, export_in_progress
from webapp.domain.gdpr_requests import get_request, log_entry, require_gdpr_staff, require_verified
from webapp.domain.jobs import first_active_run
from webapp.domain.privacy import DELETED_PLAYER
from webapp.models import Base
from webapp.models.activity import ActivityEvent
from webapp.models.archive import ArchivedEventKey, ArchiveFile
from webapp.models.base import utcnow
from webapp.models.gdpr import GdprRequest
from webapp.models.gdpr_exports import GdprExport
from webapp.models.players import Player
from webapp.models.stats import PlayerStats
from webapp.transaction import after_commit

ERASED = "[erased]"
# The values the verification searches for, by the name the report gives them.
SEARCHED = ("username", "email", "public_id")
# The creation time of every tombstone (see _anonymous_player).
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class ErasureRefused(Conflict):
    """The erasure may not go ahead now; the message says why. Nothing changed."""


@dataclass(frozen=True)
class ErasureStep:
    """The outcome of asking for or approving an erasure."""

    request: GdprRequest
    changed: bool
    message: str
    result: ErasureResult | None = None


@dataclass(frozen=True)
class ErasureResult:
    request_id: int
    events_moved: int
    findings_moved: int
    stats_rows_deleted: int
    archive_files_rewritten: int
    archived_events_moved: int
    metadata_values_scrubbed: int
    exports_withdrawn: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def total_hits(self) -> int:
        return int(self.report.get("total_hits", 0))


# Asking.


def request_erasure(session: Session, actor: Actor, request_id: int) -> ErasureStep:
    """Ask for a verified erasure request to be carried out; a different staff member approves.

    :raise IdentityNotVerified: before the requester's identity was verified.
    :raise ErasureRefused: during an open dispute or a running export of the player.
    """
    require_gdpr_staff(session, actor)
    request = get_request(session, request_id, lock=True)
    _require_erasure_kind(request)
    if request.status == "completed":
        return ErasureStep(request, False, f"GDPR request {request.id}: the player was already erased")
    if request.status == "awaiting_approval":
        return ErasureStep(
            request, False,
            f"GDPR request {request.id}: erasure was already requested and awaits approval by "
            "a second privacy staff member",
        )
    if request.status == "refused":
        raise Conflict(f"GDPR request {request.id} was refused: {request.refusal_reason}")
    require_verified(request)
    _refuse_while_busy(session, request)
    request.status = "awaiting_approval"
    request.erasure_requested_by_id = actor.staff_id
    request.erasure_requested_at = utcnow()
    session.flush()
    log_entry(session, request, actor, "erasure_requested",
              "Erasure requested; a different privacy staff member must approve it")
    record_audit(session, actor, "gdpr.erasure.request", target_type="gdpr_request",
                 target_id=request.id, player_id=request.player_id)
    return ErasureStep(request, True, f"Erasure requested for GDPR request {request.id}; "
                                      "it now needs a second privacy staff member's approval")


def _require_erasure_kind(request: GdprRequest) -> None:
    if request.kind != "erasure":
        raise Invalid(f"GDPR request {request.id} is an {request.kind} request, not an erasure")


def _refuse_while_busy(session: Session, request: GdprRequest) -> None:
    player_id = request.player_id
    if players_with_open_disputes(session, [player_id]):
        raise ErasureRefused(
            f"GDPR request {request.id}: the player is part of an open dispute; resolve the "
            "dispute first, since its resolution reverses the player's events"
        )
    if export_in_progress(session, player_id):
        raise ErasureRefused(
            f"GDPR request {request.id}: an export of the player's data is running; wait for it "
            "to finish or cancel it"
        )
    restoring = first_active_run(session, ARCHIVE_RUN_KINDS)
    if restoring is not None:
        raise ErasureRefused(
            f"GDPR request {request.id}: archive run {restoring.id} is moving events to or from "
            "cold storage; wait for it to end"
        )


# Approving and erasing.


def erase_player(session: Session, actor: Actor, request_id: int, *,
                 storage: ArchiveStorage | None = None) -> ErasureStep:
    """Approve a requested erasure as a second staff member, and erase the player; flush only.

    ``storage`` is where archive files live; it is needed as soon as any
    file was archived, since every file is searched and may name the player.
    The files are read and rewritten inside the transaction, so a large
    archive makes a long erasure (and, on SQLite, a long write lock).

    :raise ErasureRefused: when the approver is the staff member who asked, or
        during an open dispute or a running export or archive run.
    :raise Conflict: when no erasure was requested.
    """
    require_gdpr_staff(session, actor)
    request = get_request(session, request_id, lock=True)
    _require_erasure_kind(request)
    if request.status == "completed":
        return ErasureStep(request, False, f"GDPR request {request.id}: the player was already "
                                           "erased; approving again changes nothing")
    if request.status != "awaiting_approval":
        raise Conflict(f"GDPR request {request.id} is {request.status}: erasure has not been requested")
    require_verified(request)
    if actor.staff_id == request.erasure_requested_by_id:
        raise ErasureRefused(
            f"GDPR request {request.id}: you asked for this erasure, so you cannot approve it; "
            "a different privacy staff member must"
        )
    _refuse_while_busy(session, request)
    player = session.get(Player, request.player_id, populate_existing=True,
                         with_for_update=True)
    if player is None or player.is_deleted:
        raise Conflict(f"GDPR request {request.id}: the player is no longer there to erase")
    archived = session.scalar(
        select(func.count()).select_from(ArchivedEventKey).where(ArchivedEventKey.player_id == player.id)
    )
    if session.scalar(select(func.count()).select_from(ArchiveFile)) and storage is None:
        raise Invalid("archive storage is needed to erase from archive files")

    # Held in memory only, for scrubbing and for the verification below.
    erased = {
        "username": player.username,
        "email": player.email,
        "public_id": player.public_id,
        "display_name": player.display_name,
    }
    scrub = _Scrubber(erased.values())

    tombstone = _anonymous_player(is_tombstone=True)
    session.add(tombstone)
    session.flush()
    stats_deleted = session.execute(
        delete(PlayerStats).where(PlayerStats.player_id == player.id)
        .execution_options(synchronize_session=False)
    ).rowcount
    moved = _repoint_references(session, player.id, tombstone.id)
    events_moved = moved.get("activity_events.player_id", 0)
    findings_moved = moved.get("data_quality_findings.player_id", 0)
    _repoint_opponent_ids(session, player.id, tombstone.id)
    scrubbed = _scrub_everywhere(session, scrub)

    rewritten = []
    if storage is not None:
        def move_and_scrub(record: dict[str, Any]) -> bool:
            changed = False
            if record.get("player_id") == player.id:
                record["player_id"] = tombstone.id
                changed = True
            metadata = record.get("metadata") or {}
            cleaned = scrub.value(_with_opponent_moved(metadata, player.id, tombstone.id))
            if cleaned != metadata:
                record["metadata"] = cleaned
                changed = True
            return changed

        rewritten = rewrite_files(session, storage, move_and_scrub,
                                  may_change=_line_test(player.id, scrub.values))
        old_urls = [r.old_url for r in rewritten]
        after_commit(session, lambda: _remove_files(storage, old_urls))

    exports_withdrawn = _withdraw_exports(session, player.id)
    _empty_player(player)
    session.flush()
    session.expire_all()

    report = verification_report(
        session, {name: erased[name] for name in SEARCHED}, storage=storage
    )
    request = get_request(session, request_id)
    now = utcnow()
    request.status = "completed"
    request.approved_by_id = actor.staff_id
    request.approved_at = now
    request.completed_at = now
    request.verification_report = report
    session.flush()
    result = ErasureResult(
        request_id=request.id,
        events_moved=events_moved,
        findings_moved=findings_moved,
        stats_rows_deleted=stats_deleted,
        archive_files_rewritten=len(rewritten),
        archived_events_moved=archived or 0,
        metadata_values_scrubbed=scrubbed,
        exports_withdrawn=exports_withdrawn,
        report=report,
    )
    log_entry(session, request, actor, "erasure_approved", "Erasure approved and carried out")
    log_entry(
        session, request, actor, "completed",
        f"Erased: {events_moved} events and {archived or 0} archived events moved to an anonymous "
        f"player, {stats_deleted} stats rows deleted, {len(rewritten)} archive files rewritten. "
        f"Verification: {report['total_hits']} hits in {report['columns_searched']} columns and "
        f"{report['archive_files_searched']} archive files.",
    )
    # Internal ids and counts only. Never the tombstone's id: it would link the
    # anonymous events back to the player this request is about.
    record_audit(
        session, actor, "gdpr.erasure.approve", target_type="gdpr_request", target_id=request.id,
        player_id=request.player_id, events_moved=events_moved,
        archived_events_moved=archived or 0, stats_rows_deleted=stats_deleted,
        archive_files_rewritten=len(rewritten), exports_withdrawn=exports_withdrawn,
        verification_hits=report["total_hits"],
    )
    return ErasureStep(request, True, f"Player erased for GDPR request {request.id}", result)


# Tables whose references to the player stay on the emptied row: the GDPR
# request is about that row, and its stats were deleted.
_KEPT_ON_THE_EMPTIED_ROW = ("gdpr_requests", "player_stats")


def _repoint_references(session: Session, player_id: int, tombstone_id: int) -> dict[str, int]:
    """Point every foreign key naming the player at the tombstone; return rows moved per column.

    Events, findings and archived totals and keys, and the platform records
    too (match sides, registrations, placements, results, team memberships):
    the player's place in other people's history is then the tombstone's, so
    recording a match again (a backfill run) finds the tombstone's events and
    adds nothing for the emptied row.
    """
    players = Player.__table__
    moved = {}
    for table in Base.metadata.sorted_tables:
        if table.name in _KEPT_ON_THE_EMPTIED_ROW:
            continue
        for fk in table.foreign_keys:
            if fk.column.table is not players:
                continue
            column = fk.parent
            moved[f"{table.name}.{column.name}"] = session.execute(
                update(table).where(column == player_id).values({column: tombstone_id})
            ).rowcount
    return moved


def _line_test(player_id: int, values: Iterable[str]):
    """A cheap test of an archive line (compact JSON, sorted keys) that may name the player."""
    markers = [m % player_id for m in (b'"player_id":%d,', b"[%d,", b",%d,", b",%d]", b"[%d]")]
    texts = {form.lower().encode() for v in values for form in (v, json.dumps(v)[1:-1])}

    def may_change(line: bytes) -> bool:
        if any(marker in line for marker in markers):
            return True
        lowered = line.lower()
        return any(text in lowered for text in texts)

    return may_change


def _with_opponent_moved(metadata: dict[str, Any], player_id: int, tombstone_id: int) -> dict[str, Any]:
    opponents = metadata.get("opponent_player_ids")
    if not opponents or player_id not in opponents:
        return metadata
    return {**metadata, "opponent_player_ids": [tombstone_id if o == player_id else o for o in opponents]}


def _repoint_opponent_ids(session: Session, player_id: int, tombstone_id: int) -> int:
    """Name the tombstone instead of the player in other players' events (``opponent_player_ids``)."""
    events = ActivityEvent.__table__
    if session.get_bind().dialect.name == "postgresql":
        names_player = events.c["metadata"].op("@>")(
            cast(func.jsonb_build_object("opponent_player_ids", func.jsonb_build_array(player_id)), JSONB)
        )
    else:
        names_player = text(
            "EXISTS (SELECT 1 FROM json_each(activity_events.metadata, '$.opponent_player_ids') "
            "WHERE json_each.value = :erased_player_id)"
        ).bindparams(erased_player_id=player_id)
    rows = session.execute(select(events.c.id, events.c["metadata"]).where(names_player)).all()
    for event_id, metadata in rows:
        session.execute(
            update(events).where(events.c.id == event_id)
            .values(metadata=_with_opponent_moved(metadata, player_id, tombstone_id))
        )
    return len(rows)


def _anonymous_player(*, is_tombstone: bool) -> Player:
    token = secrets.token_hex(8)
    return Player(
        public_id=f"DEL-{token}",
        username=f"deleted-{token}",
        display_name=DELETED_PLAYER,
        email=f"{token}@deleted.invalid",
        feed_visibility="private",
        is_tombstone=is_tombstone,
        # Every tombstone gets the same creation time, so it cannot be matched
        # to the request completed when it was made.
        **({"created_at": _EPOCH} if is_tombstone else {}),
    )


def _empty_player(player: Player) -> None:
    blank = _anonymous_player(is_tombstone=False)
    player.public_id = blank.public_id
    player.username = blank.username
    player.display_name = blank.display_name
    player.email = blank.email
    player.feed_visibility = "private"
    player.erased_at = utcnow()


def _remove_files(storage: ArchiveStorage | ExportStorage, urls: Iterable[str]) -> None:
    for url in urls:
        storage.remove(url)


def _withdraw_exports(session: Session, player_id: int) -> int:
    """Expire the player's finished exports now and delete their files once the erasure commits.

    The export rows stay, as the record of what was handed out; the files hold
    the very data being erased.
    """
    now = utcnow()
    exports = list(session.scalars(
        select(GdprExport).where(GdprExport.player_id == player_id, GdprExport.completed_at.is_not(None))
    ))
    for export in exports:
        if export.expires_at is None or export.expires_at > now:
            export.expires_at = now
        urls = [u for u in (export.json_url, export.csv_url, export.manifest_url) if u]
        storage = ExportStorage(export.storage_url)
        after_commit(session, lambda storage=storage, urls=urls: _remove_files(storage, urls))
    return len(exports)


def _word_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """Any of ``values``, in any case, not inside a longer word ("ann" is not in "joanna")."""
    values = sorted({v for v in values if v and v.strip()}, key=len, reverse=True)
    if not values:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(v) for v in values) + r")(?!\w)", re.IGNORECASE)


class _Scrubber:
    """Replaces the erased values inside strings of JSON-like data."""

    def __init__(self, values: Iterable[str]) -> None:
        self.values = [v for v in values if v and v.strip()]
        self.pattern = _word_pattern(self.values)
        self.replaced = 0

    def text(self, text: str) -> str:
        if self.pattern is None:
            return text
        new, n = self.pattern.subn(ERASED, text)
        self.replaced += n
        return new

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value


# Tables whose text is never rewritten: the append-only audit trail (which
# holds ids, not personal data), the player rows (emptied above), staff
# accounts and tokens, and archive manifests (URLs and digests).
_NOT_SCRUBBED = ("audit_entries", "players", "staff_users", "api_tokens", "archive_files")


def _scrub_everywhere(session: Session, scrub: _Scrubber) -> int:
    """Replace the erased values wherever free text or JSON holds them; return how many.

    Event metadata (``round``, ``side``), data-quality findings, the request's
    own verification text and notes, dispute reports and notes: any row of any
    table but ``_NOT_SCRUBBED`` whose text holds one of the values.
    """
    before = scrub.replaced
    patterns = _patterns(scrub.values)
    for column in _searchable_columns():
        table = column.table
        if table.name in _NOT_SCRUBBED or column.computed is not None or column.primary_key:
            continue
        condition = _matching(column, patterns)
        if condition is None:
            continue
        key = list(table.primary_key.columns)
        for row in session.execute(select(*key, column).where(condition)).all():
            stored = row[-1]
            cleaned = scrub.value(stored)
            if cleaned == stored:
                continue
            length = getattr(column.type, "length", None)
            if isinstance(cleaned, str) and length:
                cleaned = cleaned[:length]
            session.execute(
                update(table).where(*(k == v for k, v in zip(key, row[:-1], strict=True)))
                .values({column: cleaned})
            )
    return scrub.replaced - before


# Verification.


def _patterns(values: Iterable[str]) -> list[str]:
    """LIKE patterns (lower case, ``\\`` escaping) for each value as stored and as JSON escapes it."""
    patterns = set()
    for value in values:
        if not value:
            continue
        for form in {value, json.dumps(value)[1:-1]}:
            escaped = form.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            patterns.add(f"%{escaped}%")
    return sorted(patterns)


def _matching(column, patterns: list[str]):
    if not patterns:
        return None
    as_text = func.lower(cast(column, Text))
    condition = None
    for pattern in patterns:
        like = as_text.like(literal(pattern), escape="\\")
        condition = like if condition is None else condition | like
    return condition


def _searchable_columns() -> list:
    return [
        column
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, (String, JSON)) or isinstance(getattr(column.type, "impl", None), (String, JSON))
    ]


def verification_report(session: Session, values: dict[str, str], *,
                        storage: ArchiveStorage | None = None) -> dict[str, Any]:
    """Search every text and JSON column and every archive file for ``values``; return counts only.

    ``values`` maps a name (``"email"``) to the value searched for; the report
    names the places and counts the hits per value name, and never holds a
    value. A hit is the value in any case, not inside a longer word: the
    database narrows the rows with ``LIKE`` and each candidate is then checked
    here, so "player1" is not found in "player12".
    """
    words = {name: _word_pattern([value]) for name, value in values.items() if value}
    words = {name: pattern for name, pattern in words.items() if pattern is not None}
    patterns = _patterns(values.values())
    hits: list[dict[str, Any]] = []
    columns = _searchable_columns()
    for column in columns:
        condition = _matching(column, patterns)
        if condition is None:
            continue
        counts = dict.fromkeys(words, 0)
        for (stored,) in session.execute(select(column).where(condition)):
            found = stored if isinstance(stored, str) else json.dumps(stored)
            for name, pattern in words.items():
                if _found(pattern, found):
                    counts[name] += 1
        hits += [{"where": f"{column.table.name}.{column.name}", "value": name, "count": n}
                 for name, n in counts.items() if n]
    files = 0
    if storage is not None:
        urls = list(session.scalars(select(ArchiveFile.url).order_by(ArchiveFile.id)))
        files = len(urls)
        per_file: dict[tuple[str, str], int] = {}
        for url, line in scan_files(storage, urls):
            found = line.decode("utf-8", errors="replace")
            for name, pattern in words.items():
                if _found(pattern, found):
                    per_file[(url, name)] = per_file.get((url, name), 0) + 1
        hits += [{"where": f"archive file {url}", "value": name, "count": n}
                 for (url, name), n in sorted(per_file.items())]
    return {
        "searched_at": utcnow().isoformat(),
        "searched_for": sorted(values),
        "tables_searched": len({c.table.name for c in columns}),
        "columns_searched": len(columns),
        "archive_files_searched": files,
        "hits": hits,
        "total_hits": sum(h["count"] for h in hits),
    }


_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def _found(pattern: re.Pattern[str], text: str) -> bool:
    """Whether ``text`` holds the value, also where JSON wrote it with \\u escapes."""
    if pattern.search(text):
        return True
    unescaped = _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return unescaped != text and bool(pattern.search(unescaped))

