"""Import of the Tennis Abstract ATP match files into platform records.

Reads the gzip-compressed ``atp_players.csv``, the singles files
``atp_matches_YYYY.csv`` and the doubles files ``atp_matches_doubles_YYYY.csv``
(their columns and score markers are described in the data's README) and
writes players, teams, memberships, tournaments, registrations, matches and
tournament results. It records no events: the backfill turns these records
into events like any other history.

How the data maps onto the platform:

- Players: only the players a match refers to, from ``atp_players.csv``.
  ``player_id`` N becomes username ``atpN``, email ``atpN@players.atp.invalid``
  and public id ``DC-68-<N, six digits>`` (68 for 1968, the first season of
  the data; player ids are below a million, so the public ids are unique).
  Feeds stay private, the platform's default. A placeholder such as
  ``Unknown`` is imported when a match refers to it; a ``Bye`` placeholder
  never is, because a row against a bye is no match.
- Tournaments: one per ``tourney_id`` and kind, external ref ``atp:<id>`` for
  singles and ``atp-doubles:<id>`` for doubles (a separate, team-based
  competition with its own winner). They start at midnight UTC of
  ``tourney_date`` and end a week later. Team competitions (Davis Cup, the
  World Team Cup, ATP Cup, United Cup, Laver Cup, King's Cup and the WCT World
  Cup of 1968) count their matches but award no winner.
- Matches: external ref ``atp:<tourney_id>:<match_num>``, or
  ``atp-doubles:<tourney_id>:<round>:<match_num>`` because ``match_num``
  repeats between a doubles event's qualifying and main draw. The winner is
  side ``a``. The data gives no match times, so a match is set at its
  tournament's start plus half a day per round, in round order (``Q1`` first,
  ``F`` last); matches of one round share their time. ``is_final`` marks the
  final that decides a tournament's winner.
- Scores: a walkover (``W/O``, ``Walkover``) is a forfeit won by the winner;
  a retirement or default (``RET``, ``DEF``, ``Def.``, ``Default``), an unknown
  score (empty, ``UNK``, ``NA``) or a partly unknown one (``?``) is a
  completed match, since the winner is known; an abandoned match (``ABD``,
  ``Played and abandoned``, ``Played and unfinished``) is void, without a
  winner, since it was never decided. Each category is counted.
- Doubles pairs: a team per pair (``ATP pair <id>/<id>``, ids in ascending
  order), both players members from the day before the pair's first
  tournament, with no end, so that its results reach both of them.
- Registrations: one per entrant per tournament, registered the day before it
  starts; ``withdrawn`` for an entrant who lost by walkover without playing a
  match there, ``completed`` for everybody else.
- Results: the winner of the tournament's final, decided when the final was.

Rows that cannot be used are counted by reason (with a few examples), never
dropped silently: malformed rows, player ids missing or not in
``atp_players.csv``, byes, one player on both sides.

The import is idempotent: every record has a unique key (username, team name,
external ref, one registration per entrant, one result per tournament), and
running it again writes nothing new. Stored records are left as they are, but
for two that follow the matches: a registration's status, and the start of a
pair's membership when an earlier season is imported later.
It streams: files are read row by row and written in chunks, so memory holds
one chunk and the names of ``atp_players.csv``, whatever the number of files.
Nothing here commits: ``import_steps`` writes one chunk per step in the
caller's transaction (see ``webapp.jobs.atp_import``).
"""

from __future__ import annotations

import csv
import gzip
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from webapp.database import dialect_insert
from webapp.domain import jobs
from webapp.domain.audit import Actor
from webapp.domain.errors import Conflict, Invalid
from webapp.models import (
    JobRun,
    Match,
    Player,
    Registration,
    Team,
    TeamMembership,
    Tournament,
    TournamentResult,
)
from webapp.models.base import utcnow
from webapp.models.players import format_public_id

DEFAULT_CHUNK_SIZE = 5_000
PLAYERS_FILE = "atp_players.csv.gz"
SINGLES, DOUBLES = "singles", "doubles"
_FILE_NAME = re.compile(r"^atp_matches_(?:(doubles)_)?(\d{4})\.csv\.gz$")

# Public ids are DC-68-<player id>: 1968 is the first season of the data.
PUBLIC_ID_YEAR = 1968
MAX_PLAYER_ID = 999_999
EMAIL_DOMAIN = "players.atp.invalid"

ROUND_ORDER = ("Q1", "Q2", "Q3", "ER", "RR", "R128", "R64", "R32", "R16", "QF", "SF", "BR", "F")
ROUND_STEP = timedelta(hours=12)
FINAL_ROUND = "F"
TOURNAMENT_LENGTH = timedelta(days=7)
# Entrants register, and pairs form, the day before the tournament starts.
REGISTRATION_LEAD = timedelta(days=1)

