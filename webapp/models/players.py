"""Platform players and teams: the people activity is about.

Players are the platform's users, kept apart from the staff who run the
dashboard.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Computed,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, CreatedAtMixin, UTCDateTime

FEED_VISIBILITIES = ("private", "public")


class Player(CreatedAtMixin, Base):
    __tablename__ = "players"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The identifier the platform shows to other players, e.g. DC-25-000042.
    public_id: Mapped[str] = mapped_column(String(20), unique=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    feed_visibility: Mapped[str] = mapped_column(String(16), default="private")
    # GDPR erasure (webapp.domain.erasure) leaves two kinds of anonymous row: the
    # erased player's own row, emptied of personal data and kept for the GDPR
    # request that names it (``erased_at`` set), and a tombstone that takes the
    # player's place in events and platform records, with nothing linking the
    # two. Both are shown as "[deleted player]"; tombstones keep no stats and
    # reconciliation leaves them out.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_tombstone: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Lower-cased copies kept by the database for case-insensitive prefix search
    # (webapp.domain.players). Plain indexed columns rather than indexes on
    # lower(...), because SQLite cannot reflect expression indexes and so
    # migrations could not be checked against the models there. Deferred: only
    # search reads them.
    search_username: Mapped[str] = mapped_column(
        String(), Computed("lower(username)", persisted=True), deferred=True
    )
    search_display_name: Mapped[str] = mapped_column(
        String(), Computed("lower(display_name)", persisted=True), deferred=True
    )
    search_public_id: Mapped[str] = mapped_column(
        String(), Computed("lower(public_id)", persisted=True), deferred=True
    )
    search_email: Mapped[str] = mapped_column(
        String(), Computed("lower(email)", persisted=True), deferred=True
    )

    __table_args__ = (
        CheckConstraint(
            "feed_visibility IN ('private', 'public')", name="feed_visibility_known"
        ),
        # text_pattern_ops lets PostgreSQL use them for LIKE 'abc%' under any collation.
        *(
            Index(f"ix_players_{column}", column, postgresql_ops={column: "text_pattern_ops"})
            for column in (
                "search_username", "search_display_name", "search_public_id", "search_email"
            )
        ),
    )

    @property
    def is_deleted(self) -> bool:
        """Shown as "[deleted player]": an erased player's row or a tombstone."""
        return self.is_tombstone or self.erased_at is not None

    def __repr__(self) -> str:
        return f"<Player {self.id} {self.public_id}>"


def format_public_id(year: int, number: int) -> str:
    """Return the public id of the ``number``-th player who joined in ``year``."""
    return f"DC-{year % 100:02d}-{number:06d}"


class Team(CreatedAtMixin, Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)


class TeamMembership(Base):
    """A player's membership of a team over an interval of time.

    ``left_at`` is open (NULL) while the player is still a member.  Team results
    reach the members at the time of the result, never today's roster.
    """

    __tablename__ = "team_memberships"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("left_at IS NULL OR left_at > joined_at", name="interval_ordered"),
        UniqueConstraint("team_id", "player_id", "joined_at"),
        Index("ix_team_memberships_player_id", "player_id"),
    )
