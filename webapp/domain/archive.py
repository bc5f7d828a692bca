"""Archival: old events move to cold storage files, verified before the hot rows go.

Events older than a configured age are written, a month at a time, as gzip
JSON-lines files under an fsspec URL (a folder by default), with a manifest
row per file (count, bytes, sha256). A month moves in three steps:

1. ``write_month`` streams the month's eligible events into a new file;
2. ``verify_written`` reads the file back from storage and checks its sha256,
   its line count and that it holds exactly the events selected;
3. ``commit_month``, in one transaction, stores the manifest row, adds the
   events to the per-player archived totals and deletes them from the hot table.

A crash before step 3 commits leaves every hot row in place: the file is then
an orphan no manifest row names (``orphan_files`` lists them; the same run
resumed writes the same file again). Stats are never touched: reconciliation
counts the archived totals with the hot events, so they stay exact.

Not archived, and reported by reason: events of held players (``held_player_ids``
and holds given explicitly), events linked by a reversal in either direction
(so the link and its foreign key stay intact), and events a data-quality
finding refers to.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import posixpath
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from fsspec.core import url_to_fs
from sqlalchemy import String, case, delete, distinct, exists, func, literal_column, or_, select
from sqlalchemy.orm import Session

from webapp.database import dialect_insert
from webapp.domain import jobs, monitoring
from webapp.domain.audit import Actor
from webapp.domain.disputes import players_with_open_disputes
from webapp.domain.errors import Conflict, DomainError, Invalid, NotFound
from webapp.domain.gdpr_requests import open_request_player_ids
from webapp.domain.recording import YOUNGEST_ARCHIVABLE
from webapp.domain.timeline import TimelineEvent
from webapp.models.activity import ActivityEvent, DataQualityFinding
from webapp.models.archive import ArchivedEventCount, ArchivedEventKey, ArchiveFile
from webapp.models.base import utcnow
from webapp.models.jobs import JobRun

DEFAULT_AFTER_DAYS = 730
# Events read from the hot table per round trip while a file is written.
READ_CHUNK = 5_000
# Events re-inserted per statement on restore.
INSERT_CHUNK = 1_000
# Ids per DELETE ... IN (...).
DELETE_CHUNK = 5_000

# Why an old event stays hot; each event is counted under the first that applies.
HELD, REVERSAL, FINDING = "held", "reversal", "data_quality_finding"
EXCLUSION_REASONS = (HELD, REVERSAL, FINDING)

# The job kinds of which only one run may be queued or running at a time.
RUN_KINDS = ("archive", "archive_restore")

# (player_id, event_type, is_private, is_team): the key of archived_event_counts.
CountKey = tuple[int, str, bool, bool]

_events = ActivityEvent.__table__
_counts = ArchivedEventCount.__table__
_keys = ArchivedEventKey.__table__
_COUNT_KEY_COLUMNS = ("player_id", "event_type", "is_private", "is_team")
_COLUMNS = (
    "id", "player_id", "event_type", "occurred_at", "recorded_at", "source_model", "source_id",
    "origin", "origin_id", "team_id", "tournament_id", "is_private", "metadata", "reverses_event_id",
)
_TIMES = ("occurred_at", "recorded_at")


class ArchiveVerificationFailed(DomainError):
    """An archive file does not hold what its manifest (or the selection) says; nothing was deleted."""


# Holds.


def held_player_ids(session: Session) -> set[int]:
    """Return the players whose events must stay hot.

    Players of a match with an open dispute are held: its resolution reverses
    their events, which must still be in the hot table to be reversed. Players
    with an open GDPR request are held too: an export must find all of their
    events and an erasure must move them, neither racing an archive run.
    """
    return players_with_open_disputes(session) | open_request_player_ids(session)


def _holds(session: Session, hold_player_ids: Iterable[int]) -> set[int]:
    return held_player_ids(session) | {int(p) for p in hold_player_ids}


# Storage.


class ArchiveStorage:
    """Where archive files live: an fsspec URL (a local folder, ``s3://bucket/prefix``, ...).

    Files are named by absolute URL in their manifest rows, so they can be read
    back wherever ``url`` points later; ``options`` go to the filesystem.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self.url = str(url).rstrip("/")
        self.options = options
        self.fs, self.root = url_to_fs(self.url, **options)

    def file_url(self, month: str, run_id: int) -> str:
        """Return the URL of the file run ``run_id`` writes the events of ``month`` to."""
        path = posixpath.join(self.root, "events", month, f"events-{month}-run{run_id}.jsonl.gz")
        return self.fs.unstrip_protocol(path)

    def open(self, url: str, mode: str = "rb") -> IO[bytes]:
        """Open a file by its URL for reading or (``"wb"``) writing."""
        fs, path = url_to_fs(url, **self.options)
        if "w" in mode:
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return fs.open(path, mode)

    def remove(self, url: str) -> None:
        """Delete a file by its URL."""
        fs, path = url_to_fs(url, **self.options)
        fs.rm(path)

    def list_files(self) -> list[str]:
        """Return the URL of every event file under this storage."""
        pattern = posixpath.join(self.root, "events", "*", "*.jsonl.gz")
        return sorted(self.fs.unstrip_protocol(p) for p in self.fs.glob(pattern))


class HashingSink:
    """A write-only file that hashes and counts the bytes on their way to storage."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


class _HashingSource:
    """A read-only file that hashes and counts the bytes read from storage."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        """Read to the end, so the digest covers every byte of the file."""
        while self.read(1 << 20):
            pass


@dataclass
class _Scan:
    """What reading a whole file found: its digest and size, line by line."""

    source: _HashingSource
    lines: Iterator[bytes]

    @property
    def sha256(self) -> str:
        return self.source.sha256.hexdigest()

    @property
    def bytes(self) -> int:
        return self.source.bytes


@contextmanager
def _scanning(storage: ArchiveStorage, url: str) -> Iterator[_Scan]:
    """Open an archive file to read its lines while hashing its bytes.

    :raise ArchiveVerificationFailed: if the file is missing or not valid gzip.
    """
    try:
        with storage.open(url, "rb") as raw:
            source = _HashingSource(raw)
            with gzip.GzipFile(fileobj=source, mode="rb") as unzipped:
                yield _Scan(source, _checked_lines(url, unzipped))
                source.drain()
    except FileNotFoundError:
        raise ArchiveVerificationFailed(f"archive file {url} is missing") from None
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile and zlib.error are OSErrors
        raise ArchiveVerificationFailed(f"archive file {url} cannot be read: {exc}") from exc


def _checked_lines(url: str, unzipped: gzip.GzipFile) -> Iterator[bytes]:
    try:
        yield from unzipped
    except (OSError, EOFError) as exc:
        raise ArchiveVerificationFailed(f"archive file {url} cannot be read: {exc}") from exc


def _encode(row: Mapping[str, Any]) -> bytes:
    record = {name: row[name] for name in _COLUMNS}
    for name in _TIMES:
        record[name] = record[name].astimezone(UTC).isoformat()
    record["is_private"] = bool(record["is_private"])
    # Sorted keys and no spaces: the same event always makes the same bytes.
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _decode(line: bytes) -> dict[str, Any]:
    record = json.loads(line)
    for name in _TIMES:
        record[name] = datetime.fromisoformat(record[name])
    return record


# Planning.


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """Return the first moment of ``month`` (YYYY-MM, UTC) and of the month after."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _month_of(column, dialect: str):
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM")
    return func.substr(column, 1, 7)  # SQLite keeps UTC times as 'YYYY-MM-DD HH:MM:SS...'


def _linked_by_reversal():
    reverser = _events.alias("reverser")
    return or_(
        _events.c.reverses_event_id.is_not(None),
        exists().where(reverser.c.reverses_event_id == _events.c.id),
    )


def _has_finding():
    findings = DataQualityFinding.__table__
    return exists().where(findings.c.event_id == _events.c.id)


def _eligible(cutoff: datetime, held: set[int]):
    conditions = [_events.c.occurred_at < cutoff, ~_linked_by_reversal(), ~_has_finding()]
    if held:
        conditions.append(_events.c.player_id.not_in(sorted(held)))
    return conditions


@dataclass(frozen=True)
class MonthPlan:
    month: str  # YYYY-MM
    events: int


@dataclass(frozen=True)
class ArchivePlan:
    """What an archive run would move now, and what it would keep hot and why."""

    cutoff: datetime
    months: list[MonthPlan]
    players_affected: int
    # Held player id -> their events old enough to move that stay hot.
    held_players: dict[int, int] = field(default_factory=dict)
    # Reason -> events old enough to move that stay hot (see EXCLUSION_REASONS).
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return sum(m.events for m in self.months)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "events": self.events,
            "months": {m.month: m.events for m in self.months},
            "players_affected": self.players_affected,
            "held_players_skipped": {str(p): n for p, n in sorted(self.held_players.items())},
            "excluded": dict(self.excluded),
        }


