"""Backfill: the platform's history turned into activity events, in batches.

History goes through the result services live traffic uses
(``webapp.domain.results``) and through ``record_events``, so a match gives the
same events, with the same taxonomy, whether it was reported live or
backfilled: completed matches give won/lost, forfeits give forfeit events
only, no-shows never complete a tournament, team results reach the members of
the team at the time, and private tournaments give private events. A fact
already recorded (live, or by an earlier run) is a duplicate, never a second
event, so running a finished backfill again creates nothing.

Source records are read tournament by tournament in id order, and within a
tournament its registrations, then its matches, then its result, each in id
order. A batch is the next ``batch_size`` records after a position in that
order; the position after its last record is the run's checkpoint, committed
with the batch's events, their stat deltas and the batch's ledger line, so a
run stopped anywhere (even by kill -9) resumes exactly after its last
committed batch.

A source record the result services refuse (a team match whose team had no
members at the time, say) is counted as failed in its batch's ledger line and
skipped; the run goes on, and the parity check at its end flags what is
missing.

Every event a run inserts carries the run (``origin='backfill'``,
``origin_id=<run id>``). Rolling a run back deletes exactly those events, found
through the id ranges its ledger recorded, and takes their stat deltas back
out in the same transactions; it is the only way events are deleted besides
erasure and archival.

Nothing here commits: the job procedures in ``webapp.jobs.backfill`` and the
CLI own the transactions.
"""

from __future__ import annotations

from collections import Counter, defaultdict, namedtuple
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from webapp.collection import fewer_collections
from webapp.domain import archive, jobs, monitoring
from webapp.domain.audit import Actor, record_audit
from webapp.domain.errors import Conflict, Invalid
from webapp.domain.projection import (
    ProjectedEvent,
    apply_stat_deltas,
    counted_stat_deltas,
    stat_deltas,
)
from webapp.domain.recording import (
    CheckedFacts,
    ConvertedFacts,
    NewEvent,
    RecordStatus,
    check_facts,
    convert_checked,
    record_checked,
    record_converted,
    record_events,
)
from webapp.domain.results import (
    PLAYED_STATUSES,
    TeamRoster,
    match_events,
    registration_events,
    resolved_match_ids,
    resolved_result_ids,
    tournament_result_events,
    without_corrected_wins,
)
from webapp.models.activity import ActivityEvent, DataQualityFinding
from webapp.models.archive import ArchivedEventKey
from webapp.models.base import utcnow
from webapp.models.competitions import Match, Registration, Tournament, TournamentResult
from webapp.models.disputes import MatchResolution
from webapp.models.jobs import ACTIVE_STATUSES, BackfillBatch, JobRun
from webapp.models.stats import SCOPES, STAT_NAMES

DEFAULT_BATCH_SIZE = 500
DEFAULT_PAUSE_SECONDS = 0.05
DEFAULT_PEAK_WINDOW = "06:00-23:59"
DEFAULT_MAX_REQUEST_RATE = 50.0
SAMPLE_SIZE = 10
# Failure messages kept per ledger line; the count is always complete.
ERRORS_KEPT = 5
# Bound parameters per IN (...) list, well under both databases' limits.
_CHUNK = 500

# The order records are read in within a tournament.
STAGES = ("registrations", "matches", "result")
_REGISTRATIONS, _MATCHES, _RESULT = range(3)
_STAGE_MODELS = (Registration, Match, TournamentResult)
_STAGE_NOUNS = ("registration", "match", "tournament result")


def _plain_records(model: type, *shared: str) -> tuple[type, tuple[ColumnElement, ...]]:
    """Return a read-only stand-in for ``model``'s rows and the columns to read into it.

    The stand-in holds every mapped column under its attribute name, as a named
    tuple, and borrows the model's own methods and properties named in
    ``shared``, so the result services read it as they read the model. Reading
    history into it skips the ORM's bookkeeping for each object, which cost
    about as much as deriving the events.
    """
    attrs = sa_inspect(model).column_attrs
    base = namedtuple(f"Plain{model.__name__}", [attr.key for attr in attrs])
    plain = type(base.__name__, (base,), {"__slots__": (), **{n: vars(model)[n] for n in shared}})
    return plain, tuple(attr.columns[0] for attr in attrs)


# Per stage, and for a decided tournament's entrants (registrations).
_PLAIN = (
    _plain_records(Registration, "is_team"),
    _plain_records(Match, "side_entrant"),
    _plain_records(TournamentResult, "is_void"),
)

DECIDED_STATES = ("completed", "forfeit")


class BackfillRefused(Conflict):
    """A safeguard refused to start (or resume) a backfill now; nothing was started."""


# What a run covers.


