"""Per-player stats: the read model projected from activity events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, UTCDateTime, utcnow

# ``all`` counts every event (what the owner and staff see); ``public`` leaves
# out events of private tournaments (what everybody else sees).
SCOPES = ("all", "public")

STAT_NAMES = (
    "matches_played",
    "matches_won",
    "matches_lost",
    "forfeit_wins",
    "forfeit_losses",
    "tournaments_played",
    "tournaments_completed",
    "tournaments_won",
    "solo_tournament_wins",
    "team_tournament_wins",
)


class PlayerStats(Base):
    """One row per player and scope, changed only by ``column = column + delta``."""

    __tablename__ = "player_stats"

    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    matches_played: Mapped[int] = mapped_column(Integer, default=0)
    matches_won: Mapped[int] = mapped_column(Integer, default=0)
    matches_lost: Mapped[int] = mapped_column(Integer, default=0)
    forfeit_wins: Mapped[int] = mapped_column(Integer, default=0)
    forfeit_losses: Mapped[int] = mapped_column(Integer, default=0)
    tournaments_played: Mapped[int] = mapped_column(Integer, default=0)
    tournaments_completed: Mapped[int] = mapped_column(Integer, default=0)
    tournaments_won: Mapped[int] = mapped_column(Integer, default=0)
    solo_tournament_wins: Mapped[int] = mapped_column(Integer, default=0)
    team_tournament_wins: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("scope IN ('all', 'public')", name="scope_known"),)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in STAT_NAMES}
