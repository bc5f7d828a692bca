"""GDPR exports: a player's whole record streamed into one JSON document and a CSV of events.

What an export holds
--------------------
One JSON document (``format``, ``request_id``, ``exported_at``, ``player``,
``teams``, ``stats``, ``events``, ``event_count``, ``archived_event_count``)
and a CSV with one row per event. Every event of the player is in both,
oldest first by (occurred_at, id): the hot table and the events archived to
cold storage (``webapp.domain.archive``) merged into one order, each marked
``archived``. Stats come in both scopes, ``all`` and ``public``, each with its
counts and the fields computed from them (win rate and the like).

Whose data is shown how
-----------------------
The export is the player's own data, so it is presented as the owner sees it
(``Viewer.owner``): private tournaments by name and id, source records, which
backfill run or dispute made an event. Other players are not the requester's
data: they appear exactly as any other player sees them, by public id only (no
username, display name or internal id), and an erased player as
``[deleted player]``. Teams and tournaments are named; they are not people.

The sha256
----------
Both files are hashed while they are written, byte for byte as stored. A
document cannot contain the hash of its own bytes, so the digests go into the
export record (``GdprExport.json_sha256``/``csv_sha256``), shown beside the
download links, and into a small manifest file written next to the export
(``...manifest.json``: each file's name, size and sha256, in the layout of
``sha256sum`` as well), which is offered with it.

Memory and consistency
----------------------
Hot events are read through a server-side cursor (``yield_per``: a named
cursor on PostgreSQL, SQLite's stepwise cursor) and written a chunk at a time,
so memory does not grow with the number of events; archived events are read
one month at a time, so at most one month of one player's archived events is
held at once. The whole export reads inside one snapshot (``begin_snapshot``),
so the stats, the events and the counts agree however much is recorded while
it runs.

Publishing
----------
Files are written under temporary names and renamed into place only once both
are complete; the export record is marked complete (and so offered) in the
transaction after that. A run that fails or is cancelled removes what it
wrote and never offers anything.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import json
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import IO, Any, NamedTuple

from fsspec.core import url_to_fs
from sqlalchemy import DateTime, String, Text, TypeDecorator, cast, func, select, type_coerce
from sqlalchemy.orm import Session

from webapp.collection import fewer_collections
from webapp.domain import gdpr_requests, jobs
from webapp.domain.archive import ArchiveStorage, HashingSink, read_player_records
from webapp.domain.audit import Actor, record_audit
from webapp.domain.errors import Conflict, Invalid, NotFound
from webapp.domain.export_encoding import CSV_BOOL as _BOOL
from webapp.domain.export_encoding import EventEncoder, decode_json
from webapp.domain.export_encoding import csv_text as _text
from webapp.domain.export_encoding import dumps as _dumps
from webapp.domain.privacy import (
    DELETED_PLAYER,
    DELETED_TEAM,
    SHOWN_DETAILS,
    UNKNOWN_TOURNAMENT,
    Names,
    Viewer,
    present_event,
    present_player,
    present_stats,
    summarize,
)
from webapp.domain.timeline import TimelineEvent, load_names, referenced_ids
from webapp.models.activity import ActivityEvent
from webapp.models.archive import ArchivedEventCount, ArchiveFile
from webapp.models.base import utcnow
from webapp.models.gdpr import GdprRequest
from webapp.models.gdpr_exports import EXPORT_FILES, GdprExport, GdprExportDownload
from webapp.models.jobs import JobRun
from webapp.models.players import Player, Team, TeamMembership
from webapp.models.stats import PlayerStats

EXPORT_KIND = "gdpr_export"
FORMAT = "activity-ops/gdpr-export/1"
# Events per fetch from the cursor, per names lookup and per write.
CHUNK = 2_000
# Progress is reported (and cancellation checked) this often.
PROGRESS_EVERY = 10_000
DEFAULT_LINK_MAX_AGE_SECONDS = 3_600
_ACTIVE = ("queued", "running")
_PARTIAL = ".partial"

CSV_COLUMNS = (
    "id", "type", "occurred_at", "recorded_at", "archived", "private", "source_model", "source_id",
    "origin", "origin_id", "tournament_id", "tournament_name", "team_id", "team_name",
    "opponents", "opponent_team_id", "opponent_team_name", "round", "side", "placement",
    "is_team_win", "reverses_event_id", "reversed_by_event_id", "summary",
)



class _StoredUTC(TypeDecorator):
    """A stored UTC time, read for streaming: SQLite's text is parsed by ``fromisoformat`` in C.

    The same values ``UTCDateTime`` returns, at a fraction of the cost of the
    SQLite dialect's own parsing, which is a third of reading an event.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            try:
                # Parsing the offset costs a tenth of ``replace(tzinfo=UTC)`` afterwards.
                return datetime.fromisoformat(value + "+00:00")
            except ValueError:  # text that carries an offset of its own
                return datetime.fromisoformat(value).astimezone(UTC)
        return value.astimezone(UTC)