@dataclass(frozen=True)
class BackfillScope:
    """Which history a run covers: all, a tournament id range, tournaments started before a date."""

    tournament_from: int | None = None
    tournament_to: int | None = None
    # Whole tournaments that started before this moment: a tournament is
    # backfilled with all its records or not at all, and what of it was also
    # recorded live is a duplicate.
    before: datetime | None = None

    def validated(self) -> BackfillScope:
        """Return the scope, or raise ``Invalid`` naming what is wrong with it."""
        for name in ("tournament_from", "tournament_to"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise Invalid(f"{name} must be a tournament id (a positive integer), not {value!r}")
        if (
            self.tournament_from is not None
            and self.tournament_to is not None
            and self.tournament_from > self.tournament_to
        ):
            raise Invalid(
                f"tournament_from ({self.tournament_from}) is after "
                f"tournament_to ({self.tournament_to})"
            )
        if self.before is not None and self.before.tzinfo is None:
            raise Invalid("before must carry a timezone")
        return self

    def as_params(self) -> dict[str, Any]:
        return {
            "tournament_from": self.tournament_from,
            "tournament_to": self.tournament_to,
            "before": self.before.astimezone(UTC).isoformat() if self.before else None,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> BackfillScope:
        params = params or {}
        before = params.get("before")
        return cls(
            tournament_from=params.get("tournament_from"),
            tournament_to=params.get("tournament_to"),
            before=datetime.fromisoformat(before) if before else None,
        ).validated()

    def describe(self) -> str:
        parts = []
        if self.tournament_from is not None or self.tournament_to is not None:
            parts.append(
                f"tournaments {self.tournament_from or 'first'} to {self.tournament_to or 'last'}"
            )
        if self.before is not None:
            parts.append(
                f"tournaments that started before {self.before.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
            )
        return ", ".join(parts) or "all history"

    def conditions(self, tournament_id: ColumnElement) -> list[ColumnElement[bool]]:
        """SQL conditions keeping the rows whose ``tournament_id`` is in scope."""
        found: list[ColumnElement[bool]] = []
        if self.tournament_from is not None:
            found.append(tournament_id >= self.tournament_from)
        if self.tournament_to is not None:
            found.append(tournament_id <= self.tournament_to)
        if self.before is not None:
            found.append(
                tournament_id.in_(select(Tournament.id).where(Tournament.starts_at < self.before))
            )
        return found


@dataclass(frozen=True, order=True)
class Position:
    """A place in the reading order: after record ``after_id`` of ``stage`` of ``tournament_id``."""

    tournament_id: int
    stage: int
    after_id: int

    def as_checkpoint(self) -> dict[str, Any]:
        return {
            "tournament_id": self.tournament_id,
            "stage": STAGES[self.stage],
            "after_id": self.after_id,
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any] | None) -> Position:
        if not checkpoint or "tournament_id" not in checkpoint:
            return START
        return cls(
            int(checkpoint["tournament_id"]),
            STAGES.index(checkpoint["stage"]),
            int(checkpoint["after_id"]),
        )


START = Position(0, -1, 0)


def count_source_rows(session: Session, scope: BackfillScope) -> int:
    """Count the registrations, matches and results in scope: the records a run reads."""
    return sum(
        session.scalar(
            select(func.count()).select_from(model).where(*scope.conditions(model.tournament_id))
        )
        or 0
        for model in _STAGE_MODELS
    )


def _after(model: type, stage: int, position: Position) -> ColumnElement[bool]:
    tournament_id = model.tournament_id
    if stage < position.stage:
        return tournament_id > position.tournament_id
    if stage > position.stage:
        return tournament_id >= position.tournament_id
    # The redundant lower bound lets the database start its index scan at the position.
    return and_(
        tournament_id >= position.tournament_id,
        or_(tournament_id > position.tournament_id, model.id > position.after_id),
    )


def _up_to(model: type, last: tuple[int, int]) -> ColumnElement[bool]:
    """Rows at or before ``(tournament_id, id)`` ``last`` in the reading order."""
    tournament_id, record_id = last
    return and_(
        model.tournament_id <= tournament_id,
        or_(model.tournament_id < tournament_id, model.id <= record_id),
    )


def _read_batch(
    session: Session, scope: BackfillScope, position: Position, size: int
) -> list[tuple[Position, Any]]:
    """Return the next ``size`` source records after ``position``, each with its own position."""
    keys: list[tuple[int, int, int]] = []
    for stage, model in enumerate(_STAGE_MODELS):
        keys.extend(
            (tournament_id, stage, record_id)
            for tournament_id, record_id in session.execute(
                select(model.tournament_id, model.id)
                .where(_after(model, stage, position), *scope.conditions(model.tournament_id))
                .order_by(model.tournament_id, model.id)
                .limit(size)
            )
        )
    # Plain tuples sort in the reading order too, and far quicker than positions.
    keys.sort()
    del keys[size:]
    records: dict[tuple[int, int], Any] = {}
    for stage, model in enumerate(_STAGE_MODELS):
        chosen = {record_id: tournament_id for tournament_id, s, record_id in keys if s == stage}
        if not chosen:
            continue
        last = max((tournament_id, record_id) for record_id, tournament_id in chosen.items())
        # Each stage's chosen records are a run of its reading order, read as a
        # range rather than as lists of ids; a row added inside the range since
        # the keys were read is left out, as it would be from such a list.
        plain, columns = _PLAIN[stage]
        for row in session.execute(
            select(*columns).where(
                _after(model, stage, position),
                _up_to(model, last),
                *scope.conditions(model.tournament_id),
            )
        ):
            record = plain._make(row)
            if record.id in chosen:
                records[(stage, record.id)] = record
    return [
        (Position(tournament_id, stage, record_id), records[(stage, record_id)])
        for tournament_id, stage, record_id in keys
    ]


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# Deriving events through the result services.


@dataclass
class _RowFacts:
    """What one source record gives: its events, or why it gives none."""

    position: Position
    facts: list[NewEvent] = field(default_factory=list)
    skipped: bool = False
    rejected_forfeit: int = 0
    rejected_no_show: int = 0
    error: str | None = None


@dataclass
class _Derived:
    rows: list[_RowFacts]
    tournaments: dict[int, Tournament]


def _derive(session: Session, records: list[tuple[Position, Any]], run_id: int | None) -> _Derived:
    """Derive the events of a batch of source records, rosters loaded once for the batch."""
    tournament_ids = sorted({key.tournament_id for key, _ in records})
    tournaments: dict[int, Tournament] = {}
    for chunk in _chunks(tournament_ids):
        tournaments.update(
            (t.id, t) for t in session.scalars(select(Tournament).where(Tournament.id.in_(chunk)))
        )
    decided = sorted({key.tournament_id for key, _ in records if key.stage == _RESULT})
    entries: dict[int, list[Any]] = defaultdict(list)
    plain, columns = _PLAIN[_REGISTRATIONS]
    for chunk in _chunks(decided):
        for row in session.execute(
            select(*columns)
            .where(Registration.tournament_id.in_(chunk))
            .order_by(Registration.id)
        ):
            registration = plain._make(row)
            entries[registration.tournament_id].append(registration)
    team_ids: set[int] = {r.team_id for regs in entries.values() for r in regs if r.team_id}
    for key, record in records:
        if key.stage == _REGISTRATIONS:
            team_ids.add(record.team_id)
        elif key.stage == _MATCHES:
            team_ids.update((record.side_a_team_id, record.side_b_team_id))
        else:
            team_ids.add(record.winner_team_id)
    team_ids.discard(None)
    roster = TeamRoster.load(session, team_ids)

    rows = []
    for key, record in records:
        row = _RowFacts(key)
        tournament = tournaments[key.tournament_id]
        try:
            if key.stage == _REGISTRATIONS:
                row.facts = registration_events(
                    record, tournament, roster, origin="backfill", origin_id=run_id
                )
            elif key.stage == _MATCHES:
                if record.state in DECIDED_STATES:
                    row.facts = match_events(record, roster, origin="backfill", origin_id=run_id)
                    # A forfeit is never a match won or lost: only forfeit events.
                    row.rejected_forfeit = int(record.state == "forfeit")
                else:  # scheduled, disputed or void
                    row.skipped = True
            else:
                entrants = entries[key.tournament_id]
                row.facts = tournament_result_events(
                    record, tournament, entrants, roster, origin="backfill", origin_id=run_id
                )
                row.rejected_no_show = sum(r.status not in PLAYED_STATUSES for r in entrants)
        except Invalid as exc:
            row.facts = []
            row.error = f"{_STAGE_NOUNS[key.stage]} {record.id}: {exc}"
        rows.append(row)
    return _Derived(rows, tournaments)


def _without_resolved(
    session: Session, records: list[tuple[Position, Any]], rows: list[_RowFacts]
) -> list[_RowFacts]:
    """Return ``rows`` less what dispute resolutions have corrected; the rows given are not changed.

    A match a resolution corrected has the resolution's own events and gives
    none here; nor does a tournament result's winner that a resolution decided
    (the win would count twice). Looked up in the transaction that records the
    batch, so a resolution committed after the batch was read still counts.
    """
    if not _any_resolution(session):
        return rows
    resolved = resolved_match_ids(
        session, [record.id for key, record in records if key.stage == _MATCHES]
    )
    resolved_results = resolved_result_ids(
        session, [record.id for key, record in records if key.stage == _RESULT]
    )
    settled = []
    for (key, record), row in zip(records, rows, strict=True):
        if key.stage == _MATCHES and record.id in resolved:
            row = _RowFacts(key, skipped=True)
        elif key.stage == _RESULT:
            row = replace(row, facts=without_corrected_wins(row.facts, resolved_results))
        settled.append(row)
    return settled


# Running batches.


@dataclass(frozen=True)
class BatchCounts:
    """What a batch (or a whole run) did with the records it read."""

    rows_read: int = 0
    events_inserted: int = 0
    duplicates: int = 0
    rejected_forfeit: int = 0
    rejected_no_show: int = 0
    failed: int = 0
    skipped_undecided: int = 0

    def __add__(self, other: BatchCounts) -> BatchCounts:
        return BatchCounts(*(getattr(self, f) + getattr(other, f) for f in _COUNT_FIELDS))

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in _COUNT_FIELDS}