# Team competitions other than Davis Cup (level D), as the data's README lists them.
TEAM_COMPETITION_ID_SUFFIXES = ("-615", "-8888", "-9900", "-9210")
TEAM_COMPETITION_NAMES = re.compile(r"\bKing'?s Cup\b|\bWCT World Cup\b", re.IGNORECASE)
_BYE_NAME = re.compile(r"^bye\s*\d*$", re.IGNORECASE)

# Score categories, and the match state each gives.
PLAYED = "played"
WALKOVER = "walkover"
RETIRED = "retired"
DEFAULTED = "defaulted"
ABANDONED = "abandoned"
UNKNOWN_SCORE = "unknown score"
PARTLY_UNKNOWN_SCORE = "partly unknown score"
STATE_OF_CATEGORY = {
    PLAYED: "completed",
    WALKOVER: "forfeit",
    RETIRED: "completed",
    DEFAULTED: "completed",
    ABANDONED: "void",
    UNKNOWN_SCORE: "completed",
    PARTLY_UNKNOWN_SCORE: "completed",
}

# Why a row was not used: key -> what it means.
SKIP_REASONS = {
    "blank_line": "blank line",
    "too_few_fields": "fewer fields than the header names",
    "extra_fields": "non-empty fields beyond the header",
    "missing_tourney_id": "tourney_id is empty",
    "bad_tourney_date": "tourney_date is not a YYYYMMDD date",
    "bad_match_num": "match_num is not a number",
    "unknown_round": "round is not one the data uses",
    "missing_player_id": "a player id is empty",
    "bad_player_id": f"a player id is not a number from 1 to {MAX_PLAYER_ID:,}",
    "unknown_player": "a player id is not in atp_players.csv",
    "bye": "the opponent is a bye placeholder: no match was played",
    "same_player_twice_in_pair": "one player twice in a doubles pair",
    "same_player_both_sides": "one player on both sides",
    "duplicate_match": "the same match again in the file",
    "player_not_stored": "a platform player already holds the public id or email of a player of the row",
}
EXAMPLES_KEPT = 3
# Bound parameters per IN (...) list, well under both databases' limits.
_IN_CHUNK = 500
# See webapp.domain.demo: psycopg pays far more for one statement of 1,000 rows than for five of 200.
POSTGRESQL_INSERT_PAGE_ROWS = 200

ProgressCallback = Callable[[str, int, int], None]


def classify_score(score: str) -> str:
    """Return the category of a score (see the data's README for its markers)."""
    text = score.strip()
    tokens = text.split()
    if "W/O" in tokens or "Walkover" in tokens:
        return WALKOVER
    if "RET" in tokens:
        return RETIRED
    if {"DEF", "Def.", "Default"} & set(tokens):
        return DEFAULTED
    if "ABD" in tokens or "Played and abandoned" in text or "Played and unfinished" in text:
        return ABANDONED
    if text in ("", "UNK", "NA"):
        return UNKNOWN_SCORE
    if "?" in text:
        return PARTLY_UNKNOWN_SCORE
    return PLAYED


def is_team_competition(tourney_id: str, tourney_name: str, tourney_level: str) -> bool:
    """Tell whether an event is a nation or team cup, whose matches count but which nobody wins."""
    return (
        tourney_level == "D"
        or tourney_id.endswith(TEAM_COMPETITION_ID_SUFFIXES)
        or TEAM_COMPETITION_NAMES.search(tourney_name) is not None
    )


def atp_username(player_id: int) -> str:
    """Return the username of the ATP player ``player_id``."""
    return f"atp{player_id}"


def parse_years(text: str) -> range:
    """Parse ``2019-2024`` or ``2024`` into the range of seasons it names."""
    found = re.fullmatch(r"\s*(\d{4})\s*(?:-\s*(\d{4})\s*)?", text)
    if not found:
        raise Invalid(f"years must look like 2024 or 2019-2024, not {text!r}")
    first, last = int(found.group(1)), int(found.group(2) or found.group(1))
    if first > last:
        raise Invalid(f"years {text!r} run backwards")
    return range(first, last + 1)