class _StoredJSON(TypeDecorator):
    """A JSON column read as its text and decoded by the C scanner alone.

    Half the cost of ``json.loads`` per value (and of psycopg's own JSONB
    decoding): the metadata of every event is decoded, so it counts.
    """

    impl = Text()
    cache_ok = True

    def process_result_value(self, value, dialect):
        return decode_json(value)


_events = ActivityEvent.__table__
_HOT = (
    select(
        _events.c.id, _events.c.player_id, _events.c.event_type,
        type_coerce(_events.c.occurred_at, _StoredUTC()).label("occurred_at"),
        type_coerce(_events.c.recorded_at, _StoredUTC()).label("recorded_at"),
        _events.c.source_model, _events.c.source_id, _events.c.origin,
        _events.c.origin_id, _events.c.team_id, _events.c.tournament_id, _events.c.is_private,
        # Named as the attribute, so each row is an event as privacy reads one (``EventLike``)
        # without being copied into another object.
        type_coerce(cast(_events.c.metadata, Text), _StoredJSON()).label("details"),
        _events.c.reverses_event_id,
    )
    .order_by(_events.c.occurred_at, _events.c.id)
)


# Whether an export is running.


def export_in_progress(session: Session, player_id: int) -> bool:
    """Whether an export of ``player_id`` is queued or running now.

    Erasure refuses to start while this is true: it would pull the rows out
    from under the export.
    """
    params = session.scalars(
        select(JobRun.params).where(JobRun.kind == EXPORT_KIND, JobRun.status.in_(_ACTIVE))
    )
    return any(int((p or {}).get("player_id", -1)) == int(player_id) for p in params)


# Storage.


class ExportStorage:
    """Where export files live: an fsspec URL (a local folder, ``s3://bucket/prefix``, ...)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = str(url).rstrip("/")
        self.options = options
        self.fs, self.root = url_to_fs(self.url, **options)

    def file_url(self, export_id: int, player_id: int, file: str) -> str:
        """Return the URL export ``export_id`` stores ``file`` (json, csv or manifest) at."""
        suffix = {"json": "json", "csv": "events.csv", "manifest": "manifest.json"}[file]
        name = f"player-{player_id}-export-{export_id}.{suffix}"
        return self.fs.unstrip_protocol(posixpath.join(self.root, f"export-{export_id}", name))

    def _path(self, url: str):
        return url_to_fs(url, **self.options)

    def open(self, url: str, mode: str = "rb") -> IO[bytes]:
        fs, path = self._path(url)
        if "w" in mode:
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return fs.open(path, mode)

    def exists(self, url: str) -> bool:
        fs, path = self._path(url)
        return fs.exists(path)

    def rename(self, source: str, target: str) -> None:
        fs, source_path = self._path(source)
        fs.mv(source_path, self._path(target)[1])

    def remove(self, url: str) -> None:
        fs, path = self._path(url)
        if fs.exists(path):
            fs.rm(path)

    def list_files(self) -> list[str]:
        """Every file under this storage's export folders, finished or not."""
        pattern = posixpath.join(self.root, "export-*", "*")
        return sorted(self.fs.unstrip_protocol(p) for p in self.fs.glob(pattern))


# Reading the player's data.


def _hot_events(session: Session, player_id: int) -> Iterator:
    connection = session.connection().execution_options(yield_per=CHUNK)
    result = connection.execute(_HOT.where(_events.c.player_id == player_id))
    try:
        for rows in result.partitions():
            yield from rows
    finally:
        # Closed here, not by the garbage collector after its connection is gone: a
        # PostgreSQL server-side cursor must be closed while its transaction is open.
        result.close()