_COUNT_FIELDS = tuple(BatchCounts.__dataclass_fields__)


@dataclass(frozen=True)
class BatchLine:
    """One line of a run's ledger."""

    batch_no: int
    counts: BatchCounts
    first_event_id: int | None
    last_event_id: int | None
    position: Position | None
    started_at: datetime
    finished_at: datetime | None
    errors: list[str]

    @property
    def committed(self) -> bool:
        """False for an attempt that failed and was rolled back: none of its work is stored."""
        return self.position is not None

    @classmethod
    def of(cls, line: BackfillBatch) -> BatchLine:
        checkpoint = line.checkpoint_after
        counts = BatchCounts(
            rows_read=line.rows_read,
            events_inserted=line.events_inserted,
            duplicates=line.duplicates,
            rejected_forfeit=line.rejected_forfeit,
            rejected_no_show=line.rejected_no_show,
            failed=line.failed,
            skipped_undecided=int((checkpoint or {}).get("skipped_undecided", 0)),
        )
        return cls(
            batch_no=line.batch_no,
            counts=counts,
            first_event_id=line.first_event_id,
            last_event_id=line.last_event_id,
            position=Position.from_checkpoint(checkpoint) if checkpoint else None,
            started_at=line.started_at,
            finished_at=line.finished_at,
            errors=line.error.split("\n") if line.error else [],
        )


@dataclass(frozen=True)
class PreparedBatch:
    """A batch read from the source, its events derived and checked on their own, not yet recorded.

    Preparing only reads, so it may happen on another connection, and ahead of
    the transaction that records it (see ``webapp.jobs.backfill``).
    """

    records: list[tuple[Position, Any]]
    rows: list[_RowFacts]
    # The facts of ``rows``, in order, as ``check_facts`` accepted them.
    checked: CheckedFacts
    started_at: datetime

    @property
    def after(self) -> Position:
        """The position after the batch's last record: its checkpoint."""
        return self.records[-1][0]


def prepare_batch(
    session: Session, run_id: int, scope: BackfillScope, position: Position, batch_size: int
) -> PreparedBatch | None:
    """Read the next ``batch_size`` records after ``position`` and derive their events; ``None`` at the end."""
    started_at = utcnow()
    records = _read_batch(session, scope, position, batch_size)
    if not records:
        return None
    rows, checked = _checked(_derive(session, records, run_id).rows)
    return PreparedBatch(records, rows, checked, started_at)


def record_batch(session: Session, run_id: int, batch_no: int, prepared: PreparedBatch) -> BatchLine:
    """Record a prepared batch's events and its ledger line (flush only).

    Source records the result services refuse are counted as failed and
    skipped; any other error propagates and the caller's transaction must be
    rolled back. ``prepared`` is not changed, so the batch can be recorded
    again after such a rollback.
    """
    records = prepared.records
    rows = _without_resolved(session, records, prepared.rows)
    checked = prepared.checked
    if rows is not prepared.rows:
        checked = checked.subset([fact for row in rows for fact in row.facts])
    inserted_ids, duplicates, rows = _record(session, rows, checked)
    counts = _row_counts(rows, len(records))
    counts = replace(counts, events_inserted=len(inserted_ids), duplicates=duplicates)
    return _add_ledger_line(
        session, run_id, batch_no, counts, inserted_ids, prepared.after, prepared.started_at,
        [row.error for row in rows if row.error],
    )


def _row_counts(rows: list[_RowFacts], rows_read: int) -> BatchCounts:
    """What the rows of a batch say of themselves: rules applied, failures, undecided matches."""
    return BatchCounts(
        rows_read=rows_read,
        rejected_forfeit=sum(row.rejected_forfeit for row in rows if not row.error),
        rejected_no_show=sum(row.rejected_no_show for row in rows if not row.error),
        failed=sum(1 for row in rows if row.error),
        skipped_undecided=sum(row.skipped for row in rows),
    )


def _add_ledger_line(
    session: Session,
    run_id: int,
    batch_no: int,
    counts: BatchCounts,
    inserted_ids: list[int],
    after: Position,
    started_at: datetime,
    failures: list[str],
) -> BatchLine:
    line = BackfillBatch(
        run_id=run_id,
        batch_no=batch_no,
        **{f: getattr(counts, f) for f in _COUNT_FIELDS if f != "skipped_undecided"},
        first_event_id=min(inserted_ids) if inserted_ids else None,
        last_event_id=max(inserted_ids) if inserted_ids else None,
        # The ledger has no column for undecided matches; their count rides with the position.
        checkpoint_after={**after.as_checkpoint(), "skipped_undecided": counts.skipped_undecided},
        started_at=started_at,
        finished_at=utcnow(),
        error="\n".join(failures[:ERRORS_KEPT]) or None,
    )
    session.add(line)
    session.flush()
    return BatchLine.of(line)


@dataclass(frozen=True)
class PackedBatch:
    """A prepared batch as its events' driver values and its rows' counts.

    What a batch prepared in another process comes back as (see
    ``webapp.jobs.preparation``): the facts themselves would cost more to send
    than to derive again. ``record_packed_batch`` records it when nothing
    needs the facts; otherwise the batch is prepared again where it is
    recorded, from ``start``.
    """

    start: Position
    after: Position
    started_at: datetime
    # The batch's matches and tournament results, for what dispute resolutions corrected.
    match_ids: list[int]
    result_ids: list[int]
    counts: BatchCounts
    failures: list[str]
    converted: ConvertedFacts


def pack_batch(prepared: PreparedBatch, start: Position, dialect: Dialect) -> PackedBatch | None:
    """Pack a batch prepared after ``start`` for ``dialect``; ``None`` if its facts cannot be converted ahead."""
    converted = convert_checked(prepared.checked, dialect)
    if converted is None:
        return None
    rows = prepared.rows
    return PackedBatch(
        start=start,
        after=prepared.after,
        started_at=prepared.started_at,
        match_ids=[key.after_id for key, _ in prepared.records if key.stage == _MATCHES],
        result_ids=[key.after_id for key, _ in prepared.records if key.stage == _RESULT],
        counts=_row_counts(rows, len(prepared.records)),
        failures=[row.error for row in rows if row.error],
        converted=converted,
    )


def record_packed_batch(session: Session, run_id: int, batch_no: int, packed: PackedBatch) -> BatchLine | None:
    """Record a packed batch and its ledger line (flush only) when every event is new and passes its checks.

    Otherwise return ``None`` with nothing written, and the batch is to be
    prepared again and recorded by ``record_batch``: a dispute resolution has
    corrected one of its records, an event is a repeat, or recording refuses
    one and must say which record it came from.
    """
    if _any_resolved(session, packed.match_ids, packed.result_ids):
        return None
    inserted_ids = record_converted(session, packed.converted)
    if inserted_ids is None:
        return None
    return _add_ledger_line(
        session, run_id, batch_no, replace(packed.counts, events_inserted=len(inserted_ids)), inserted_ids,
        packed.after, packed.started_at, packed.failures,
    )


