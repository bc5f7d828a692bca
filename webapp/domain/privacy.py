"""Who may see a player's feed, and what each viewer sees of it.

Pure functions over already-loaded data: no queries, no Flask. The JSON API
and the staff dashboard both present events, players and stats through here,
so the rules exist once.

Viewers
-------
``owner``
    The signed-in platform player whose feed it is. Sees everything about
    their own events: private tournament names and ids, opponents' usernames
    and display names, and which backfill run or dispute made each event.
``player``
    Any other signed-in platform player, opponents included.
``public``
    An anonymous visitor.
``staff_redacted``
    Staff with the ``viewer`` role (or a privileged role that gave no reason).
``staff_full``
    Staff with ``trust_safety``, ``privacy`` or ``admin`` who gave a reason
    for seeing full data; the reason travels on the viewer so that the caller
    can audit it. A full viewer cannot be made without one.

Feeds (``can_view_feed``)
-------------------------
The owner and staff of either kind see every feed. ``player`` and ``public``
viewers see a feed only when its ``feed_visibility`` is ``'public'``.

What a redacted viewer sees (``player``, ``public``, ``staff_redacted``)
-------------------------------------------------------------------------
Redacted viewers see the same events the owner sees, with personal and
private data taken out:

- other players appear by public id only, never username, display name or
  email; a player who no longer exists appears as ``[deleted player]``;
- an event of a private tournament (the event was recorded as private, or the
  tournament is private now) shows the tournament as ``{"name": "[Private
  Tournament]"}``, with no name and no id, and its source id is withheld
  (a source record could lead back to the tournament);
- the summary is built from the redacted fields, so it cannot say more than
  they do.

``staff_redacted`` differs from ``public`` only where staff work needs it and
no player's data is involved: it sees every feed, whatever its visibility, and
it gets internal ids (opponents' player ids, the backfill run or dispute that
made an event) to link to dashboard pages. Everything else (private events
masked, opponents by public id) is exactly what the public sees.

The owner's privileges cover only their own events and stats: an ``owner``
viewer looking at another player's data is treated as a ``player``.

Stats (``present_stats``): the owner and ``staff_full`` see both scopes; every
other viewer sees only the ``public`` scope, which leaves out private
tournaments.

The event view (``present_event``)
----------------------------------
Every key is always present, so clients need no per-viewer cases::

    id, type, occurred_at, recorded_at   ISO 8601 times with offset
    source        {"model": "match", "id": 812}; id None when withheld
    origin        {"kind": "live"|"backfill"|"dispute"|"staff", "id": run/dispute id or None}
    private       whether the event belongs to a private tournament
    tournament    {"id", "name"}, {"name": "[Private Tournament]"} when masked, or None
    team          {"id", "name"} of the player's team, or None
    opponents     [{"public_id", "label"} + "username", "display_name" for full
                  viewers + "id" for staff]; public_id None for a deleted player
    opponent_team {"id", "name"} or None
    details       round, side, placement, is_team_win: whichever the event has
    reverses_event_id, reversed_by_event_id   links between an event and its reversal
    summary       one line, e.g. "Won R2 against DC-25-000042 in [Private Tournament]"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from webapp.domain.errors import Invalid
from webapp.domain.taxonomy import EVENT_TYPES
from webapp.models.stats import STAT_NAMES

PRIVATE_TOURNAMENT = "[Private Tournament]"
DELETED_PLAYER = "[deleted player]"
DELETED_TEAM = "[deleted team]"
UNKNOWN_TOURNAMENT = "[unknown tournament]"

# The player columns staff may search by, and what a redacted viewer may search by:
# matching on a hidden field would reveal it one guess at a time.
SEARCH_FIELDS = ("username", "display_name", "public_id", "email")
REDACTED_SEARCH_FIELDS = ("public_id",)

# The metadata fields shown as ``details``: none of them names or identifies anyone.
SHOWN_DETAILS = ("round", "side", "placement", "is_team_win")


class ViewerKind(StrEnum):
    OWNER = "owner"
    PLAYER = "player"
    PUBLIC = "public"
    STAFF_REDACTED = "staff_redacted"
    STAFF_FULL = "staff_full"


@dataclass(frozen=True)
class Viewer:
    """Someone looking at a player's data; build one with the class methods."""

    kind: ViewerKind
    # The signed-in platform player, for ``owner`` and ``player``.
    player_id: int | None = None
    # Why a staff member asked for full data; required for ``staff_full``.
    reason: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", ViewerKind(self.kind))
        except ValueError:
            raise Invalid(
                f"unknown viewer kind {self.kind!r}; known: {', '.join(ViewerKind)}"
            ) from None
        needs_player = self.kind in (ViewerKind.OWNER, ViewerKind.PLAYER)
        if needs_player and (
            not isinstance(self.player_id, int) or isinstance(self.player_id, bool)
        ):
            raise Invalid(f"a {self.kind} viewer needs the signed-in player's id")
        if self.kind is ViewerKind.STAFF_FULL and not (self.reason and self.reason.strip()):
            raise Invalid("full data is shown to staff only with a reason")

    @classmethod
    def owner(cls, player_id: int) -> Viewer:
        return cls(ViewerKind.OWNER, player_id=player_id)

    @classmethod
    def player(cls, player_id: int) -> Viewer:
        return cls(ViewerKind.PLAYER, player_id=player_id)

    @classmethod
    def public(cls) -> Viewer:
        return cls(ViewerKind.PUBLIC)

    @classmethod
    def staff_redacted(cls) -> Viewer:
        return cls(ViewerKind.STAFF_REDACTED)

    @classmethod
    def staff_full(cls, reason: str) -> Viewer:
        return cls(ViewerKind.STAFF_FULL, reason=reason)

    @classmethod
    def platform(cls, signed_in_player_id: int | None, feed_player_id: int) -> Viewer:
        """Return the viewer a platform visitor is for ``feed_player_id``'s feed."""
        if signed_in_player_id is None:
            return cls.public()
        if signed_in_player_id == feed_player_id:
            return cls.owner(signed_in_player_id)
        return cls.player(signed_in_player_id)

    @property
    def is_staff(self) -> bool:
        return self.kind in (ViewerKind.STAFF_REDACTED, ViewerKind.STAFF_FULL)

    def sees_everything_of(self, player_id: int | None) -> bool:
        """Whether this viewer sees ``player_id``'s data unredacted."""
        if self.kind is ViewerKind.STAFF_FULL:
            return True
        return (
            self.kind is ViewerKind.OWNER and player_id is not None and player_id == self.player_id
        )