def archived_event_total(session: Session, player_id: int) -> int:
    """How many of ``player_id``'s events are in cold storage, by the archived totals."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(ArchivedEventCount.n), 0)).where(
                ArchivedEventCount.player_id == player_id
            )
        )
    )


# An event read back from cold storage, shaped like a row of the hot stream: a
# tuple of the timeline row's columns, so both unpack by position alike.
ArchivedEvent = NamedTuple(
    "ArchivedEvent", [(f.name, f.type) for f in fields(TimelineEvent)]
)


def _archived_events(
    session: Session, player_id: int, storage: ArchiveStorage | None, expected: int
) -> Iterator[ArchivedEvent]:
    """Yield the player's archived events oldest first, reading one month's files at a time."""
    if not expected or storage is None:
        return
    files = list(
        session.execute(
            select(ArchiveFile.id, ArchiveFile.month, ArchiveFile.url)
            .where(ArchiveFile.restored_at.is_(None))
            .order_by(ArchiveFile.month, ArchiveFile.id)
        )
    )
    found = 0
    for _month, month_files in groupby(files, key=lambda f: f.month):
        events = []
        for file_id, _m, url in month_files:
            events.extend(map(_archived, read_player_records(storage, url, player_id)))
        events.sort(key=_order)
        yield from events
        found += len(events)
        if found >= expected:
            return


def _archived(record: dict[str, Any]) -> ArchivedEvent:
    return ArchivedEvent(
        record["id"], record["player_id"], record["event_type"], record["occurred_at"],
        record["recorded_at"], record["source_model"], record["source_id"], record["origin"],
        record["origin_id"], record["team_id"], record["tournament_id"], record["is_private"],
        record["metadata"], record["reverses_event_id"],
    )


def reversal_links_of(session: Session, player_id: int) -> dict[int, int]:
    """Return ``{event id: id of the reversal that undid it}`` for every event of the player.

    A reversal is always an event of the same player (recording checks it),
    and reversed events never leave the hot table, so one statement finds
    every link; it holds one entry per reversal, which are few.
    """
    return dict(
        session.execute(
            select(_events.c.reverses_event_id, _events.c.id).where(
                _events.c.player_id == player_id, _events.c.reverses_event_id.is_not(None)
            )
        ).all()
    )


def _order(event) -> tuple[datetime, int]:
    return (event.occurred_at, event.id)


def _merged(hot: Iterable, cold: Iterable) -> Iterator:
    """Both streams in one (occurred_at, id) order; an event in both is given once."""
    last_id = None
    for event in heapq.merge(hot, cold, key=_order):
        if event.id != last_id:
            yield event
        last_id = event.id


# Presenting.


def computed_stats(counts: dict[str, int]) -> dict[str, float | None]:
    """Return the rates derived from one scope's counts (None where nothing was played)."""

    def rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "win_rate": rate(counts["matches_won"], counts["matches_played"]),
        "forfeit_win_share": rate(counts["forfeit_wins"], counts["matches_won"]),
        "tournament_completion_rate": rate(
            counts["tournaments_completed"], counts["tournaments_played"]
        ),
        "tournament_win_rate": rate(counts["tournaments_won"], counts["tournaments_played"]),
    }


def _stats_section(session: Session, player_id: int) -> dict[str, Any]:
    rows = {
        row.scope: row
        for row in session.scalars(select(PlayerStats).where(PlayerStats.player_id == player_id))
    }
    scopes = present_stats(
        rows.get("all"), rows.get("public"), Viewer.owner(player_id), player_id=player_id
    )
    return {
        scope: {"counts": counts, "computed": computed_stats(counts)}
        for scope, counts in scopes.items()
    }


def _player_section(player: Player) -> dict[str, Any]:
    return {**present_player(player, Viewer.owner(player.id)),
            "created_at": player.created_at.isoformat()}


def _teams_section(session: Session, player_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(TeamMembership.team_id, Team.name, TeamMembership.joined_at, TeamMembership.left_at)
        .join(Team, Team.id == TeamMembership.team_id)
        .where(TeamMembership.player_id == player_id)
        .order_by(TeamMembership.joined_at, TeamMembership.id)
    )
    return [
        {"team": {"id": team_id, "name": name}, "joined_at": joined.isoformat(),
         "left_at": left.isoformat() if left else None}
        for team_id, name, joined, left in rows
    ]