def _any_resolved(session: Session, match_ids: list[int], result_ids: list[int]) -> bool:
    if not _any_resolution(session):
        return False
    return bool(resolved_match_ids(session, match_ids) or resolved_result_ids(session, result_ids))


def _any_resolution(session: Session) -> bool:
    # Until a dispute resolution has corrected some match, there is nothing to
    # look up, and the lookups' long id lists cost as much as the batch's reading.
    return session.scalar(select(MatchResolution.id).limit(1)) is not None


def process_batch(
    session: Session,
    run_id: int,
    scope: BackfillScope,
    position: Position,
    batch_size: int,
    batch_no: int,
) -> BatchLine | None:
    """Prepare and record the next batch after ``position`` in the caller's transaction (flush only).

    Returns ``None`` when no record is left; otherwise as ``record_batch``.
    """
    prepared = prepare_batch(session, run_id, scope, position, batch_size)
    return None if prepared is None else record_batch(session, run_id, batch_no, prepared)


def _checked(rows: list[_RowFacts]) -> tuple[list[_RowFacts], CheckedFacts]:
    """Check the rows' facts on their own (``check_facts``); return the rows and the facts accepted.

    A row with a fact refused comes back as a new row carrying the error, and
    none of its facts are kept: as when recording refuses it (``_record``).
    """
    try:
        return rows, check_facts([fact for row in rows for fact in row.facts])
    except Invalid:
        settled = []
        for row in rows:
            if row.facts:
                try:
                    check_facts(row.facts)
                except Invalid as exc:
                    row = replace(row, facts=[], error=_refused(row, exc))
            settled.append(row)
        return settled, check_facts([fact for row in settled for fact in row.facts])


def _refused(row: _RowFacts, exc: Invalid) -> str:
    return f"{_STAGE_NOUNS[row.position.stage]} {row.position.after_id}: {exc}"


def _record(
    session: Session, rows: list[_RowFacts], checked: CheckedFacts
) -> tuple[list[int], int, list[_RowFacts]]:
    """Record the rows' facts (``checked``); return the ids inserted, the number of duplicates and the rows.

    ``record_checked`` checks every fact against the database before writing
    any, so when it refuses the batch, nothing was written and the rows can be
    recorded one by one to find the ones at fault: those come back as new rows
    carrying their error. The rows given are not changed, so a batch can be
    recorded again after a rollback.
    """
    try:
        outcomes = record_checked(session, checked).outcomes
    except Invalid:
        outcomes, settled = [], []
        for row in rows:
            if row.facts:
                try:
                    outcomes.extend(record_events(session, row.facts).outcomes)
                except Invalid as exc:
                    row = replace(row, error=_refused(row, exc))
            settled.append(row)
        rows = settled
    inserted = [o.event_id for o in outcomes if o.status is RecordStatus.RECORDED]
    # A conflict is a repeat too: the stored event stands and a finding records the difference.
    return inserted, len(outcomes) - len(inserted), rows


def record_failed_attempt(session: Session, run_id: int, batch_no: int, error: str) -> BatchLine:
    """Note in the ledger that batch ``batch_no`` failed and was rolled back (flush only)."""
    line = BackfillBatch(
        run_id=run_id,
        batch_no=batch_no,
        rows_read=0,
        events_inserted=0,
        duplicates=0,
        rejected_forfeit=0,
        rejected_no_show=0,
        failed=0,
        checkpoint_after=None,
        started_at=utcnow(),
        finished_at=None,
        error=error,
    )
    session.add(line)
    session.flush()
    return BatchLine.of(line)


def ledger(session: Session, run_id: int) -> list[BatchLine]:
    """Return a run's ledger lines in batch order."""
    return [
        BatchLine.of(line)
        for line in session.scalars(
            select(BackfillBatch)
            .where(BackfillBatch.run_id == run_id)
            .order_by(BackfillBatch.batch_no)
        )
    ]


def ledger_totals(lines: Iterable[BatchLine]) -> BatchCounts:
    """Sum the committed lines of a ledger."""
    total = BatchCounts()
    for line in lines:
        if line.committed:
            total = total + line.counts
    return total


def next_batch_no(session: Session, run_id: int) -> int:
    return (
        session.scalar(
            select(func.max(BackfillBatch.batch_no)).where(BackfillBatch.run_id == run_id)
        )
        or 0
    ) + 1


# The dry run.


@dataclass(frozen=True)
class BackfillPreview:
    """What a backfill of ``scope`` would do now, worked out without writing anything."""

    scope: BackfillScope
    counts: BatchCounts
    events_by_type: dict[str, int]
    players_affected: int
    # Summed over players: {scope: {stat: change}}.
    stat_changes: dict[str, dict[str, int]]
    sample: list[NewEvent]
    failures: list[str]

    @property
    def events_to_create(self) -> int:
        return self.counts.events_inserted


def preview(
    session: Session,
    scope: BackfillScope,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    sample_size: int = SAMPLE_SIZE,
) -> BackfillPreview:
    """Work out what a backfill of ``scope`` would create, by the same reading and rules.

    Only reads; the caller ends the transaction.
    """
    scope.validated()
    _check_batch_size(batch_size)
    with fewer_collections():
        return _preview(session, scope, batch_size, sample_size)


def _preview(
    session: Session, scope: BackfillScope, batch_size: int, sample_size: int
) -> BackfillPreview:
    position, counts = START, BatchCounts()
    delta_counts: Counter[tuple[int, str, bool, bool]] = Counter()
    sample: list[NewEvent] = []
    failures: list[str] = []
    # Before any backfill, and with no live result yet, nothing from a source
    # model is stored, and its facts' keys need not be looked up.
    has_events: dict[str, bool] = {}
    while records := _read_batch(session, scope, position, batch_size):
        derived = _derive(session, records, None)
        # Refused facts fail their rows, checked before the resolutions as in a run.
        rows = _without_resolved(session, records, _checked(derived.rows)[0])
        private = {t.id: t.is_private for t in derived.tournaments.values()}
        facts = 0
        first_by_key: dict[tuple, NewEvent] = {}
        for row in rows:
            facts += len(row.facts)
            for fact in row.facts:
                first_by_key.setdefault(fact.key, fact)
        for source_model in {key[2] for key in first_by_key}.difference(has_events):
            has_events[source_model] = _any_event_from(session, source_model)
        stored = _stored_keys(
            session, [key for key in first_by_key if has_events[key[2]]]
        )
        new = 0
        for key, fact in first_by_key.items():
            if key in stored:
                continue
            new += 1
            is_private = fact.is_private or bool(fact.tournament_id and private[fact.tournament_id])
            delta_counts[(key[0], key[1], fact.team_id is not None, is_private)] += 1
            if len(sample) < sample_size:
                sample.append(fact)
        errors = [row.error for row in rows if row.error]
        failures.extend(errors[: max(0, ERRORS_KEPT * 2 - len(failures))])
        counts = counts + BatchCounts(
            rows_read=len(records),
            events_inserted=new,
            duplicates=facts - new,
            rejected_forfeit=sum(row.rejected_forfeit for row in rows if not row.error),
            rejected_no_show=sum(row.rejected_no_show for row in rows if not row.error),
            failed=len(errors),
            skipped_undecided=sum(row.skipped for row in rows),
        )
        position = records[-1][0]
    by_type: Counter[str] = Counter()
    changes = {s: dict.fromkeys(STAT_NAMES, 0) for s in SCOPES}
    for (_player, event_type, _team, _private), n in delta_counts.items():
        by_type[event_type] += n
    for (_player, stat_scope), deltas in counted_stat_deltas(delta_counts).items():
        for stat, delta in deltas.items():
            changes[stat_scope][stat] += delta
    return BackfillPreview(
        scope=scope,
        counts=counts,
        events_by_type=dict(sorted(by_type.items())),
        players_affected=len({player for player, *_ in delta_counts}),
        stat_changes={s: {k: v for k, v in c.items() if v} for s, c in changes.items()},
        sample=sample,
        failures=failures,
    )