def plan_archive(
    session: Session, now: datetime, after_days: int, hold_player_ids: Iterable[int] = ()
) -> ArchivePlan:
    """Say what archiving events older than ``after_days`` before ``now`` would move; write nothing.

    :raise Invalid: for an age below one day or a naive ``now``.
    """
    cutoff = archive_cutoff(now, after_days)
    held = _holds(session, hold_player_ids)
    dialect = session.get_bind().dialect.name
    whens = [(_events.c.player_id.in_(sorted(held)), literal_column(f"'{HELD}'", String))] if held else []
    whens += [
        (_linked_by_reversal(), literal_column(f"'{REVERSAL}'", String)),
        (_has_finding(), literal_column(f"'{FINDING}'", String)),
    ]
    classified = (
        select(
            _events.c.player_id,
            _month_of(_events.c.occurred_at, dialect).label("month"),
            case(*whens, else_=literal_column("'eligible'", String)).label("reason"),
        )
        .where(_events.c.occurred_at < cutoff)
        .subquery()
    )
    months: list[MonthPlan] = []
    excluded = dict.fromkeys(EXCLUSION_REASONS, 0)
    for reason, month, n in session.execute(
        select(classified.c.reason, classified.c.month, func.count())
        .group_by(classified.c.reason, classified.c.month)
        .order_by(classified.c.month)
    ):
        if reason == "eligible":
            months.append(MonthPlan(month, n))
        else:
            excluded[reason] += n
    players = session.scalar(
        select(func.count(distinct(classified.c.player_id))).where(classified.c.reason == "eligible")
    )
    held_players = {}
    if held:
        held_players = dict(
            session.execute(
                select(classified.c.player_id, func.count())
                .where(classified.c.reason == HELD)
                .group_by(classified.c.player_id)
            ).all()
        )
    return ArchivePlan(cutoff, months, players or 0, held_players, excluded)