class ExportPresenter:
    """Present a player's events, chunk after chunk, as the export shows them.

    The result is exactly ``present_event`` for ``Viewer.owner`` (the player
    sees all of their own events: private tournaments, sources, origins) with
    other players cut down to what any other player sees of them, a public id
    (``redacted_for_export`` is that definition, and a test holds the two
    equal). It is built here rather than by post-editing ``present_event``'s
    output because an export presents every event a player has: each name is
    looked up (``learn``) and presented once per export and then shared, so
    what is kept grows with the players, teams and tournaments the player
    met, never with the number of events.
    """

    def __init__(self, names: Names | None = None,
                 reversed_by: dict[int, int] | None = None) -> None:
        names = names or Names()
        self._names = {"players": dict(names.players), "teams": dict(names.teams),
                       "tournaments": dict(names.tournaments)}
        self.names = Names(**self._names)
        # Looked up already, found or not (a missing record is a deleted one).
        self._seen = {kind: set(found) for kind, found in self._names.items()}
        self.reversed_by = reversed_by or {}
        self._tournaments: dict[int, dict[str, Any]] = {}
        self._private_tournaments: set[int] = set()
        self._teams: dict[int, dict[str, Any]] = {}
        self._players: dict[int, dict[str, Any]] = {}

    def learn(self, session: Session, events: list) -> None:
        """Look up, in one statement, the names ``events`` refer to that are not known yet."""
        seen_players, seen_teams, seen_tournaments = (
            self._seen["players"], self._seen["teams"], self._seen["tournaments"]
        )
        unknown = []
        for event in events:
            details = event.details or {}
            if (
                (event.tournament_id is not None and event.tournament_id not in seen_tournaments)
                or (event.team_id is not None and event.team_id not in seen_teams)
                or (details.get("opponent_team_id") is not None
                    and details["opponent_team_id"] not in seen_teams)
                or any(p not in seen_players for p in details.get("opponent_player_ids", ()))
            ):
                unknown.append(event)
        if not unknown:
            return
        found = load_names(session, unknown)
        players, teams, tournaments = referenced_ids(unknown)
        for kind, ids, names in (("players", players, found.players), ("teams", teams, found.teams),
                                 ("tournaments", tournaments, found.tournaments)):
            self._names[kind].update(names)
            self._seen[kind].update(ids)

    def _tournament(self, tournament_id: int) -> dict[str, Any]:
        found = self._tournaments.get(tournament_id)
        if found is None:
            tournament = self.names.tournaments.get(tournament_id)
            if tournament is not None and tournament.is_private:
                self._private_tournaments.add(tournament_id)
            found = self._tournaments[tournament_id] = {
                "id": tournament_id,
                "name": tournament.name if tournament else UNKNOWN_TOURNAMENT,
            }
        return found

    def _team(self, team_id: int) -> dict[str, Any]:
        found = self._teams.get(team_id)
        if found is None:
            found = self._teams[team_id] = {
                "id": team_id, "name": self.names.teams.get(team_id, DELETED_TEAM)
            }
        return found

    def _other_player(self, player_id: int) -> dict[str, Any]:
        found = self._players.get(player_id)
        if found is None:
            player = self.names.players.get(player_id)
            public_id = player.public_id if player else None
            found = self._players[player_id] = {
                "public_id": public_id, "label": public_id or DELETED_PLAYER
            }
        return found

    def present(self, event) -> dict[str, Any]:
        # Unpacked by position: a hot row and an ArchivedEvent have the same columns.
        (id_, _player_id, event_type, occurred_at, recorded_at, source_model, source_id, origin,
         origin_id, team_id, tournament_id, is_private, details, reverses_event_id) = event
        details = details or {}
        opponent_team_id = details.get("opponent_team_id")
        tournament = None if tournament_id is None else self._tournament(tournament_id)
        presented = {
            "id": id_,
            "type": event_type,
            "occurred_at": occurred_at.isoformat(),
            "recorded_at": recorded_at.isoformat() if recorded_at else None,
            "source": {"model": source_model, "id": source_id},
            "origin": {"kind": origin, "id": origin_id},
            # As is_private_event: recorded as private, or the tournament is private now.
            "private": bool(is_private) or (
                tournament is not None and tournament_id in self._private_tournaments
            ),
            "tournament": tournament,
            "team": None if team_id is None else self._team(team_id),
            "opponents": [self._other_player(p) for p in details.get("opponent_player_ids", ())],
            "opponent_team": None if opponent_team_id is None else self._team(opponent_team_id),
            "details": {key: details[key] for key in SHOWN_DETAILS if key in details},
            "reverses_event_id": reverses_event_id,
            "reversed_by_event_id": self.reversed_by.get(id_),
        }
        presented["summary"] = summarize(presented)
        presented["archived"] = isinstance(event, ArchivedEvent)
        return presented