def _any_event_from(session: Session, source_model: str) -> bool:
    """Say whether any event, hot or archived, comes from a record of ``source_model``."""
    return any(
        session.scalar(select(table.c.source_model).where(table.c.source_model == source_model).limit(1))
        for table in (ActivityEvent.__table__, ArchivedEventKey.__table__)
    )


def _stored_keys(session: Session, keys: Iterable[tuple]) -> set[tuple]:
    """Return which of the idempotency keys are already stored, hot or archived.

    The keys are joined to each table's key index as a list of rows written out
    for the driver: SQLAlchemy's tuple IN costs more CPU to expand than the
    lookup takes, and SQLite answers it by scanning the whole index.
    """
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    found: set[tuple] = set()
    for table in (ActivityEvent.__tablename__, ArchivedEventKey.__tablename__):
        for chunk in _chunks(sorted(set(keys) - found), _KEYS_PER_LOOKUP):
            if postgres:
                sql = _STORED_KEYS_POSTGRES.format(table=table)
                params: Any = {
                    name: [key[i] for key in chunk] for i, name in enumerate(_KEY_PARTS)
                }
            else:
                sql = _stored_keys_sqlite(table, len(chunk))
                params = tuple(chain.from_iterable(chunk))
            found.update(map(tuple, connection.exec_driver_sql(sql, params)))
    return found


# Keys per lookup: four parameters each stays under SQLite's variable limit.
_KEYS_PER_LOOKUP = 2_000
_KEY_PARTS = ("players", "types", "models", "sources")
_STORED_KEYS_POSTGRES = (
    "SELECT e.player_id, e.event_type, e.source_model, e.source_id FROM {table} AS e "
    "JOIN unnest(%(players)b::bigint[], %(types)b::text[], %(models)b::text[], "
    "%(sources)b::bigint[]) AS k(player_id, event_type, source_model, source_id) "
    "ON e.player_id = k.player_id AND e.event_type = k.event_type "
    "AND e.source_model = k.source_model AND e.source_id = k.source_id"
)


@lru_cache(maxsize=16)
def _stored_keys_sqlite(table: str, n: int) -> str:
    rows = ", ".join(["(?, ?, ?, ?)"] * n)
    return (
        f"SELECT e.player_id, e.event_type, e.source_model, e.source_id "
        f"FROM (VALUES {rows}) AS k JOIN {table} AS e ON e.player_id = k.column1 "
        "AND e.event_type = k.column2 AND e.source_model = k.column3 AND e.source_id = k.column4"
    )


# Safeguards and starting.


@dataclass(frozen=True)
class Safeguards:
    """The conditions a backfill starts under, and whether staff overrode the peak window."""

    now: datetime
    peak_window: str = DEFAULT_PEAK_WINDOW
    request_rate: float = 0.0
    max_request_rate: float = DEFAULT_MAX_REQUEST_RATE
    force: bool = False


def current_safeguards(
    settings: Mapping[str, Any], request_rate: float, *, force: bool
) -> Safeguards:
    """Return the safeguards a backfill starts under now, from the app's ``BACKFILL_*`` settings."""
    return Safeguards(
        now=datetime.now(UTC),
        peak_window=settings["BACKFILL_PEAK_WINDOW"],
        request_rate=request_rate,
        max_request_rate=settings["BACKFILL_MAX_REQUEST_RATE"],
        force=force,
    )


def parse_window(window: str) -> tuple[time, time] | None:
    """Parse ``"HH:MM-HH:MM"`` (UTC, both minutes included); ``"off"`` means no peak window."""
    if window.strip().lower() in ("", "off", "none"):
        return None
    try:
        start, end = (time.fromisoformat(part.strip()) for part in window.split("-"))
    except ValueError:
        raise Invalid(
            f"peak window must be HH:MM-HH:MM in UTC (or 'off'), not {window!r}"
        ) from None
    return start, end


def in_peak_window(now: datetime, window: str) -> bool:
    """Say whether ``now`` falls inside ``window``; a window may wrap past midnight."""
    bounds = parse_window(window)
    if bounds is None:
        return False
    start, end = bounds
    minute = now.astimezone(UTC).time().replace(second=0, microsecond=0)
    if start <= end:
        return start <= minute <= end
    return minute >= start or minute <= end


def check_safeguards(safeguards: Safeguards) -> None:
    """Refuse inside the peak window (unless forced) and whenever traffic is above the limit.

    :raise BackfillRefused: saying which safeguard refused and what to do.
    """
    if in_peak_window(safeguards.now, safeguards.peak_window) and not safeguards.force:
        raise BackfillRefused(
            f"it is {safeguards.now.astimezone(UTC):%H:%M} UTC, inside the peak window "
            f"{safeguards.peak_window} UTC; start the backfill outside it, "
            "or override the peak window explicitly"
        )
    if safeguards.request_rate > safeguards.max_request_rate:
        raise BackfillRefused(
            f"the platform is serving {safeguards.request_rate:.1f} requests/s, "
            "above the backfill limit "
            f"of {safeguards.max_request_rate:g}/s; try again when traffic is lower"
        )


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise Invalid(f"batch size must be a positive integer, not {batch_size!r}")


def _refuse_while_another_runs(session: Session, except_run: int | None = None) -> None:
    busy = jobs.first_active_run(session, ("backfill", "backfill_rollback"), except_run=except_run)
    if busy is not None:
        raise Conflict(
            f"{busy.kind.replace('_', ' ')} run {busy.id} is {busy.status}; "
            "wait for it to end or cancel it "
            "(a run whose worker died is marked failed once its heartbeat is stale)"
        )


