"""Finding players and loading what a player page shows.

Search matches a case-insensitive prefix of a player's username, display name,
public id or email. It reads the lower-cased ``search_*`` columns the database
keeps beside each of those (see ``webapp.models.players``), through their
indexes, and pages by keyset on (username, id).

Case folding is the database's ``lower()``: full Unicode on PostgreSQL, ASCII
only on SQLite (so there "É" and "é" are different letters).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, tuple_
from sqlalchemy.orm import Session

from webapp.domain.cursors import decode_cursor, encode_cursor
from webapp.domain.errors import Invalid, NotFound
from webapp.domain.privacy import SEARCH_FIELDS
from webapp.models.players import Player
from webapp.models.stats import SCOPES, STAT_NAMES, PlayerStats

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_QUERY_LENGTH = 254  # the longest searchable value (an email)

_CURSOR_FIELDS = {"username": str, "id": int}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class PlayerSearchPage:
    """Players ordered by username; ``next_cursor`` is None on the last page."""

    players: list[Player]
    next_cursor: str | None


def search_players(
    session: Session,
    query: str,
    *,
    fields: Iterable[str] = SEARCH_FIELDS,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> PlayerSearchPage:
    """Return players whose ``fields`` start with ``query``, ignoring case, one page at a time.

    ``%``, ``_`` and ``\\`` in the query match themselves. An empty query
    matches every player.

    :param fields: which of ``SEARCH_FIELDS`` to match; a redacted staff
        viewer should pass ``privacy.search_fields_for(viewer)``.
    :raise Invalid: on an unknown field, an overlong query, a bad cursor or limit.
    """
    if not isinstance(query, str):
        raise Invalid("the search query must be text")
    query = query.strip()
    if "\x00" in query:  # PostgreSQL text cannot hold it; refuse it on both databases
        raise Invalid("the search query contains a NUL character")
    if len(query) > MAX_QUERY_LENGTH:
        raise Invalid(f"the search query is longer than {MAX_QUERY_LENGTH} characters")
    fields = tuple(dict.fromkeys(fields))
    unknown = [f for f in fields if f not in SEARCH_FIELDS]
    if unknown or not fields:
        asked = ", ".join(unknown) or "nothing"
        raise Invalid(f"players can be searched by {', '.join(SEARCH_FIELDS)}, not {asked}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")

    statement = select(Player)
    if query:
        dialect = session.get_bind().dialect.name
        prefix = _lower_like_database(query, dialect)
        statement = statement.where(
            or_(*(_starts_with(getattr(Player, f"search_{f}"), prefix, dialect) for f in fields))
        )
    if cursor is not None:
        position = decode_cursor(cursor, _CURSOR_FIELDS)
        statement = statement.where(
            tuple_(Player.username, Player.id) > tuple_(position["username"], position["id"])
        )
    statement = statement.order_by(Player.username, Player.id).limit(limit + 1)
    players = list(session.scalars(statement))
    next_cursor = None
    if len(players) > limit:
        players = players[:limit]
        next_cursor = encode_cursor({"username": players[-1].username, "id": players[-1].id})
    return PlayerSearchPage(players, next_cursor)


def _lower_like_database(text: str, dialect: str) -> str:
    # The search columns hold the database's lower(); fold the query the same way.
    return text.translate(_ASCII_LOWER) if dialect == "sqlite" else text.lower()


def _starts_with(column, prefix: str, dialect: str):
    """Return an index-friendly "``column`` starts with ``prefix``" condition.

    The LIKE says what is meant; the range beside it is what each database
    can read from a plain index whatever the plan: PostgreSQL compares with
    the byte-wise ``~>=~``/``~<~`` of its ``text_pattern_ops`` index, even in a
    generic plan where the LIKE pattern is unknown, and SQLite, whose LIKE
    optimisation needs a NOCASE index, uses the range on the BINARY index.
    """
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    conditions = [column.like(f"{escaped}%", escape="\\")]
    upper = _successor(prefix)
    if dialect == "postgresql":
        conditions.append(column.op("~>=~", is_comparison=True)(prefix))
        if upper is not None:
            conditions.append(column.op("~<~", is_comparison=True)(upper))
    else:
        conditions.append(column >= prefix)
        if upper is not None:
            conditions.append(column < upper)
    return and_(*conditions)


def _successor(prefix: str) -> str | None:
    """Return the least string above every string that starts with ``prefix``, if any."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; skip past them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


@dataclass(frozen=True)
class PlayerProfile:
    """A player and their stats in both scopes (zeros for a player with no events)."""

    player: Player
    stats: dict[str, dict[str, int]]

    @property
    def stats_all(self) -> dict[str, int]:
        return self.stats["all"]

    @property
    def stats_public(self) -> dict[str, int]:
        return self.stats["public"]


def player_profile(session: Session, key: int | str) -> PlayerProfile:
    """Return the profile of the player with id ``key`` (an int) or public id ``key`` (a str).

    Public ids match ignoring case. The player and their stats rows come from
    one statement: every player page opens with this, and on PostgreSQL a
    second statement was a round trip of its own.

    :raise NotFound: if there is no such player.
    """
    rows = session.execute(
        select(Player, PlayerStats)
        .outerjoin(PlayerStats, PlayerStats.player_id == Player.id)
        .where(_is_player(session, key))
    ).all()
    if not rows:
        raise NotFound(f"player {key!r} does not exist")
    stats: dict[str, dict[str, int]] = {scope: dict.fromkeys(STAT_NAMES, 0) for scope in SCOPES}
    for _player, row in rows:
        if row is not None:
            stats[row.scope] = row.as_dict()
    return PlayerProfile(rows[0][0], stats)


def _is_player(session: Session, key: Any) -> ColumnElement[bool]:
    if isinstance(key, int) and not isinstance(key, bool):
        return Player.id == key
    if isinstance(key, str) and key.strip() and "\x00" not in key:
        return Player.search_public_id == _lower_like_database(key.strip(), session.get_bind().dialect.name)
    raise Invalid(f"a player is found by id or public id, not {key!r}")