def preview_viewers(player_id: int, opponent_id: int) -> dict[str, Viewer]:
    """Return the three viewers of the feed preview: the public, an opponent and the owner."""
    return {
        "public": Viewer.public(),
        "opponent": Viewer.player(opponent_id),
        "owner": Viewer.owner(player_id),
    }


class FeedOwner(Protocol):
    id: int
    feed_visibility: str


def can_view_feed(player: FeedOwner, viewer: Viewer) -> bool:
    """Whether ``viewer`` may see ``player``'s feed at all."""
    if viewer.is_staff or viewer.sees_everything_of(player.id):
        return True
    return player.feed_visibility == "public"


def search_fields_for(viewer: Viewer) -> tuple[str, ...]:
    """Return the player fields ``viewer`` may search by."""
    return SEARCH_FIELDS if viewer.kind is ViewerKind.STAFF_FULL else REDACTED_SEARCH_FIELDS


# Names: what load_names (webapp.domain.timeline) found for the ids on a page.


@dataclass(frozen=True)
class PlayerName:
    public_id: str
    username: str
    display_name: str


@dataclass(frozen=True)
class TournamentName:
    name: str
    is_private: bool


@dataclass(frozen=True)
class Names:
    """Names of the players, teams and tournaments a page of events refers to.

    An id missing from a mapping belongs to a record that no longer exists.
    """

    players: Mapping[int, PlayerName] = field(default_factory=dict)
    teams: Mapping[int, str] = field(default_factory=dict)
    tournaments: Mapping[int, TournamentName] = field(default_factory=dict)