def start_backfill(
    session: Session,
    actor: Actor,
    scope: BackfillScope,
    *,
    safeguards: Safeguards,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pause_seconds: float = DEFAULT_PAUSE_SECONDS,
    dry_run: BackfillPreview | None = None,
    confirmed_events: int | None = None,
) -> JobRun:
    """Queue a backfill run if the safeguards allow it; the caller runs or enqueues it after commit.

    ``dry_run`` is the ``preview`` of ``scope`` the caller took just before its
    unit of work, in a read transaction of its own: a dry run reads the whole
    history in scope, and doing it here would hold the write lock (all of
    SQLite's) for as long. Given one, the run's total comes from it and nothing
    here reads the source tables. ``confirmed_events`` is the number of events
    staff typed to confirm (the dashboard asks for it); it must equal what that
    dry run would create, so a history that changed since the page showed its
    count is refused.

    :raise BackfillRefused: inside the peak window without force, or above the request-rate limit.
    :raise Invalid: for a bad scope or batch size, or a confirmation that does not match.
    :raise Conflict: while another backfill or rollback is queued or running.
    :raise ValueError: for a confirmation without a dry run, or a dry run of another scope.
    """
    scope.validated()
    _check_batch_size(batch_size)
    if pause_seconds < 0:
        raise Invalid(f"the pause between batches cannot be negative ({pause_seconds})")
    if dry_run is not None and dry_run.scope != scope:
        raise ValueError(f"the dry run covers {dry_run.scope.describe()}, not {scope.describe()}")
    if confirmed_events is not None and dry_run is None:
        raise ValueError("a confirmed number of events needs the dry run it was checked against")
    check_safeguards(safeguards)
    _refuse_while_another_runs(session)
    if confirmed_events is not None and confirmed_events != dry_run.events_to_create:
        raise Invalid(
            f"the confirmation says {confirmed_events:,} events, but the backfill would create "
            f"{dry_run.events_to_create:,}; nothing was started"
        )
    params = {
        "scope": scope.as_params(),
        "batch_size": batch_size,
        "pause_seconds": pause_seconds,
        "forced_in_peak_window": safeguards.force
        and in_peak_window(safeguards.now, safeguards.peak_window),
        "request_rate_at_start": round(safeguards.request_rate, 2),
    }
    total = count_source_rows(session, scope) if dry_run is None else dry_run.counts.rows_read
    return jobs.queue_run(session, actor, "backfill", params, total=total)


def resume_backfill(
    session: Session, actor: Actor, run_id: int, *, safeguards: Safeguards
) -> JobRun:
    """Queue a failed or cancelled backfill again, to continue from its checkpoint.

    :raise BackfillRefused: as for starting.
    :raise Conflict: if the run was rolled back, or another backfill or rollback is active.
    """
    _backfill_run(session, run_id)
    check_safeguards(safeguards)
    if rollbacks_of(session, run_id):
        raise Conflict(
            f"backfill run {run_id} was rolled back; start a new backfill instead of resuming it"
        )
    _refuse_while_another_runs(session, except_run=run_id)
    return jobs.resume_run(session, actor, run_id)


def _backfill_run(session: Session, run_id: int) -> JobRun:
    run = jobs.get_run(session, run_id)
    if run.kind != "backfill":
        raise Invalid(f"job run {run_id} is a {run.kind} run, not a backfill")
    return run


# Parity and reports.


@dataclass(frozen=True)
class ParityCheck:
    """One count the source tables imply, against what the events table holds."""

    name: str
    expected: int
    found: int

    @property
    def ok(self) -> bool:
        return self.expected == self.found

    def describe(self) -> str:
        return f"{self.name}: expected {self.expected:,}, found {self.found:,}"


@dataclass(frozen=True)
class ParityReport:
    checks: list[ParityCheck]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def flags(self) -> list[str]:
        return [check.describe() for check in self.checks if not check.ok]

    def as_list(self) -> list[dict[str, Any]]:
        # A list, not a mapping: PostgreSQL's JSONB would not keep the checks' order.
        return [{"check": c.name, "expected": c.expected, "found": c.found} for c in self.checks]

    @classmethod
    def from_list(cls, stored: list[dict[str, Any]]) -> ParityReport:
        return cls([ParityCheck(c["check"], c["expected"], c["found"]) for c in stored])


def parity_check(session: Session, run_id: int) -> ParityReport:
    """Compare the source tables in the run's scope with the events stored for them.

    Coverage counts events of any origin, since what the run found already
    recorded is a duplicate: completed matches × 2 sides should each have a
    match_won and a match_lost, and so on. Rule counts (forfeits given won/lost,
    no-shows given a completion) look at the run's own events.
    """
    run = _backfill_run(session, run_id)
    scope = BackfillScope.from_params(run.params.get("scope"))
    lines = ledger(session, run_id)
    totals = ledger_totals(lines)
    events = ActivityEvent.__table__
    of_run = and_(events.c.origin == "backfill", events.c.origin_id == run_id)
    run_events = func.sum(case((of_run, 1), else_=0))

    matches = dict(
        session.execute(
            select(Match.state, func.count())
            .where(*scope.conditions(Match.tournament_id))
            .group_by(Match.state)
        ).all()
    )
    match_events_found: dict[tuple[str, str], tuple[int, int]] = {
        (state, event_type): (sources, int(own or 0))
        for state, event_type, sources, own in session.execute(
            select(
                Match.state, events.c.event_type, func.count(func.distinct(Match.id)), run_events
            )
            .join(events, and_(events.c.source_model == "match", events.c.source_id == Match.id))
            .where(*scope.conditions(Match.tournament_id))
            .group_by(Match.state, events.c.event_type)
        )
    }

    decided = Registration.tournament_id.in_(select(TournamentResult.tournament_id))
    played = Registration.status.in_(PLAYED_STATUSES)
    played_col, decided_col = case((played, 1), else_=0), case((decided, 1), else_=0)
    registrations = {
        (bool(p), bool(d)): n
        for p, d, n in session.execute(
            select(played_col, decided_col, func.count())
            .where(*scope.conditions(Registration.tournament_id))
            .group_by(played_col, decided_col)
        )
    }
    registration_events_found = {
        (bool(p), bool(d), event_type): (sources, int(own or 0))
        for p, d, event_type, sources, own in session.execute(
            select(
                played_col,
                decided_col,
                events.c.event_type,
                func.count(func.distinct(Registration.id)),
                run_events,
            )
            .join(
                events,
                and_(
                    events.c.source_model == "registration", events.c.source_id == Registration.id
                ),
            )
            .where(*scope.conditions(Registration.tournament_id))
            .group_by(played_col, decided_col, events.c.event_type)
        )
    }
    # A void result (its final voided by a resolution) names no winner to give a win to.
    decided_result = TournamentResult.status == "decided"
    results = (
        session.scalar(
            select(func.count())
            .select_from(TournamentResult)
            .where(decided_result, *scope.conditions(TournamentResult.tournament_id))
        )
        or 0
    )
    results_won = (
        session.scalar(
            select(func.count(func.distinct(TournamentResult.id)))
            .join(
                events,
                and_(
                    events.c.source_model == "tournament_result",
                    events.c.source_id == TournamentResult.id,
                ),
            )
            .where(
                events.c.event_type == "tournament_won",
                decided_result,
                *scope.conditions(TournamentResult.tournament_id),
            )
        )
        or 0
    )
    stored_of_run, public_in_private = 0, 0
    ranges = _event_ranges(lines)
    if ranges:
        in_range = and_(of_run, events.c.id.between(ranges[0][0], ranges[-1][1]))
        # Both counts in one pass over the run's events; nothing indexes their tournament.
        in_private = events.c.tournament_id.in_(select(Tournament.id).where(Tournament.is_private))
        stored, public = session.execute(
            select(
                func.count(),
                func.sum(case((and_(in_private, events.c.is_private.is_(False)), 1), else_=0)),
            ).where(in_range)
        ).one()
        stored_of_run, public_in_private = stored or 0, int(public or 0)

    def sources(found: dict, *keys: tuple) -> int:
        return sum(found.get(key, (0, 0))[0] for key in keys)

    def own(found: dict, keys: Iterable[tuple]) -> int:
        return sum(found.get(key, (0, 0))[1] for key in keys)

    undecided_states = [state for state in matches if state not in DECIDED_STATES]
    event_types = {event_type for _state, event_type in match_events_found}
    played_regs = sum(n for (p, _d), n in registrations.items() if p)
    checks = [
        ParityCheck("source records read", count_source_rows(session, scope), totals.rows_read),
        ParityCheck(
            "completed matches x 2 sides: match_won + match_lost",
            2 * matches.get("completed", 0),
            sources(match_events_found, ("completed", "match_won"), ("completed", "match_lost")),
        ),
        ParityCheck(
            "forfeit matches x 2 sides: forfeit won + lost",
            2 * matches.get("forfeit", 0),
            sources(
                match_events_found,
                ("forfeit", "match_forfeit_won"),
                ("forfeit", "match_forfeit_lost"),
            ),
        ),
        ParityCheck(
            "match_won/match_lost this run gave for forfeits",
            0,
            own(match_events_found, [("forfeit", "match_won"), ("forfeit", "match_lost")]),
        ),
        ParityCheck(
            "events this run gave for undecided matches",
            0,
            own(match_events_found, [(s, t) for s in undecided_states for t in event_types]),
        ),
        ParityCheck(
            "registrations: tournament_registered",
            sum(registrations.values()),
            sources(
                registration_events_found,
                *[(p, d, "tournament_registered") for p in (True, False) for d in (True, False)],
            ),
        ),
        ParityCheck(
            "checked-in registrations: tournament_checked_in",
            played_regs,
            sources(
                registration_events_found,
                *[(True, d, "tournament_checked_in") for d in (True, False)],
            ),
        ),
        ParityCheck(
            "entrants who played a decided tournament: tournament_completed",
            registrations.get((True, True), 0),
            sources(registration_events_found, (True, True, "tournament_completed")),
        ),
        ParityCheck(
            "tournament_completed this run gave no-shows and withdrawals",
            0,
            own(
                registration_events_found,
                [(False, d, "tournament_completed") for d in (True, False)],
            ),
        ),
        ParityCheck("tournament results: tournament_won", results, results_won),
        ParityCheck(
            "events of this run in private tournaments not marked private", 0, public_in_private
        ),
        ParityCheck(
            "events this run inserted, still stored", totals.events_inserted, stored_of_run
        ),
    ]
    return ParityReport(checks)