def redacted_for_export(event, names: Names, reversed_by: int | None) -> dict[str, Any]:
    """The definition ``ExportPresenter`` follows: the owner's view, other players by public id."""
    presented = present_event(event, Viewer.owner(event.player_id), names, reversed_by=reversed_by)
    presented["opponents"] = [
        {"public_id": o["public_id"], "label": o["public_id"] or DELETED_PLAYER}
        for o in presented["opponents"]
    ]
    presented["summary"] = summarize(presented)
    presented["archived"] = isinstance(event, ArchivedEvent)
    return presented


def _csv_row(e: dict[str, Any]) -> list[Any]:
    # The csv module writes None as an empty cell; ids and times are ours, only text is guarded.
    tournament, team = e["tournament"] or {}, e["team"] or {}
    opponent_team = e["opponent_team"] or {}
    details = e["details"]
    return [
        e["id"], e["type"], e["occurred_at"], e["recorded_at"], _BOOL[e["archived"]],
        _BOOL[e["private"]], e["source"]["model"], e["source"]["id"], e["origin"]["kind"],
        e["origin"]["id"], tournament.get("id"), _text(tournament.get("name")), team.get("id"),
        _text(team.get("name")), " ".join(o["label"] for o in e["opponents"]),
        opponent_team.get("id"), _text(opponent_team.get("name")), _text(details.get("round")),
        _text(details.get("side")), details.get("placement"),
        _BOOL[details.get("is_team_win")], e["reverses_event_id"], e["reversed_by_event_id"],
        _text(e["summary"]),
    ]


# Writing.


@dataclass(frozen=True)
class WrittenFile:
    url: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class StreamedExport:
    """What streaming an export wrote: counts, and each file's size and sha256."""

    event_count: int
    archived_event_count: int
    json_bytes: int
    json_sha256: str
    csv_bytes: int
    csv_sha256: str
    exported_at: datetime


ProgressCallback = Callable[[int], None]


def stream_export(
    session: Session,
    player_id: int,
    json_out: IO[bytes],
    csv_out: IO[bytes],
    *,
    exported_at: datetime,
    archive_storage: ArchiveStorage | None = None,
    request_id: int | None = None,
    progress: ProgressCallback | None = None,
) -> StreamedExport:
    """Write ``player_id``'s export to two binary files as it is read; reads only.

    Call it inside one read snapshot (``begin_snapshot``) so that everything
    written agrees. ``progress(done)`` is called every ``PROGRESS_EVERY``
    events and may raise to stop the export.

    :raise NotFound: for an unknown player.
    :raise ArchiveVerificationFailed: if an archive file with the player's events cannot be read.
    """
    player = session.get(Player, player_id)
    if player is None:
        raise NotFound(f"player {player_id} does not exist")
    expected_archived = archived_event_total(session, player_id)
    json_sink, csv_sink = HashingSink(json_out), HashingSink(csv_out)
    header = {
        "format": FORMAT,
        "request_id": request_id,
        "exported_at": exported_at.astimezone(UTC).isoformat(),
        "player": _player_section(player),
        "teams": _teams_section(session, player_id),
        "stats": _stats_section(session, player_id),
    }
    json_sink.write(_dumps(header)[:-1].encode() + b',\n"events":[')
    csv_text = io.StringIO()
    csv_writer = csv.writer(csv_text, lineterminator="\r\n")
    csv_writer.writerow(CSV_COLUMNS)

    hot = _hot_events(session, player_id)
    cold = _archived_events(session, player_id, archive_storage, expected_archived)
    try:
        events = _merged(hot, cold) if expected_archived and archive_storage else hot
        # Every event makes short-lived lists and tuples that would set off a
        # collection every few hundred events, each walking the app's objects.
        with fewer_collections():
            written, archived = _write_events(
                session, player_id, events, json_sink, csv_sink, csv_text, csv_writer, progress
            )
    finally:
        hot.close()
        cold.close()
    footer = {"event_count": written, "archived_event_count": archived}
    json_sink.write(b"\n]," + _dumps(footer)[1:].encode() + b"\n")
    return StreamedExport(
        event_count=written,
        archived_event_count=archived,
        json_bytes=json_sink.bytes,
        json_sha256=json_sink.sha256.hexdigest(),
        csv_bytes=csv_sink.bytes,
        csv_sha256=csv_sink.sha256.hexdigest(),
        exported_at=exported_at,
    )