class EventLike(Protocol):
    """An ``ActivityEvent`` or anything with the same attributes (a timeline row)."""

    id: int
    player_id: int
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    source_model: str
    source_id: int
    origin: str
    origin_id: int | None
    team_id: int | None
    tournament_id: int | None
    is_private: bool
    details: Mapping[str, Any]
    reverses_event_id: int | None


def is_private_event(event: EventLike, names: Names) -> bool:
    """Whether ``event`` belongs to a private tournament, as recorded or as it is now."""
    if event.is_private:
        return True
    tournament = names.tournaments.get(event.tournament_id) if event.tournament_id else None
    return tournament is not None and tournament.is_private


def present_event(
    event: EventLike, viewer: Viewer, names: Names, *, reversed_by: int | None = None
) -> dict[str, Any]:
    """Return the JSON-ready view of one event that ``viewer`` may see.

    :param reversed_by: id of the reversal that undid this event, if any
        (from ``reversal_links``).
    """
    full = viewer.sees_everything_of(event.player_id)
    private = is_private_event(event, names)
    masked = private and not full
    details = event.details or {}

    presented: dict[str, Any] = {
        "id": event.id,
        "type": event.event_type,
        "occurred_at": event.occurred_at.isoformat(),
        "recorded_at": event.recorded_at.isoformat() if event.recorded_at else None,
        "source": {"model": event.source_model, "id": None if masked else event.source_id},
        "origin": {
            "kind": event.origin,
            "id": event.origin_id if (full or viewer.is_staff) else None,
        },
        "private": private,
        "tournament": _tournament(event.tournament_id, names, masked),
        "team": _team(event.team_id, names),
        "opponents": [
            _opponent(player_id, names, full=full, with_id=viewer.is_staff)
            for player_id in details.get("opponent_player_ids", ())
        ],
        "opponent_team": _team(details.get("opponent_team_id"), names),
        "details": {key: details[key] for key in SHOWN_DETAILS if key in details},
        "reverses_event_id": event.reverses_event_id,
        "reversed_by_event_id": reversed_by,
    }
    presented["summary"] = summarize(presented)
    return presented


def _tournament(tournament_id: int | None, names: Names, masked: bool) -> dict[str, Any] | None:
    if tournament_id is None:
        return None
    if masked:
        return {"name": PRIVATE_TOURNAMENT}
    tournament = names.tournaments.get(tournament_id)
    return {
        "id": tournament_id,
        "name": tournament.name if tournament else UNKNOWN_TOURNAMENT,
    }


def _team(team_id: int | None, names: Names) -> dict[str, Any] | None:
    if team_id is None:
        return None
    return {"id": team_id, "name": names.teams.get(team_id, DELETED_TEAM)}


def _opponent(player_id: int, names: Names, *, full: bool, with_id: bool) -> dict[str, Any]:
    player = names.players.get(player_id)
    opponent: dict[str, Any] = {"id": player_id} if with_id else {}
    if player is None:
        opponent.update(public_id=None, label=DELETED_PLAYER)
        if full:
            opponent.update(username=None, display_name=None)
        return opponent
    opponent["public_id"] = player.public_id
    if full:
        opponent.update(
            username=player.username,
            display_name=player.display_name,
            label=f"{player.display_name} ({player.public_id})",
        )
    else:
        opponent["label"] = player.public_id
    return opponent