def archive_cutoff(now: datetime, after_days: int) -> datetime:
    """Return the moment before which events are old enough to archive.

    :raise Invalid: for an age below one day or a naive ``now``.
    """
    # Recording looks for archived duplicates only among facts older than
    # YOUNGEST_ARCHIVABLE, so no younger event may ever be archived.
    if (not isinstance(after_days, int) or isinstance(after_days, bool)
            or timedelta(days=after_days) < YOUNGEST_ARCHIVABLE):
        raise Invalid(f"events must be at least one day old to archive, not {after_days!r} days")
    if now.tzinfo is None:
        raise Invalid("now must be a timezone-aware date and time")
    return now - timedelta(days=after_days)


# Writing, verifying and committing one month.


@dataclass(frozen=True)
class WrittenFile:
    """A file as written: what was selected and what went to storage."""

    run_id: int
    month: str
    url: str
    event_ids: tuple[int, ...]
    counts: Mapping[CountKey, int]
    sha256: str
    bytes: int

    @property
    def event_count(self) -> int:
        return len(self.event_ids)


@dataclass(frozen=True)
class VerifiedFile:
    """A written file read back from storage and found to hold exactly what was selected."""

    written: WrittenFile
    verified_at: datetime


def write_month(
    session: Session,
    storage: ArchiveStorage,
    month: str,
    *,
    run_id: int,
    cutoff: datetime,
    hold_player_ids: Iterable[int] = (),
) -> WrittenFile | None:
    """Write ``month``'s events that are eligible now to a new file; ``None`` if there are none.

    Reads only (the caller ends the read transaction). A file left at the same
    URL by an earlier attempt of the same run, never committed, is overwritten.

    :raise Conflict: if the file was already archived (a manifest row names it).
    """
    url = storage.file_url(month, run_id)
    if session.scalar(select(ArchiveFile.id).where(ArchiveFile.url == url)) is not None:
        raise Conflict(f"{url} is already archived; a run archives each month once")
    start, end = month_bounds(month)
    statement = (
        select(*(_events.c[name] for name in _COLUMNS))
        .where(*_eligible(cutoff, _holds(session, hold_player_ids)))
        .where(_events.c.occurred_at >= start, _events.c.occurred_at < end)
        .order_by(_events.c.id)
        .execution_options(yield_per=READ_CHUNK)
    )
    ids: list[int] = []
    counts: Counter[CountKey] = Counter()
    with storage.open(url, "wb") as raw:
        sink = HashingSink(raw)
        # mtime=0 and no file name: the same events always give the same bytes.
        with gzip.GzipFile(fileobj=sink, mode="wb", mtime=0, filename="", compresslevel=6) as out:
            for rows in session.execute(statement).mappings().partitions():
                for row in rows:
                    out.write(_encode(row))
                    ids.append(row["id"])
                    counts[(row["player_id"], row["event_type"], bool(row["is_private"]),
                            row["team_id"] is not None)] += 1
    if not ids:
        storage.remove(url)
        return None
    return WrittenFile(run_id, month, url, tuple(ids), dict(counts), sink.sha256.hexdigest(),
                       sink.bytes)