def _write_events(session, player_id, events, json_sink, csv_sink, csv_text, csv_writer,
                  progress: ProgressCallback | None) -> tuple[int, int]:
    """Write the events a chunk at a time to both files; return (written, archived)."""
    written = archived = 0
    next_progress = PROGRESS_EVERY
    chunk: list = []
    presenter = ExportPresenter(reversed_by=reversal_links_of(session, player_id))
    # Writes what ``presenter.present`` says, without building it first.
    encoder = EventEncoder(presenter.names, presenter.reversed_by)
    encode = encoder.encode

    def flush_chunk() -> None:
        nonlocal written, archived
        presenter.learn(session, chunk)
        lines, rows = [], []
        for event in chunk:
            is_archived = isinstance(event, ArchivedEvent)
            archived += is_archived
            text, row = encode(event, is_archived)
            lines.append(text)
            rows.append(row)
        csv_writer.writerows(rows)
        separator = "," if written else ""
        json_sink.write((separator + "\n" + ",\n".join(lines)).encode())
        csv_sink.write(csv_text.getvalue().encode())
        csv_text.seek(0)
        csv_text.truncate()
        written += len(chunk)
        chunk.clear()

    for event in events:
        chunk.append(event)
        if len(chunk) == CHUNK:
            flush_chunk()
            if progress is not None and written >= next_progress:
                progress(written)
                next_progress += PROGRESS_EVERY
    if chunk:
        flush_chunk()
    elif not written:
        csv_sink.write(csv_text.getvalue().encode())  # the header row alone
    return written, archived


@dataclass(frozen=True)
class WrittenExport:
    """The files of an export, renamed into place."""

    streamed: StreamedExport
    json: WrittenFile
    csv: WrittenFile
    manifest: WrittenFile

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_count": self.streamed.event_count,
            "archived_event_count": self.streamed.archived_event_count,
            "json": {"url": self.json.url, "bytes": self.json.bytes, "sha256": self.json.sha256},
            "csv": {"url": self.csv.url, "bytes": self.csv.bytes, "sha256": self.csv.sha256},
            "manifest": {"url": self.manifest.url, "sha256": self.manifest.sha256},
        }

    def remove(self, storage: ExportStorage) -> None:
        for file in (self.json, self.csv, self.manifest):
            storage.remove(file.url)


def manifest_bytes(streamed: StreamedExport, json_name: str, csv_name: str,
                   request_id: int | None, player_id: int) -> bytes:
    """Return the manifest: each file's name, size and sha256 (also as ``sha256sum`` lines)."""
    files = [
        {"name": json_name, "bytes": streamed.json_bytes, "sha256": streamed.json_sha256},
        {"name": csv_name, "bytes": streamed.csv_bytes, "sha256": streamed.csv_sha256},
    ]
    manifest = {
        "format": FORMAT,
        "request_id": request_id,
        "player_id": player_id,
        "exported_at": streamed.exported_at.astimezone(UTC).isoformat(),
        "event_count": streamed.event_count,
        "archived_event_count": streamed.archived_event_count,
        "files": files,
        "sha256sum": [f"{f['sha256']}  {f['name']}" for f in files],
    }
    return (json.dumps(manifest, indent=2) + "\n").encode()


def write_export_files(
    session: Session,
    storage: ExportStorage,
    export_id: int,
    player_id: int,
    *,
    exported_at: datetime,
    archive_storage: ArchiveStorage | None = None,
    request_id: int | None = None,
    progress: ProgressCallback | None = None,
) -> WrittenExport:
    """Stream the export into temporary files, then rename them into place; reads only.

    Whatever goes wrong (a failed read, storage errors, ``progress`` raising
    to cancel), the temporary files are removed and nothing is left at the
    final names.
    """
    urls = {file: storage.file_url(export_id, player_id, file) for file in EXPORT_FILES}
    partial = {file: url + _PARTIAL for file, url in urls.items()}
    try:
        with storage.open(partial["json"], "wb") as json_out, \
                storage.open(partial["csv"], "wb") as csv_out:
            streamed = stream_export(
                session, player_id, json_out, csv_out, exported_at=exported_at,
                archive_storage=archive_storage, request_id=request_id, progress=progress,
            )
        manifest = manifest_bytes(
            streamed, posixpath.basename(urls["json"]), posixpath.basename(urls["csv"]),
            request_id, player_id,
        )
        with storage.open(partial["manifest"], "wb") as out:
            out.write(manifest)
        for file in EXPORT_FILES:
            storage.rename(partial[file], urls[file])
    except BaseException:
        for url in (*partial.values(), *urls.values()):
            storage.remove(url)
        raise
    return WrittenExport(
        streamed,
        WrittenFile(urls["json"], streamed.json_bytes, streamed.json_sha256),
        WrittenFile(urls["csv"], streamed.csv_bytes, streamed.csv_sha256),
        WrittenFile(urls["manifest"], len(manifest), hashlib.sha256(manifest).hexdigest()),
    )


