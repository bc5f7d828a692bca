"""Staff accounts: the people who use the dashboard (never platform players)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.activity import JsonDocument
from webapp.models.base import Base, BigId, CreatedAtMixin, UTCDateTime

ROLES = ("admin", "trust_safety", "privacy", "engineer", "viewer")


class StaffUser(CreatedAtMixin, Base):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def has_any_role(self, roles) -> bool:
        return bool(set(self.roles) & set(roles))

    # Flask-Login's user protocol, spelled out so the model needs no Flask import.
    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)

    def __repr__(self) -> str:
        return f"<StaffUser {self.id} {self.email}>"