def default_data_dir() -> Path:
    """Return where the data sits beside a checkout: ``../shared/data/atp`` from the project root."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "atp"


# What an import reads, and what it reports.


@dataclass(frozen=True)
class ImportPlan:
    """The files an import reads: the players file, then match files by season, singles first."""

    data_dir: Path
    players_file: Path
    match_files: tuple[tuple[str, Path], ...]  # (kind, path)


def plan_import(data_dir: Path | str, *, years: Iterable[int] | None = None,
                include_doubles: bool = True) -> ImportPlan:
    """Find the files to import in ``data_dir``.

    :raise Invalid: if the folder or its players file is missing, or no match file is selected.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise Invalid(f"{data_dir} is not a folder")
    players_file = data_dir / PLAYERS_FILE
    if not players_file.is_file():
        raise Invalid(f"{players_file} is missing")
    wanted = set(years) if years is not None else None
    found = []
    for path in data_dir.iterdir():
        name = _FILE_NAME.match(path.name)
        if not name:
            continue
        kind, year = (DOUBLES if name.group(1) else SINGLES), int(name.group(2))
        if (wanted is None or year in wanted) and (kind == SINGLES or include_doubles):
            found.append((year, kind != SINGLES, kind, path))
    if not found:
        raise Invalid(f"no ATP match files for the years asked for in {data_dir}")
    found.sort()
    return ImportPlan(data_dir, players_file, tuple((kind, path) for *_, kind, path in found))


def start_import(session: Session, actor: Actor, data_dir: Path | str, *, years: range | None = None,
                 include_doubles: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE) -> JobRun:
    """Queue an import run of the files ``plan_import`` finds; the caller enqueues it after the commit.

    :raise Invalid: as ``plan_import``, or for a chunk size below 1.
    :raise Conflict: while another import is queued or running (they would
        write the same records).
    """
    if chunk_size < 1:
        raise Invalid(f"the chunk size must be at least 1, not {chunk_size}")
    plan = plan_import(data_dir, years=years, include_doubles=include_doubles)
    refuse_while_another_import(session)
    params = {
        "data_dir": str(plan.data_dir.resolve()),
        "years": f"{years.start}-{years.stop - 1}" if years else None,
        "include_doubles": include_doubles,
        "chunk_size": chunk_size,
    }
    return jobs.queue_run(session, actor, "import_atp", params, total=len(plan.match_files))


def refuse_while_another_import(session: Session) -> None:
    """Refuse while an import run is queued or running (starting or resuming one): both would write the same records.

    :raise Conflict: naming that run.
    """
    busy = jobs.first_active_run(session, ("import_atp",))
    if busy is not None:
        raise Conflict(f"import run {busy.id} is {busy.status}; wait for it to end or cancel it")