def verify_written(storage: ArchiveStorage, written: WrittenFile) -> VerifiedFile:
    """Read a written file back from storage and check it holds exactly what was selected.

    :raise ArchiveVerificationFailed: naming every difference found.
    """
    found: list[int] = []
    with _scanning(storage, written.url) as scan:
        for line in scan.lines:
            found.append(_decode(line)["id"])
    problems = []
    if scan.sha256 != written.sha256:
        problems.append(f"sha256 {scan.sha256} instead of {written.sha256}")
    if scan.bytes != written.bytes:
        problems.append(f"{scan.bytes} bytes instead of {written.bytes}")
    if len(found) != written.event_count:
        problems.append(f"{len(found)} lines instead of {written.event_count}")
    if set(found) != set(written.event_ids) or len(set(found)) != len(found):
        problems.append("the event ids differ from those selected")
    if problems:
        raise ArchiveVerificationFailed(
            f"archive file {written.url} failed verification ({'; '.join(problems)}); "
            "no event was deleted"
        )
    return VerifiedFile(written, utcnow())


def commit_month(
    session: Session, verified: VerifiedFile, *, hold_player_ids: Iterable[int] = ()
) -> ArchiveFile:
    """Store the manifest row, add to the archived totals and delete the events from the hot table.

    Flush only: all of it goes in the caller's transaction, so either the
    events are archived or they are all still hot.

    :raise Conflict: if a player was held meanwhile, or some of the events were
        deleted or became referenced since they were written.
    """
    written = verified.written
    now_held = sorted({key[0] for key in written.counts} & _holds(session, hold_player_ids))
    if now_held:
        raise Conflict(
            f"player(s) {', '.join(map(str, now_held))} were put on hold after {written.url} "
            "was written; nothing was archived from it"
        )
    row = ArchiveFile(
        run_id=written.run_id,
        month=written.month,
        url=written.url,
        event_count=written.event_count,
        bytes=written.bytes,
        sha256=written.sha256,
        verified_at=verified.verified_at,
    )
    session.add(row)
    session.flush()
    # Archived events stay in the monitoring rollups: they count events ever recorded.
    monitoring.note_removed(session, written.event_ids, archived=True)
    deleted = 0
    for chunk in _chunks(written.event_ids, DELETE_CHUNK):
        _keep_keys(session, chunk, row.id)
        deleted += session.execute(delete(_events).where(_events.c.id.in_(chunk))).rowcount
    if deleted != written.event_count:
        raise Conflict(
            f"{written.event_count - deleted} of the {written.event_count} events in {written.url} "
            "were deleted meanwhile; nothing was archived from it"
        )
    _add_archived_counts(session, written.counts, sign=1)
    return row