def count_events(session: Session, player_id: int) -> int:
    """How many events an export of ``player_id`` will hold: hot plus archived."""
    hot = session.scalar(select(func.count()).where(_events.c.player_id == player_id))
    return int(hot or 0) + archived_event_total(session, player_id)


# The export's lifecycle: start, complete, download.


def refuse_unless_exportable(session: Session, request_id: int) -> GdprRequest:
    """Return the request if an export of its player may start (or resume) now.

    :raise NotFound: for an unknown request.
    :raise IdentityNotVerified: until the requester's identity was verified.
    :raise Conflict: for a closed request, or while an export of the player is queued or running.
    """
    request = gdpr_requests.get_request(session, request_id)
    gdpr_requests.require_verified(request)
    if request.is_closed:
        raise Conflict(f"GDPR request {request.id} is {request.status}; nothing more is exported")
    if export_in_progress(session, request.player_id):
        raise Conflict(f"an export of player {request.player_id} is already queued or running")
    return request


def start_export(
    session: Session,
    actor: Actor,
    request_id: int,
    *,
    storage_url: str,
    archive_url: str | None,
    link_max_age_seconds: int = DEFAULT_LINK_MAX_AGE_SECONDS,
) -> GdprExport:
    """Queue an export of the request's player; the caller enqueues the run after the commit.

    :raise Forbidden: unless ``actor`` is privacy staff or an admin.
    :raise NotFound: for an unknown request.
    :raise IdentityNotVerified: until the requester's identity was verified.
    :raise Conflict: for a closed request, or while an export of the player is queued or running.
    :raise Invalid: for a link lifetime under one second.
    """
    gdpr_requests.require_gdpr_staff(session, actor)
    if not isinstance(link_max_age_seconds, int) or link_max_age_seconds < 1:
        raise Invalid(f"links must live at least one second, not {link_max_age_seconds!r}")
    request = refuse_unless_exportable(session, request_id)
    params = {
        "request_id": request.id,
        "player_id": request.player_id,
        "storage_url": storage_url,
        "archive_url": archive_url,
        "link_max_age_seconds": link_max_age_seconds,
    }
    run = jobs.queue_run(session, actor, EXPORT_KIND, params)
    export = GdprExport(
        request_id=request.id,
        player_id=request.player_id,
        job_run_id=run.id,
        requested_by_id=actor.staff_id,
        storage_url=storage_url,
        created_at=utcnow(),
    )
    session.add(export)
    session.flush()
    gdpr_requests.log_entry(session, request, actor, "export", f"export {export.id} started")
    record_audit(session, actor, "gdpr.export.start", target_type="gdpr_request",
                 target_id=request.id, export_id=export.id, run_id=run.id,
                 player_id=request.player_id)
    return export


def export_for_run(session: Session, run_id: int) -> GdprExport:
    export = session.scalars(select(GdprExport).where(GdprExport.job_run_id == run_id)).first()
    if export is None:
        raise NotFound(f"job run {run_id} has no GDPR export")
    return export


def get_export(session: Session, export_id: int) -> GdprExport:
    export = session.get(GdprExport, export_id)
    if export is None:
        raise NotFound(f"GDPR export {export_id} does not exist")
    return export


def check_still_allowed(session: Session, export: GdprExport) -> None:
    """Refuse to write an export whose request is no longer verified (checked when the run starts).

    :raise IdentityNotVerified: if the request's verification is gone.
    """
    gdpr_requests.require_verified(gdpr_requests.get_request(session, export.request_id))