def events_by_type(session: Session, run_id: int) -> dict[str, int]:
    """Count the run's stored events per type, found through its ledger's id ranges."""
    ranges = _event_ranges(ledger(session, run_id))
    if not ranges:
        return {}
    events = ActivityEvent.__table__
    return dict(
        session.execute(
            select(events.c.event_type, func.count())
            .where(
                events.c.origin == "backfill",
                events.c.origin_id == run_id,
                events.c.id.between(ranges[0][0], ranges[-1][1]),
            )
            .group_by(events.c.event_type)
            .order_by(events.c.event_type)
        ).all()
    )


def run_summary(session: Session, run_id: int) -> dict[str, Any]:
    """The stored result of a finished run: ledger totals, events per type and the parity check."""
    lines = ledger(session, run_id)
    parity = parity_check(session, run_id)
    return {
        "batches": sum(line.committed for line in lines),
        **ledger_totals(lines).as_dict(),
        "events_by_type": events_by_type(session, run_id),
        "parity_ok": parity.ok,
        "parity_flags": parity.flags,
        "parity": parity.as_list(),
    }


@dataclass(frozen=True)
class BackfillReport:
    """Everything a run's page shows: the run, its ledger and totals, its parity, any rollback."""

    run: JobRun
    scope: BackfillScope
    lines: list[BatchLine]
    totals: BatchCounts
    parity: ParityReport | None
    parity_checked_now: bool
    rollbacks: list[JobRun]


def backfill_report(session: Session, run_id: int, *, recheck: bool = False) -> BackfillReport:
    """Return a run's ledger, totals and parity (as stored when it ended, or checked now)."""
    run = _backfill_run(session, run_id)
    lines = ledger(session, run_id)
    stored = (run.result or {}).get("parity")
    checked_now = recheck or stored is None
    parity = parity_check(session, run_id) if checked_now else ParityReport.from_list(stored)
    return BackfillReport(
        run,
        BackfillScope.from_params(run.params.get("scope")),
        lines,
        ledger_totals(lines),
        parity,
        checked_now,
        rollbacks_of(session, run_id),
    )


# Rollback.


def _event_ranges(lines: Iterable[BatchLine]) -> list[tuple[int, int]]:
    return sorted(
        (line.first_event_id, line.last_event_id)
        for line in lines
        if line.committed and line.first_event_id is not None
    )


def rollbacks_of(session: Session, run_id: int) -> list[JobRun]:
    """Return the rollback runs of a backfill run that are active, succeeded or deleted anything."""
    candidates = session.scalars(
        select(JobRun).where(JobRun.kind == "backfill_rollback").order_by(JobRun.id)
    )
    # A rollback that failed after deleting some events has left the run no longer whole.
    return [
        r
        for r in candidates
        if int((r.params or {}).get("run_id", 0)) == run_id
        and (r.status in (*ACTIVE_STATUSES, "succeeded") or r.progress_done)
    ]


@dataclass(frozen=True)
class RollbackPlan:
    """What rolling a run back would delete now."""

    run_id: int
    events: int
    players: int
    events_by_type: dict[str, int]


def plan_rollback(
    session: Session, run_id: int, *, rollback_run_id: int | None = None
) -> RollbackPlan:
    """Check a run can be rolled back and count what it would delete.

    :raise Conflict: while the run is active, while another backfill or
        rollback or an archive or restore run is active, when any of its
        events was reversed after a dispute or is the subject of a data-quality
        finding, or while any of its events is in cold storage.
    """
    run = _backfill_run(session, run_id)
    if not run.is_finished:
        raise Conflict(
            f"backfill run {run_id} is {run.status}; cancel it and wait for it to stop first"
        )
    _refuse_while_another_runs(session, except_run=rollback_run_id)
    _refuse_while_archiving(session)
    ranges = _event_ranges(ledger(session, run_id))
    if not ranges:
        return RollbackPlan(run_id, 0, 0, {})
    events = ActivityEvent.__table__
    of_run = and_(
        events.c.origin == "backfill",
        events.c.origin_id == run_id,
        events.c.id.between(ranges[0][0], ranges[-1][1]),
    )
    _refuse_if_referenced(session, run_id, of_run)
    _refuse_if_archived(session, run_id, ranges)
    by_type = dict(
        session.execute(
            select(events.c.event_type, func.count()).where(of_run).group_by(events.c.event_type)
        ).all()
    )
    players = (
        session.scalar(select(func.count(func.distinct(events.c.player_id))).where(of_run)) or 0
    )
    return RollbackPlan(run_id, sum(by_type.values()), players, dict(sorted(by_type.items())))