def _keep_keys(session: Session, event_ids: Sequence[int], file_id: int) -> None:
    """Copy the idempotency keys of events about to leave the hot table, so recording still sees them."""
    session.execute(
        _keys.insert().from_select(
            ["player_id", "event_type", "source_model", "source_id", "event_id", "file_id"],
            select(
                _events.c.player_id, _events.c.event_type, _events.c.source_model,
                _events.c.source_id, _events.c.id, literal_column(str(int(file_id))),
            ).where(_events.c.id.in_(event_ids)),
        )
    )


def _add_archived_counts(session: Session, counts: Mapping[CountKey, int], sign: int) -> None:
    """Add (or with ``sign=-1`` take out) event counts to the archived totals.

    :raise Conflict: if a total would go below zero: the events were never archived.
    """
    if not counts:
        return
    rows = [
        {"player_id": p, "event_type": t, "is_private": private, "is_team": team, "n": sign * n}
        for (p, t, private, team), n in sorted(counts.items())  # a fixed lock order
    ]
    insert = dialect_insert(session, _counts)
    # Many parameter sets for one statement: compiled once, not once per row count.
    session.execute(
        insert.on_conflict_do_update(
            index_elements=list(_COUNT_KEY_COLUMNS), set_={"n": _counts.c.n + insert.excluded.n}
        ),
        rows,
    )
    players = sorted({key[0] for key in counts})
    for chunk in _chunks(players, DELETE_CHUNK):
        of_players = _counts.c.player_id.in_(chunk)
        below = session.scalar(select(func.count()).where(of_players, _counts.c.n < 0))
        if below:
            raise Conflict("restoring would count more events back than were archived")
        session.execute(delete(_counts).where(of_players, _counts.c.n == 0))