def complete_export(session: Session, export_id: int, written: WrittenExport, *,
                    link_max_age_seconds: int, now: datetime | None = None) -> GdprExport:
    """Record the written files; from here on the export is offered until it expires."""
    now = now or utcnow()
    export = get_export(session, export_id)
    streamed = written.streamed
    export.json_url, export.csv_url, export.manifest_url = (
        written.json.url, written.csv.url, written.manifest.url
    )
    export.json_bytes, export.json_sha256 = written.json.bytes, written.json.sha256
    export.csv_bytes, export.csv_sha256 = written.csv.bytes, written.csv.sha256
    export.event_count = streamed.event_count
    export.archived_event_count = streamed.archived_event_count
    export.exported_at = streamed.exported_at
    export.completed_at = now
    export.expires_at = now + timedelta(seconds=link_max_age_seconds)
    session.flush()
    request = gdpr_requests.get_request(session, export.request_id)
    gdpr_requests.log_entry(
        session, request, Actor(staff_id=None), "export",
        f"export {export.id} ready: {streamed.event_count} events, "
        f"json sha256 {streamed.json_sha256}",
    )
    return export


def exports_of_request(session: Session, request_id: int) -> list[tuple[GdprExport, JobRun]]:
    """Return a request's exports with their runs, newest first."""
    return list(
        session.execute(
            select(GdprExport, JobRun)
            .join(JobRun, JobRun.id == GdprExport.job_run_id)
            .where(GdprExport.request_id == request_id)
            .order_by(GdprExport.id.desc())
        ).all()
    )


def recent_exports(session: Session, limit: int = 50) -> list[tuple[GdprExport, JobRun]]:
    """Return the latest exports of every request with their runs, newest first."""
    return list(
        session.execute(
            select(GdprExport, JobRun)
            .join(JobRun, JobRun.id == GdprExport.job_run_id)
            .order_by(GdprExport.id.desc())
            .limit(limit)
        ).all()
    )


def download_counts(session: Session, export_ids: Iterable[int]) -> dict[int, int]:
    ids = list(export_ids)
    if not ids:
        return {}
    return dict(
        session.execute(
            select(GdprExportDownload.export_id, func.count())
            .where(GdprExportDownload.export_id.in_(ids))
            .group_by(GdprExportDownload.export_id)
        ).all()
    )


class ExportUnavailable(Conflict):
    """The export is not (or no longer) offered: not finished, expired, or its file is gone."""


def open_for_download(
    session: Session, actor: Actor, export_id: int, file: str, *,
    storage: ExportStorage | None = None,
    now: datetime | None = None,
) -> tuple[GdprExport, IO[bytes]]:
    """Record a download of one export file and open it; the caller streams and closes it.

    The download row and its audit entry are written in the caller's unit of
    work, so every file handed out is on record.

    :raise Forbidden: unless ``actor`` is privacy staff or an admin.
    :raise Invalid: for an unknown file kind.
    :raise NotFound: for an unknown export.
    :raise ExportUnavailable: if the export is not finished, has expired, or its file is missing.
    """
    gdpr_requests.require_gdpr_staff(session, actor)
    if file not in EXPORT_FILES:
        raise Invalid(f"an export has no {file!r} file; it has {', '.join(EXPORT_FILES)}")
    export = get_export(session, export_id)
    if not export.is_ready:
        raise ExportUnavailable(f"GDPR export {export.id} is not finished")
    if export.is_expired(now):
        raise ExportUnavailable(
            f"GDPR export {export.id} expired at {export.expires_at:%Y-%m-%d %H:%M} UTC"
        )
    storage = storage or ExportStorage(export.storage_url)
    url = export.url_of(file)
    try:
        handle = storage.open(url, "rb")
    except FileNotFoundError:
        raise ExportUnavailable(f"the {file} file of GDPR export {export.id} is missing") from None
    session.add(GdprExportDownload(export_id=export.id, staff_id=actor.staff_id, file=file,
                                   downloaded_at=utcnow(), ip_address=actor.ip_address))
    record_audit(session, actor, "gdpr.export.download", target_type="gdpr_export",
                 target_id=export.id, file=file, request_id=export.request_id,
                 player_id=export.player_id)
    return export, handle


def record_refused_download(session: Session, actor: Actor, reason: str,
                            export_id: int | None = None, file: str | None = None) -> None:
    """Audit a download attempt that was refused (expired, tampered or unavailable link)."""
    record_audit(session, actor, "gdpr.export.download_refused", target_type="gdpr_export",
                 target_id=export_id, file=file, reason=reason)

