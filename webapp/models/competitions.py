"""Tournaments, registrations, matches and results: the records events come from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, CreatedAtMixin, UTCDateTime

REGISTRATION_STATUSES = ("registered", "checked_in", "no_show", "withdrawn", "completed")
MATCH_STATES = ("scheduled", "completed", "forfeit", "disputed", "void")
SIDES = ("a", "b")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _one_of(player_column: str, team_column: str) -> str:
    return (
        f"({player_column} IS NULL AND {team_column} IS NOT NULL)"
        f" OR ({player_column} IS NOT NULL AND {team_column} IS NULL)"
    )


RESULT_STATUSES = ("decided", "void")
# A decided result names exactly one winner, a player or a team; a void one names nobody.
WINNER_UNLESS_VOID = (
    f"(status = 'decided' AND ({_one_of('winner_player_id', 'winner_team_id')}))"
    " OR (status = 'void' AND winner_player_id IS NULL AND winner_team_id IS NULL)"
)


class Tournament(CreatedAtMixin, Base):
    __tablename__ = "tournaments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    is_private: Mapped[bool] = mapped_column(Boolean, default=False)
    # Team tournaments are entered by teams; solo ones by single players.
    is_team_based: Mapped[bool] = mapped_column(Boolean, default=False)
    # Team competitions (nation cups) count their matches, but nobody wins them.
    awards_winner: Mapped[bool] = mapped_column(Boolean, default=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Where the record came from when it was imported (e.g. an ATP tourney_id).
    external_ref: Mapped[str | None] = mapped_column(String(100), unique=True)

    __table_args__ = (CheckConstraint("ends_at >= starts_at", name="dates_ordered"),)


class Registration(CreatedAtMixin, Base):
    """A player's or a team's entry into a tournament."""

    __tablename__ = "registrations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tournament_id: Mapped[int] = mapped_column(ForeignKey("tournaments.id"))
    player_id: Mapped[int | None] = mapped_column(ForeignKey("players.id"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    status: Mapped[str] = mapped_column(String(16), default="registered")
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("status", REGISTRATION_STATUSES), name="status_known"),
        CheckConstraint(_one_of("player_id", "team_id"), name="one_entrant"),
        UniqueConstraint("tournament_id", "player_id"),
        UniqueConstraint("tournament_id", "team_id"),
    )

    @property
    def is_team(self) -> bool:
        return self.team_id is not None


class Match(CreatedAtMixin, Base):
    """A match between two sides, each a single player or a team."""

    __tablename__ = "matches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tournament_id: Mapped[int] = mapped_column(ForeignKey("tournaments.id"))
    round: Mapped[str] = mapped_column(String(16))
    side_a_player_id: Mapped[int | None] = mapped_column(ForeignKey("players.id"))
    side_a_team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    side_b_player_id: Mapped[int | None] = mapped_column(ForeignKey("players.id"))
    side_b_team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    state: Mapped[str] = mapped_column(String(16), default="scheduled")
    winner_side: Mapped[str | None] = mapped_column(String(1))
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_final: Mapped[bool] = mapped_column(Boolean, default=False)
    external_ref: Mapped[str | None] = mapped_column(String(100), unique=True)
    # Optimistic locking: concurrent edits of one match cannot both succeed.
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        CheckConstraint(_in("state", MATCH_STATES), name="state_known"),
        CheckConstraint("winner_side IS NULL OR winner_side IN ('a', 'b')", name="winner_side_known"),
        CheckConstraint(
            "state NOT IN ('completed', 'forfeit') OR winner_side IS NOT NULL",
            name="decided_has_winner",
        ),
        CheckConstraint(_one_of("side_a_player_id", "side_a_team_id"), name="side_a_one_entrant"),
        CheckConstraint(_one_of("side_b_player_id", "side_b_team_id"), name="side_b_one_entrant"),
        Index("ix_matches_tournament_id", "tournament_id"),
    )

    def side_entrant(self, side: str) -> tuple[int | None, int | None]:
        """Return ``(player_id, team_id)`` of one side."""
        if side == "a":
            return self.side_a_player_id, self.side_a_team_id
        if side == "b":
            return self.side_b_player_id, self.side_b_team_id
        raise ValueError(f"unknown side {side!r}")


class TournamentResult(CreatedAtMixin, Base):
    """The outcome of a tournament: its winner, decided at a point in time.

    A result is 'void' while a dispute resolution has voided the tournament's
    final: nobody won, until the final is resolved to a winner again.
    """

    __tablename__ = "tournament_results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tournament_id: Mapped[int] = mapped_column(ForeignKey("tournaments.id"), unique=True)
    status: Mapped[str] = mapped_column(String(8), default="decided", server_default="decided")
    winner_player_id: Mapped[int | None] = mapped_column(ForeignKey("players.id"))
    winner_team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("status", RESULT_STATUSES), name="status_known"),
        CheckConstraint(WINNER_UNLESS_VOID, name="winner_unless_void"),
    )

    @property
    def is_void(self) -> bool:
        return self.status == "void"


class Placement(Base):
    """Where an entrant finished in a tournament (1 is the winner)."""

    __tablename__ = "placements"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("tournament_results.id"))
    place: Mapped[int]
    player_id: Mapped[int | None] = mapped_column(ForeignKey("players.id"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))

    __table_args__ = (
        CheckConstraint("place >= 1", name="place_positive"),
        CheckConstraint(_one_of("player_id", "team_id"), name="one_entrant"),
        Index("ix_placements_result_id", "result_id"),
    )