def _chunks(values: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# Runs.


def refuse_while_another_runs(session: Session, *, except_run: int | None = None) -> None:
    """Refuse while an archive or restore run, or a backfill's rollback, is queued or running.

    Archival moving a run's events while a rollback deletes them would leave
    part of the run in cold storage after the rollback ended. Checked when a
    run is started or resumed, and again when a worker begins it
    (``except_run``: itself), since two starts at one moment both pass the first.

    :raise Conflict: naming that run.
    """
    busy = jobs.first_active_run(session, (*RUN_KINDS, "backfill_rollback"), except_run=except_run)
    if busy is not None:
        raise Conflict(
            f"{busy.kind.replace('_', ' ')} run {busy.id} is {busy.status}; wait for it to end or "
            "cancel it"
        )


def start_archive(
    session: Session,
    actor: Actor,
    *,
    now: datetime,
    after_days: int,
    url: str,
    hold_player_ids: Iterable[int] = (),
) -> JobRun:
    """Queue an archive run of events older than ``after_days`` before ``now`` into ``url``.

    ``now`` is kept with the run, so a resumed run archives up to the same moment.

    :raise Invalid: for an age below one day.
    :raise Conflict: while another archive or restore run is queued or running.
    """
    archive_cutoff(now, after_days)
    refuse_while_another_runs(session)
    params = {
        "now": now.astimezone(UTC).isoformat(),
        "after_days": after_days,
        "url": url,
        "hold_player_ids": sorted({int(p) for p in hold_player_ids}),
    }
    return jobs.queue_run(session, actor, "archive", params)


def start_restore(session: Session, actor: Actor, file_id: int, *, url: str) -> JobRun:
    """Queue the restore of one archive file (``url`` is the storage it is read through).

    :raise NotFound: for an unknown file.
    :raise Conflict: while another archive or restore run is queued or running.
    """
    row = _file(session, file_id)
    refuse_while_another_runs(session)
    return jobs.queue_run(
        session, actor, "archive_restore", {"file_id": file_id, "url": url}, total=row.event_count
    )


def _file(session: Session, file_id: int) -> ArchiveFile:
    row = session.get(ArchiveFile, file_id)
    if row is None:
        raise NotFound(f"archive file {file_id} does not exist")
    return row


def list_files(session: Session) -> list[ArchiveFile]:
    """Return every archive file's manifest row, oldest month first."""
    return list(session.scalars(select(ArchiveFile).order_by(ArchiveFile.month, ArchiveFile.id)))


def orphan_files(session: Session, storage: ArchiveStorage) -> list[str]:
    """Return files in storage that no manifest row names (left by a write that never committed)."""
    recorded = set(session.scalars(select(ArchiveFile.url)))
    return [url for url in storage.list_files() if url not in recorded]


# Verifying and restoring stored files.


@dataclass(frozen=True)
class FileCheck:
    file_id: int
    url: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_archive(session: Session, storage: ArchiveStorage, file_id: int) -> FileCheck:
    """Read an archive file again and check its sha256, size and line count against its manifest.

    :raise NotFound: for an unknown file.
    """
    row = _file(session, file_id)
    lines = 0
    try:
        with _scanning(storage, row.url) as scan:
            for _line in scan.lines:
                lines += 1
    except ArchiveVerificationFailed as exc:
        return FileCheck(row.id, row.url, [str(exc)])
    problems = []
    if scan.sha256 != row.sha256:
        problems.append(f"sha256 is {scan.sha256}, the manifest says {row.sha256}")
    if scan.bytes != row.bytes:
        problems.append(f"{scan.bytes} bytes, the manifest says {row.bytes}")
    if lines != row.event_count:
        problems.append(f"{lines} events, the manifest says {row.event_count}")
    return FileCheck(row.id, row.url, problems)


@dataclass(frozen=True)
class RestoreResult:
    file_id: int
    events_in_file: int
    inserted: int

    @property
    def already_present(self) -> int:
        return self.events_in_file - self.inserted

    def as_dict(self) -> dict[str, int]:
        return {"file_id": self.file_id, "events_in_file": self.events_in_file,
                "inserted": self.inserted, "already_present": self.already_present}


def restore_archive(session: Session, storage: ArchiveStorage, file_id: int) -> RestoreResult:
    """Put an archive file's events back in the hot table with their own ids; idempotent.

    The file is verified against its manifest first. Events already hot are
    skipped (``ON CONFLICT (id) DO NOTHING``) and only those inserted are taken
    out of the archived totals, so stats stay exact and a second restore
    changes nothing. Flush only: all of it goes in the caller's transaction.

    :raise NotFound: for an unknown file.
    :raise ArchiveVerificationFailed: if the file does not match its manifest.
    :raise Conflict: if an event's idempotency key is taken by another hot event.
    """
    check = verify_archive(session, storage, file_id)
    if not check.ok:
        raise ArchiveVerificationFailed(
            f"archive file {file_id} does not match its manifest: {'; '.join(check.problems)}; "
            "nothing was restored"
        )
    row = _file(session, file_id)
    inserted: Counter[CountKey] = Counter()
    total = 0
    with _scanning(storage, row.url) as scan:
        batch: list[dict[str, Any]] = []
        for line in scan.lines:
            batch.append(_decode(line))
            if len(batch) == INSERT_CHUNK:
                total += _insert_events(session, batch, inserted)
                batch = []
        total += _insert_events(session, batch, inserted)
    _add_archived_counts(session, inserted, sign=-1)
    # Back in the hot table, the events' own unique key guards them again.
    session.execute(delete(_keys).where(_keys.c.file_id == row.id))
    if row.restored_at is None:
        row.restored_at = utcnow()
    session.flush()
    return RestoreResult(row.id, row.event_count, total)


def _insert_events(session: Session, records: list[dict[str, Any]], inserted: Counter) -> int:
    if not records:
        return 0
    # Explicit ids do not move PostgreSQL's id sequence; restored ids all lie
    # below its current value (they were issued by it), so no new event takes one.
    statement = (
        dialect_insert(session, _events)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(_events.c.player_id, _events.c.event_type, _events.c.is_private,
                   _events.c.team_id)
    )
    n = 0
    # Only the rows actually inserted come back, whichever were skipped.
    for player_id, event_type, is_private, team_id in session.execute(statement, records):
        inserted[(player_id, event_type, bool(is_private), team_id is not None)] += 1
        n += 1
    return n


# Reading archived events back for a player.


@dataclass(frozen=True)
class ColdEvent(TimelineEvent):
    """An archived event read back from cold storage, shaped like a timeline row."""

    archive_file_id: int = 0
    from_cold_storage: bool = True


def archived_events_for_player(
    session: Session,
    player_id: int,
    *,
    storage: ArchiveStorage,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
) -> list[ColdEvent]:
    """Return a player's archived events, newest first, each marked ``from_cold_storage``.

    Files are read only when the archived totals say the player has archived
    events, and only until all of them are found. ``occurred_from`` is
    inclusive, ``occurred_to`` exclusive.

    :raise ArchiveVerificationFailed: if a file the player's events are in cannot be read.
    """
    expected = session.scalar(
        select(func.coalesce(func.sum(_counts.c.n), 0)).where(_counts.c.player_id == player_id)
    )
    if not expected:
        return []
    files = select(ArchiveFile).where(ArchiveFile.restored_at.is_(None))
    if occurred_from is not None:
        files = files.where(ArchiveFile.month >= f"{occurred_from.astimezone(UTC):%Y-%m}")
    if occurred_to is not None:
        files = files.where(ArchiveFile.month <= f"{occurred_to.astimezone(UTC):%Y-%m}")
    whole_history = occurred_from is None and occurred_to is None
    found: dict[int, ColdEvent] = {}
    for row in session.scalars(files.order_by(ArchiveFile.month.desc(), ArchiveFile.id.desc())):
        for record in read_player_records(storage, row.url, player_id):
            if _within(record["occurred_at"], occurred_from, occurred_to):
                found[record["id"]] = cold_event(record, row.id)
        if whole_history and len(found) >= expected:
            break
    # An event restored to the hot table is shown from there, never twice.
    for chunk in _chunks(sorted(found), DELETE_CHUNK):
        for hot_id in session.scalars(select(_events.c.id).where(_events.c.id.in_(chunk))):
            del found[hot_id]
    return sorted(found.values(), key=lambda e: (e.occurred_at, e.id), reverse=True)


def read_player_records(
    storage: ArchiveStorage, url: str, player_id: int
) -> Iterator[dict[str, Any]]:
    """Yield the records of ``player_id``'s events in one archive file, in file order.

    A record holds the event's columns by name (``"metadata"`` for its details),
    times as aware datetimes.

    :raise ArchiveVerificationFailed: if the file is missing or cannot be read.
    """
    # Keys are sorted, so "player_id" is always followed by "recorded_at": a
    # cheap byte test skips the other players' lines without parsing them.
    needle = f'"player_id":{int(player_id)},'.encode()
    with _scanning(storage, url) as scan:
        for line in scan.lines:
            if needle in line:
                record = _decode(line)
                if record["player_id"] == player_id:
                    yield record


def _within(moment: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or moment >= start) and (end is None or moment < end)


def cold_event(record: Mapping[str, Any], file_id: int) -> ColdEvent:
    """Return an archived ``record`` of file ``file_id`` as a timeline row."""
    return ColdEvent(
        id=record["id"],
        player_id=record["player_id"],
        event_type=record["event_type"],
        occurred_at=record["occurred_at"],
        recorded_at=record["recorded_at"],
        source_model=record["source_model"],
        source_id=record["source_id"],
        origin=record["origin"],
        origin_id=record["origin_id"],
        team_id=record["team_id"],
        tournament_id=record["tournament_id"],
        is_private=record["is_private"],
        details=record["metadata"],
        reverses_event_id=record["reverses_event_id"],
        archive_file_id=file_id,
    )


# Rewriting files (GDPR erasure).


@dataclass(frozen=True)
class RewrittenFile:
    file_id: int
    old_url: str
    new_url: str
    lines_changed: int


def rewrite_files(
    session: Session,
    storage: ArchiveStorage,
    transform: Callable[[dict[str, Any]], bool],
    *,
    may_change: Callable[[bytes], bool] = lambda line: True,
) -> list[RewrittenFile]:
    """Rewrite every archive file in which ``transform`` changes an event; flush only.

    ``transform`` gets each event as stored (times as ISO strings, metadata
    under ``"metadata"``), changes it in place and says whether it did; only
    lines for which the cheap byte test ``may_change`` is true are parsed for
    it. Each file is streamed into a new file next to the old one (dropped
    again if nothing changed), read back and checked, and its manifest row
    then names the new file with its new digest and size. The old files are
    the caller's to remove once the transaction commits
    (``RewrittenFile.old_url``): until then the manifest still names them, and
    a rollback leaves the new ones as orphans (``orphan_files``). Files
    already restored are rewritten too, since they still hold the events.

    :raise ArchiveVerificationFailed: if a file cannot be read or the new one
        does not read back as written.
    """
    rewritten = []
    for row in session.scalars(select(ArchiveFile).order_by(ArchiveFile.id)):
        new_url = _rewritten_url(row.url)
        changed = lines = 0
        try:
            with storage.open(new_url, "wb") as raw:
                sink = HashingSink(raw)
                with (gzip.GzipFile(fileobj=sink, mode="wb", mtime=0, filename="", compresslevel=6) as out,
                      _scanning(storage, row.url) as scan):
                    for line in scan.lines:
                        if may_change(line):
                            record = json.loads(line)
                            if transform(record):
                                changed += 1
                                line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
                        out.write(line)
                        lines += 1
        except BaseException:
            storage.remove(new_url)
            raise
        if not changed:
            storage.remove(new_url)
            continue
        count = 0
        with _scanning(storage, new_url) as scan:
            for _line in scan.lines:
                count += 1
        if scan.sha256 != sink.sha256.hexdigest() or count != lines:
            raise ArchiveVerificationFailed(
                f"the rewrite of archive file {row.id} did not read back as written; nothing changed"
            )
        rewritten.append(RewrittenFile(row.id, row.url, new_url, changed))
        row.url, row.sha256, row.bytes = new_url, sink.sha256.hexdigest(), sink.bytes
    session.flush()
    return rewritten


def _rewritten_url(url: str) -> str:
    # A fresh random suffix: the old file stays in place until the caller commits.
    stem = url.removesuffix(".jsonl.gz").split("~", 1)[0]
    return f"{stem}~{secrets.token_hex(4)}.jsonl.gz"


def scan_files(storage: ArchiveStorage, urls: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Yield (url, line) for every line of the given archive files."""
    for url in urls:
        with _scanning(storage, url) as scan:
            for line in scan.lines:
                yield url, line