def summarize(presented: Mapping[str, Any]) -> str:
    """Return a one-line description built only from an already presented event."""
    kind = presented["type"]
    details = presented["details"]
    round_ = details.get("round", "a match")
    tournament = presented["tournament"]
    where = f" in {tournament['name']}" if tournament else ""
    team = presented["team"]
    with_team = f" with {team['name']}" if team else ""
    if presented["opponent_team"]:
        against = presented["opponent_team"]["name"]
    else:
        against = _join([o["label"] for o in presented["opponents"]]) or "an unknown opponent"

    if kind == "match_won":
        return f"Won {round_} against {against}{where}"
    if kind == "match_lost":
        return f"Lost {round_} to {against}{where}"
    if kind == "match_forfeit_won":
        return f"Won {round_} by forfeit against {against}{where}"
    if kind == "match_forfeit_lost":
        return f"Forfeited {round_} against {against}{where}"
    if kind == "tournament_registered":
        return f"Registered for {_name_or(tournament)}{with_team}"
    if kind == "tournament_checked_in":
        return f"Checked in to {_name_or(tournament)}{with_team}"
    if kind == "tournament_completed":
        return f"Completed {_name_or(tournament)}{with_team}"
    if kind == "tournament_won":
        return f"Won {_name_or(tournament)}{with_team}"
    event_type = EVENT_TYPES.get(kind)
    if event_type is not None and event_type.reverses:
        undone = event_type.reverses.replace("_", " ")
        return f"Reversed {undone} #{presented['reverses_event_id']}{where}"
    return f"{kind.replace('_', ' ').capitalize()}{where}"


def _name_or(tournament: Mapping[str, Any] | None) -> str:
    return tournament["name"] if tournament else "a tournament"


def _join(labels: Sequence[str]) -> str:
    if len(labels) <= 1:
        return "".join(labels)
    return f"{', '.join(labels[:-1])} and {labels[-1]}"


class PlayerLike(Protocol):
    id: int
    public_id: str
    username: str
    display_name: str
    email: str
    feed_visibility: str


def present_player(player: PlayerLike, viewer: Viewer) -> dict[str, Any]:
    """Return what ``viewer`` may see of a player's own record."""
    presented: dict[str, Any] = {
        "public_id": player.public_id,
        "feed_visibility": player.feed_visibility,
    }
    if viewer.is_staff or viewer.sees_everything_of(player.id):
        presented["id"] = player.id
    if viewer.sees_everything_of(player.id):
        presented.update(
            username=player.username, display_name=player.display_name, email=player.email
        )
    return presented


StatsSource = Mapping[str, int] | Any | None


def present_stats(
    stats_all: StatsSource,
    stats_public: StatsSource,
    viewer: Viewer,
    *,
    player_id: int | None = None,
) -> dict[str, dict[str, int]]:
    """Return the stat scopes ``viewer`` may see, ``all`` (maybe) and ``public`` (always).

    Each scope is a ``PlayerStats`` row, a mapping of stat name to value, or
    ``None`` for a player with no events (all zeros). ``player_id`` (taken
    from the rows when not given) lets an ``owner`` viewer's ownership be
    checked.
    """
    if player_id is None:
        player_id = getattr(stats_all, "player_id", None) or getattr(
            stats_public, "player_id", None
        )
    full = viewer.kind is ViewerKind.STAFF_FULL or (
        viewer.kind is ViewerKind.OWNER
        and (player_id is None or viewer.sees_everything_of(player_id))
    )
    presented = {"public": _stat_values(stats_public)}
    if full:
        presented = {"all": _stat_values(stats_all), **presented}
    return presented


def _stat_values(stats: StatsSource) -> dict[str, int]:
    if stats is None:
        return dict.fromkeys(STAT_NAMES, 0)
    if isinstance(stats, Mapping):
        return {name: int(stats.get(name, 0)) for name in STAT_NAMES}
    return {name: int(getattr(stats, name) or 0) for name in STAT_NAMES}