def _refuse_if_referenced(session: Session, run_id: int, of_run: ColumnElement[bool]) -> None:
    """Refuse to delete events that a dispute's reversal or a data-quality finding refers to."""
    events = ActivityEvent.__table__
    reversal = events.alias("reversal")
    reversed_ = session.execute(
        select(events.c.id, events.c.event_type, events.c.player_id, reversal.c.id)
        .select_from(reversal)
        .join(events, events.c.id == reversal.c.reverses_event_id)
        .where(reversal.c.reverses_event_id.is_not(None), of_run)
        .order_by(events.c.id)
        .limit(5)
    ).all()
    if reversed_:
        listed = "; ".join(
            f"event {e} ({t} of player {p}) was reversed by event {r}" for e, t, p, r in reversed_
        )
        raise Conflict(
            f"backfill run {run_id} cannot be rolled back: some of its events were corrected "
            f"after a dispute ({listed}). Deleting them would leave those reversals undoing "
            "events that no longer "
            "exist and take their stats out twice; nothing was deleted"
        )
    findings = session.execute(
        select(DataQualityFinding.id, events.c.id)
        .join(events, events.c.id == DataQualityFinding.event_id)
        .where(of_run)
        .order_by(DataQualityFinding.id)
        .limit(5)
    ).all()
    if findings:
        listed = "; ".join(f"finding {f} on event {e}" for f, e in findings)
        raise Conflict(
            f"backfill run {run_id} cannot be rolled back: a later report of the same facts "
            f"disagreed with some of its events ({listed}), and deleting them would erase what "
            "those findings refer to; "
            "nothing was deleted"
        )


def _refuse_if_archived(session: Session, run_id: int, ranges: list[tuple[int, int]]) -> None:
    """Refuse while events in the run's batches' id ranges are in cold storage.

    A rollback deletes from the hot table only: an archived event would stay
    counted in the archived totals and keep its key, and the run would look
    rolled back while part of it still counts. Archived keys do not keep their
    origin, so on PostgreSQL a live event whose id fell inside a batch's range
    counts too, if it was archived: a refusal to be safe, never a wrong delete.
    """
    per_file: Counter[int] = Counter()
    for chunk in _chunks(_merged(ranges), _CHUNK):
        per_file.update(dict(session.execute(_archived_in_ranges(len(chunk)), {
            **{f"f{i}": first for i, (first, _last) in enumerate(chunk)},
            **{f"l{i}": last for i, (_first, last) in enumerate(chunk)},
        }).all()))
    archived, files = sum(per_file.values()), sorted(per_file)
    if archived:
        listed = ", ".join(map(str, files[:10])) + (", ..." if len(files) > 10 else "")
        raise Conflict(
            f"backfill run {run_id} cannot be rolled back: {archived} of its events are in cold "
            f"storage (archive file {listed}), and a rollback deletes only events in the hot table. "
            "Restore those files (flask archive restore FILE_ID), then roll the run back; "
            "nothing was deleted"
        )


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted id ranges with the touching ones joined: on SQLite a run's batches are mostly one range."""
    merged: list[tuple[int, int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


@lru_cache(maxsize=32)
def _archived_in_ranges(count: int):
    """Archived events per file whose ids fall in ``count`` ranges (binds f0, l0, f1, l1, ...)."""
    listed = ", ".join(f"(:f{i}, :l{i})" for i in range(count))
    return text(
        "SELECT a.file_id, count(*) FROM archived_event_keys AS a "
        f"JOIN (VALUES {listed}) AS r ON a.event_id BETWEEN r.column1 AND r.column2 "
        "GROUP BY a.file_id"
    )


def _refuse_while_archiving(session: Session) -> None:
    """Refuse a rollback while an archive or restore run is active: it could move the run's events meanwhile."""
    busy = jobs.first_active_run(session, archive.RUN_KINDS)
    if busy is not None:
        raise Conflict(
            f"{busy.kind.replace('_', ' ')} run {busy.id} is {busy.status}; a rollback waits for "
            "archival to end, since it could move the run's events meanwhile; nothing was deleted"
        )


@dataclass(frozen=True)
class RolledBackChunk:
    deleted: int
    last_event_id: int


def event_ranges(session: Session, run_id: int) -> list[tuple[int, int]]:
    """Return the id ranges the run's committed batches inserted events in, in order."""
    return _event_ranges(ledger(session, run_id))


def rollback_chunk(
    session: Session,
    run_id: int,
    ranges: Sequence[tuple[int, int]],
    after_event_id: int,
    limit: int,
) -> RolledBackChunk | None:
    """Delete the run's next ``limit`` events after ``after_event_id``; take their stats back out.

    ``ranges`` are the run's ``event_ranges``; the events are found through
    them, and so through the primary key. Flush only: the deletion and the
    stat deltas go in the caller's transaction. Returns ``None`` when no event
    is left.

    :raise Conflict: if a dispute's reversal or a finding refers to one of them.
    """
    _check_batch_size(limit)
    events = ActivityEvent.__table__
    of_run = and_(events.c.origin == "backfill", events.c.origin_id == run_id)
    for first, last in ranges:
        if last <= after_event_id:
            continue
        ids = list(
            session.scalars(
                select(events.c.id)
                .where(of_run, events.c.id.between(max(first, after_event_id + 1), last))
                .order_by(events.c.id)
                .limit(limit)
            )
        )
        if not ids:
            continue
        chosen = events.c.id.in_(ids)
        _refuse_if_referenced(session, run_id, and_(of_run, chosen))
        # Rolled-back events stay in the monitoring rollups: they count events ever recorded.
        monitoring.note_removed(session, ids, archived=False)
        removed = session.execute(
            delete(events)
            .where(of_run, chosen)
            .returning(
                events.c.player_id, events.c.event_type, events.c.team_id, events.c.is_private
            )
        ).all()
        apply_stat_deltas(
            session,
            stat_deltas(
                (
                    ProjectedEvent(p, t, team is not None, bool(private))
                    for p, t, team, private in removed
                ),
                sign=-1,
            ),
        )
        return RolledBackChunk(len(removed), max(ids))
    return None


def start_rollback(
    session: Session, actor: Actor, run_id: int, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> JobRun:
    """Queue the rollback of a backfill run after checking it is allowed.

    :raise Conflict: see ``plan_rollback``.
    """
    _check_batch_size(batch_size)
    plan = plan_rollback(session, run_id)
    return jobs.queue_run(
        session,
        actor,
        "backfill_rollback",
        {"run_id": run_id, "batch_size": batch_size},
        total=plan.events,
    )


def record_rollback(
    session: Session, actor: Actor, run_id: int, rollback_run_id: int, deleted: int
) -> None:
    """Audit a finished rollback (the queued rollback run is audited by the job framework)."""
    record_audit(
        session,
        actor,
        "backfill.rollback",
        target_type="job",
        target_id=run_id,
        rollback_run_id=rollback_run_id,
        events_deleted=deleted,
    )