@dataclass
class ImportReport:
    """What an import read, wrote, found already stored, and could not use (by reason)."""

    files_read: list[str] = field(default_factory=list)
    players_in_file: int = 0
    rows_read: int = 0  # match rows, over all match files
    inserted: Counter[str] = field(default_factory=Counter)
    existing: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # match rows, by reason
    players_skipped: Counter[str] = field(default_factory=Counter)  # atp_players.csv rows, by reason
    examples: dict[str, list[str]] = field(default_factory=dict)
    scores: Counter[str] = field(default_factory=Counter)  # imported matches, by score category
    # Tournaments by what became of their winner (awarded, team competition, no final, ...).
    tournaments: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, where: str, *, players_file: bool = False) -> None:
        (self.players_skipped if players_file else self.skipped)[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append(where)

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportReport:
        """Read a report back from ``as_dict``'s plain data."""
        counted = ("inserted", "existing", "updated", "skipped", "players_skipped", "scores", "tournaments")
        return cls(
            files_read=list(data["files_read"]),
            players_in_file=data["players_in_file"],
            rows_read=data["rows_read"],
            examples={reason: list(where) for reason, where in data["examples"].items()},
            **{name: Counter(data[name]) for name in counted},
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the report as plain data (a job run's result)."""
        return {
            "files_read": list(self.files_read),
            "players_in_file": self.players_in_file,
            "rows_read": self.rows_read,
            "rows_skipped": self.rows_skipped,
            "inserted": dict(sorted(self.inserted.items())),
            "existing": dict(sorted(self.existing.items())),
            "updated": dict(sorted(self.updated.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "players_skipped": dict(sorted(self.players_skipped.items())),
            "examples": dict(sorted(self.examples.items())),
            "scores": dict(sorted(self.scores.items())),
            "tournaments": dict(sorted(self.tournaments.items())),
        }


@dataclass(frozen=True)
class ImportStep:
    """One step of an import, written in the caller's transaction."""

    file: str
    files_done: int
    files_total: int
    rows_read: int


def import_atp(session: Session, data_dir: Path | str, *, years: Iterable[int] | None = None,
               include_doubles: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE,
               progress: ProgressCallback | None = None) -> ImportReport:
    """Import the ATP files of ``data_dir`` in the caller's transaction and report what happened.

    ``progress`` is told ``(file, files_done, files_total)`` after each step.
    Long imports should commit per step instead: see ``webapp.jobs.atp_import``.

    :raise Invalid: if the files are missing or unreadable; see ``plan_import``.
    """
    plan = plan_import(data_dir, years=years, include_doubles=include_doubles)
    report = ImportReport()
    for step in import_steps(session, plan, report, chunk_size=chunk_size):
        if progress:
            progress(step.file, step.files_done, step.files_total)
    return report


def import_steps(session: Session, plan: ImportPlan, report: ImportReport, *,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[ImportStep]:
    """Import ``plan`` one chunk per step, adding to ``report``; each step only flushes.

    The caller may commit between steps: every step leaves the records whole.

    :raise Invalid: if a file lacks a column the import needs.
    """
    if chunk_size < 1:
        raise Invalid(f"chunk_size must be at least 1, not {chunk_size}")
    people = _read_players(plan.players_file, report)
    files_total = len(plan.match_files)
    report.files_read.append(plan.players_file.name)
    for done, (kind, path) in enumerate(plan.match_files, start=1):
        report.files_read.append(path.name)
        writer = _ChunkWriter(session, kind, people, report)
        rows = _read_matches(path, kind, report)
        while chunk := list(islice(rows, chunk_size)):
            writer.write(chunk)
            yield ImportStep(path.name, done - 1, files_total, report.rows_read)
        writer.close()
        yield ImportStep(path.name, done, files_total, report.rows_read)


# Reading the files.


@dataclass(frozen=True)
class _People:
    """The names of atp_players.csv, and which of its ids are bye placeholders."""

    names: dict[int, str]
    byes: frozenset[int]


@dataclass(frozen=True, slots=True)
class _Row:
    where: str
    tourney_id: str
    tourney_name: str
    team_competition: bool
    starts_at: datetime
    match_num: int
    round: str
    winners: tuple[int, ...]
    losers: tuple[int, ...]
    category: str

    def match_ref(self, kind: str) -> str:
        if kind == DOUBLES:
            # match_num repeats between a doubles event's qualifying and main-draw rows.
            return f"atp-doubles:{self.tourney_id}:{self.round}:{self.match_num}"
        return f"atp:{self.tourney_id}:{self.match_num}"

    def tournament_ref(self, kind: str) -> str:
        return f"atp-doubles:{self.tourney_id}" if kind == DOUBLES else f"atp:{self.tourney_id}"


@contextmanager
def _csv_rows(path: Path) -> Iterator[Any]:
    """Open a gzip CSV file as a csv reader (which knows its line number)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        yield csv.reader(handle)


def _columns(path: Path, header: list[str], names: Iterable[str]) -> dict[str, int]:
    missing = [n for n in names if n not in header]
    if missing:
        raise Invalid(f"{path.name}: the header has no column {', '.join(missing)}")
    return {n: header.index(n) for n in names}


def _fields_problem(row: list[str], width: int) -> str | None:
    if not row:
        return "blank_line"
    if len(row) < width:
        return "too_few_fields"
    # Every doubles row carries empty fields past the header; only non-empty ones are a problem.
    if any(value.strip() for value in row[width:]):
        return "extra_fields"
    return None


def _date(text: str) -> datetime | None:
    try:
        return datetime.strptime(text.strip(), "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def _player_id(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PLAYER_ID:
        raise ValueError(text)
    return value


def _read_players(path: Path, report: ImportReport) -> _People:
    with _csv_rows(path) as rows:
        header = next(rows, [])
        at = _columns(path, header, ("player_id", "name_first", "name_last"))
        names: dict[int, str] = {}
        byes = set()
        for row in rows:
            report.players_in_file += 1
            where = f"{path.name}:{rows.line_num}"
            problem = _fields_problem(row, len(header))
            if problem is None:
                try:
                    player_id = _player_id(row[at["player_id"]])
                except ValueError:
                    problem = "bad_player_id"
            if problem is not None:
                report.skip(problem, where, players_file=True)
                continue
            parts = (row[at["name_first"]].strip(), row[at["name_last"]].strip())
            name = " ".join(part for part in parts if part)
            if _BYE_NAME.match(name):
                byes.add(player_id)
            names[player_id] = (name or f"ATP player {player_id}")[:128]
    return _People(names, frozenset(byes))


_SINGLES_COLUMNS = ("winner_id", "loser_id")
_DOUBLES_COLUMNS = ("winner1_id", "winner2_id", "loser1_id", "loser2_id")
_COMMON_COLUMNS = (
    "tourney_id", "tourney_name", "tourney_level", "tourney_date", "match_num", "round", "score"
)


def _read_matches(path: Path, kind: str, report: ImportReport) -> Iterator[_Row]:
    """Yield the usable rows of one match file; count the others by reason."""
    player_columns = _DOUBLES_COLUMNS if kind == DOUBLES else _SINGLES_COLUMNS
    dates: dict[str, datetime | None] = {}  # a file holds a few hundred dates at most
    with _csv_rows(path) as rows:
        header = next(rows, [])
        at = _columns(path, header, _COMMON_COLUMNS + player_columns)
        for row in rows:
            report.rows_read += 1
            where = f"{path.name}:{rows.line_num}"
            parsed = _parse_match(row, len(header), at, player_columns, where, dates)
            if isinstance(parsed, str):
                report.skip(parsed, where)
            else:
                yield parsed


def _parse_match(row: list[str], width: int, at: dict[str, int], player_columns: tuple[str, ...],
                 where: str, dates: dict[str, datetime | None]) -> _Row | str:
    """Return the row, or the reason it cannot be used."""
    problem = _fields_problem(row, width)
    if problem:
        return problem
    tourney_id = row[at["tourney_id"]].strip()
    if not tourney_id:
        return "missing_tourney_id"
    date = row[at["tourney_date"]]
    if date not in dates:
        dates[date] = _date(date)
    starts_at = dates[date]
    if starts_at is None:
        return "bad_tourney_date"
    try:
        match_num = int(row[at["match_num"]])
    except ValueError:
        return "bad_match_num"
    round_ = row[at["round"]].strip()
    if round_ not in ROUND_ORDER:
        return "unknown_round"
    ids = []
    for column in player_columns:
        text = row[at[column]].strip()
        if not text:
            return "missing_player_id"
        try:
            ids.append(_player_id(text))
        except ValueError:
            return "bad_player_id"
    half = len(ids) // 2
    name = row[at["tourney_name"]].strip()
    return _Row(
        where=where,
        tourney_id=tourney_id,
        tourney_name=name,
        team_competition=is_team_competition(tourney_id, name, row[at["tourney_level"]].strip()),
        starts_at=starts_at,
        match_num=match_num,
        round=round_,
        winners=tuple(ids[:half]),
        losers=tuple(ids[half:]),
        category=classify_score(row[at["score"]]),
    )


# Writing the records of a chunk.

WINNER_AWARDED = "winner: the final's winner"
TEAM_COMPETITION = "team competition: nobody wins"
NO_FINAL = "no final in the data: no winner"
SEVERAL_FINALS = "several finals: no winner"
FINAL_ABANDONED = "final abandoned: no winner"


@dataclass(frozen=True)
class _StoredTournament:
    id: int
    ref: str
    starts_at: datetime
    awards_winner: bool
    is_new: bool


def _pair(ids: tuple[int, ...]) -> tuple[int, int]:
    first, second = sorted(ids)
    return first, second


def pair_name(first: int, second: int) -> str:
    """Return the name of the team of two ATP players (by ATP player id)."""
    low, high = sorted((first, second))
    return f"ATP pair {low}/{high}"


def _batches(values: Iterable, size: int = _IN_CHUNK) -> Iterator[list]:
    values = iter(values)
    while batch := list(islice(values, size)):
        yield batch


class _ChunkWriter:
    """Write the records of one match file, chunk after chunk."""

    def __init__(self, session: Session, kind: str, people: _People, report: ImportReport) -> None:
        self.session = session
        self.kind = kind
        self.people = people
        self.report = report
        self.entrant_column = "team_id" if kind == DOUBLES else "player_id"
        self.is_postgresql = session.get_bind().dialect.name == "postgresql"
        self.insert_options = (
            {"insertmanyvalues_page_size": POSTGRESQL_INSERT_PAGE_ROWS} if self.is_postgresql else {}
        )
        # What became of each tournament of the file, told once the file is done.
        self.outcomes: dict[str, str | None] = {}

    def write(self, rows: list[_Row]) -> None:
        rows = self._usable(rows)
        players = self._players({i for r in rows for i in r.winners + r.losers})
        rows = [r for r in rows if self._stored(r, players)]
        if not rows:
            return
        tournaments = self._tournaments(rows)
        teams = self._teams(rows, players, tournaments) if self.kind == DOUBLES else {}

        def entrant(ids: tuple[int, ...]) -> int:
            return teams[_pair(ids)] if self.kind == DOUBLES else players[ids[0]]

        now = utcnow()
        matches = []
        for r in rows:
            stored = tournaments[r.tournament_ref(self.kind)]
            at = stored.starts_at + ROUND_STEP * ROUND_ORDER.index(r.round)
            state = STATE_OF_CATEGORY[r.category]
            decided = state != "void"
            sides = {"a": entrant(r.winners), "b": entrant(r.losers)}
            matches.append({
                "tournament_id": stored.id,
                "round": r.round,
                **{
                    f"side_{side}_{column}": sides[side] if column == self.entrant_column else None
                    for side in ("a", "b")
                    for column in ("player_id", "team_id")
                },
                "state": state,
                "winner_side": "a" if decided else None,
                "scheduled_at": at,
                "completed_at": at if decided else None,
                "is_final": r.round == FINAL_ROUND and stored.awards_winner,
                "external_ref": r.match_ref(self.kind),
                "version": 1,
                "created_at": now,
            })
            self.report.scores[r.category] += 1
        inserted = self._insert_many(Match, matches)
        self.report.inserted["matches"] += inserted
        self.report.existing["matches"] += len(matches) - inserted
        self._registrations(matches, tournaments)
        self._results(matches, tournaments)

    def close(self) -> None:
        """Count the file's tournaments by what became of their winner."""
        self.report.tournaments.update(outcome or NO_FINAL for outcome in self.outcomes.values())

    def _usable(self, rows: list[_Row]) -> list[_Row]:
        """Leave out rows about byes, unknown players, one player twice, and repeats."""
        usable, refs = [], set()
        for r in rows:
            ids = r.winners + r.losers
            ref = r.match_ref(self.kind)
            if any(i in self.people.byes for i in ids):
                reason = "bye"
            elif any(i not in self.people.names for i in ids):
                reason = "unknown_player"
            elif len(r.winners) == 2 and (r.winners[0] == r.winners[1] or r.losers[0] == r.losers[1]):
                reason = "same_player_twice_in_pair"
            elif set(r.winners) & set(r.losers):
                reason = "same_player_both_sides"
            elif ref in refs:
                reason = "duplicate_match"
            else:
                refs.add(ref)
                usable.append(r)
                continue
            self.report.skip(reason, r.where)
        return usable

    def _stored(self, row: _Row, players: dict[int, int]) -> bool:
        if all(i in players for i in row.winners + row.losers):
            return True
        self.report.skip("player_not_stored", row.where)
        return False

    def _insert(self, kind: str, model: type, rows: list[dict], *, count_existing: bool = True) -> None:
        """Insert the rows not stored yet (by their unique keys), counting the new ones."""
        if not rows:
            return
        table = model.__table__
        statement = dialect_insert(self.session, table).on_conflict_do_nothing().returning(table.c.id)
        new = len(self.session.execute(statement, rows, execution_options=self.insert_options).all())
        self.report.inserted[kind] += new
        if count_existing:
            self.report.existing[kind] += len(rows) - new

    def _insert_many(self, model: type, rows: list[dict]) -> int:
        """Insert many rows, leaving out those already stored; return how many were new.

        On PostgreSQL the rows are copied into a temporary table and inserted
        from there in one statement: for the 20,000 rows of a few seasons'
        matches that takes a quarter of the time of an executemany and a tenth
        of multi-row INSERTs with RETURNING, on the client and the server alike.
        SQLite, in the process, gains nothing over its executemany.
        """
        if not rows:
            return 0
        table = model.__table__
        if not self.is_postgresql:
            statement = dialect_insert(self.session, table).on_conflict_do_nothing()
            return self.session.execute(statement, rows).rowcount
        columns = list(rows[0])
        names = ", ".join(columns)
        stage = f"atp_import_{table.name}"
        with self.session.connection().connection.driver_connection.cursor() as cursor:
            # The staging table has the target's column types and nothing else: no
            # constraints, no defaults; it lives as long as the connection, emptied per use.
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                f"SELECT {names} FROM {table.name} WITH NO DATA"
            )
            with cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[column] for column in columns])
            cursor.execute(
                f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {stage} ON CONFLICT DO NOTHING"
            )
            inserted = cursor.rowcount
            cursor.execute(f"TRUNCATE {stage}")
        return inserted

    def _players(self, atp_ids: set[int]) -> dict[int, int]:
        """Return the platform id of each ATP player, importing those not stored yet."""
        usernames = {atp_username(i): i for i in atp_ids}
        stored = self._lookup(Player.username, Player.id, usernames)
        missing = sorted(usernames[u] for u in usernames.keys() - stored.keys())
        # A player seen in an earlier chunk is found, not counted again: only new ones count.
        self._insert("players", Player, [
            {
                "public_id": format_public_id(PUBLIC_ID_YEAR, i),
                "username": atp_username(i),
                "display_name": self.people.names[i],
                "email": f"{atp_username(i)}@{EMAIL_DOMAIN}",
                "feed_visibility": "private",
            }
            for i in missing
        ], count_existing=False)
        stored.update(self._lookup(Player.username, Player.id, [atp_username(i) for i in missing]))
        return {usernames[u]: player_id for u, player_id in stored.items()}

    def _lookup(self, key_column, id_column, keys: Iterable) -> dict:
        found = {}
        for batch in _batches(keys):
            found.update(
                self.session.execute(select(key_column, id_column).where(key_column.in_(batch))).all()
            )
        return found

    def _tournaments(self, rows: list[_Row]) -> dict[str, _StoredTournament]:
        firsts: dict[str, _Row] = {}
        for r in rows:
            firsts.setdefault(r.tournament_ref(self.kind), r)
        suffix = " (doubles)" if self.kind == DOUBLES else ""
        table = Tournament.__table__
        new_refs = {
            ref
            for (ref,) in self.session.execute(
                dialect_insert(self.session, table).on_conflict_do_nothing().returning(table.c.external_ref),
                [
                    {
                        "name": (r.tourney_name or r.tourney_id)[: 200 - len(suffix)] + suffix,
                        "is_private": False,
                        "is_team_based": self.kind == DOUBLES,
                        "awards_winner": not r.team_competition,
                        "starts_at": r.starts_at,
                        "ends_at": r.starts_at + TOURNAMENT_LENGTH,
                        "external_ref": ref,
                    }
                    for ref, r in firsts.items()
                ],
                execution_options=self.insert_options,
            )
        }
        self.report.inserted["tournaments"] += len(new_refs)
        self.report.existing["tournaments"] += len(
            [ref for ref in firsts if ref not in new_refs and ref not in self.outcomes]
        )
        stored = {}
        for batch in _batches(firsts):
            for tournament_id, ref, starts_at, awards_winner in self.session.execute(
                select(table.c.id, table.c.external_ref, table.c.starts_at, table.c.awards_winner)
                .where(table.c.external_ref.in_(batch))
            ):
                stored[ref] = _StoredTournament(
                    tournament_id, ref, starts_at, awards_winner, is_new=ref in new_refs
                )
                self.outcomes.setdefault(ref, None if awards_winner else TEAM_COMPETITION)
        return stored

    def _teams(self, rows: list[_Row], players: dict[int, int],
               tournaments: dict[str, _StoredTournament]) -> dict[tuple[int, int], int]:
        """Return the team of each pair; its members join the day before its first tournament."""
        joins: dict[tuple[int, int], datetime] = {}
        for r in rows:
            joined_at = tournaments[r.tournament_ref(self.kind)].starts_at - REGISTRATION_LEAD
            for pair in (_pair(r.winners), _pair(r.losers)):
                joins[pair] = min(joins.get(pair, joined_at), joined_at)
        names = {pair_name(*pair): pair for pair in joins}
        self._insert("teams", Team, [{"name": name} for name in names], count_existing=False)
        stored = self._lookup(Team.name, Team.id, names)
        teams = {names[name]: team_id for name, team_id in stored.items()}
        joined: dict[int, datetime] = {}
        for batch in _batches(teams.values()):
            joined.update(self.session.execute(
                select(TeamMembership.team_id, func.min(TeamMembership.joined_at))
                .where(TeamMembership.team_id.in_(batch))
                .group_by(TeamMembership.team_id)
            ).all())
        memberships, earlier = [], []
        for pair, team_id in teams.items():
            if team_id not in joined:
                memberships.extend(
                    {"team_id": team_id, "player_id": players[p], "joined_at": joins[pair], "left_at": None}
                    for p in pair
                )
            elif joined[team_id] > joins[pair]:
                # The pair played earlier than any row seen so far (later in the file, or in a
                # season an earlier run did not read): membership starts then, so that the
                # results of that tournament reach both players.
                earlier.append({"team": team_id, "joined": joins[pair]})
        self._insert("team_memberships", TeamMembership, memberships, count_existing=False)
        if earlier:
            table = TeamMembership.__table__
            self.session.execute(
                update(table)
                .where(table.c.team_id == bindparam("team"))
                .values(joined_at=bindparam("joined")),
                earlier,
            )
            self.report.updated["team_memberships"] += 2 * len(earlier)
        return teams

    def _registrations(self, matches: list[dict], tournaments: dict[str, _StoredTournament]) -> None:
        """Register every entrant; withdrawn if they lost by walkover and played no match there."""
        starts = {t.id: t.starts_at for t in tournaments.values()}
        stored_before = {t.id for t in tournaments.values() if not t.is_new}
        a_column, b_column = (f"side_{side}_{self.entrant_column}" for side in ("a", "b"))
        facts = [
            (m["tournament_id"], m[a_column], m[b_column], m["state"], m["winner_side"])
            for m in matches
            if m["tournament_id"] not in stored_before
        ]
        # A tournament stored before this chunk (earlier in the file, or by an earlier run) has its
        # statuses worked out again from all its stored matches, this chunk's included.
        registered: dict[tuple[int, int], tuple[int, str]] = {}
        match, registration = Match.__table__.c, Registration.__table__.c
        for batch in _batches(sorted(stored_before)):
            facts.extend(self.session.execute(
                select(match.tournament_id, match[a_column], match[b_column], match.state, match.winner_side)
                .where(match.tournament_id.in_(batch))
            ).all())
            for registration_id, tournament_id, entrant, status in self.session.execute(
                select(registration.id, registration.tournament_id, registration[self.entrant_column],
                       registration.status)
                .where(registration.tournament_id.in_(batch), registration[self.entrant_column].is_not(None))
            ):
                registered[(tournament_id, entrant)] = (registration_id, status)

        statuses = _registration_statuses(facts)
        now = utcnow()
        new = [
            {
                "tournament_id": tournament_id,
                "player_id": entrant if self.entrant_column == "player_id" else None,
                "team_id": entrant if self.entrant_column == "team_id" else None,
                "status": status,
                "registered_at": starts[tournament_id] - REGISTRATION_LEAD,
                "created_at": now,
            }
            for (tournament_id, entrant), status in sorted(statuses.items())
            if (tournament_id, entrant) not in registered
        ]
        changed = [
            {"registration": registered[key][0], "status_now": status}
            for key, status in sorted(statuses.items())
            if key in registered and registered[key][1] != status
        ]
        self.report.inserted["registrations"] += self._insert_many(Registration, new)
        # Entrants of this chunk already registered by an earlier run (or chunk) and left as they were.
        in_chunk = {(m["tournament_id"], m[column]) for m in matches for column in (a_column, b_column)}
        self.report.existing["registrations"] += len(in_chunk & registered.keys()) - len(changed)
        if changed:
            table = Registration.__table__
            self.session.execute(
                update(table)
                .where(table.c.id == bindparam("registration"))
                .values(status=bindparam("status_now")),
                changed,
            )
            self.report.updated["registrations"] += len(changed)

    def _results(self, matches: list[dict], tournaments: dict[str, _StoredTournament]) -> None:
        """Give each tournament that awards a winner the winner of its final."""
        by_id = {t.id: t for t in tournaments.values() if t.awards_winner}
        finals: dict[int, list[dict]] = defaultdict(list)
        for m in matches:
            if m["round"] == FINAL_ROUND and m["tournament_id"] in by_id:
                finals[m["tournament_id"]].append(m)
        results = []
        for tournament_id, found in sorted(finals.items()):
            ref = by_id[tournament_id].ref
            final = found[0]
            if len(found) > 1:
                self.outcomes[ref] = SEVERAL_FINALS
            elif final["winner_side"] is None:
                self.outcomes[ref] = FINAL_ABANDONED
            else:
                self.outcomes[ref] = WINNER_AWARDED
                winner = final[f"side_{final['winner_side']}_{self.entrant_column}"]
                results.append({
                    "tournament_id": tournament_id,
                    "winner_player_id": winner if self.entrant_column == "player_id" else None,
                    "winner_team_id": winner if self.entrant_column == "team_id" else None,
                    "decided_at": final["completed_at"],
                })
        self._insert("tournament_results", TournamentResult, results)


def _registration_statuses(
    matches: Iterable[tuple[int, int, int, str, str | None]],
) -> dict[tuple[int, int], str]:
    """Return the status of each (tournament, entrant) from the tournament's matches.

    An entrant who lost by walkover and played no match there withdrew; every
    other entrant completed the tournament (a walkover win alone still means
    they were there to play).
    """
    entrants, played, walked_over = set(), set(), set()
    for tournament_id, a, b, state, winner_side in matches:
        entrants.update(((tournament_id, a), (tournament_id, b)))
        if state == "forfeit":
            walked_over.add((tournament_id, b if winner_side == "a" else a))
        else:
            played.update(((tournament_id, a), (tournament_id, b)))
    return {
        key: "withdrawn" if key in walked_over and key not in played else "completed"
        for key in entrants
    }
