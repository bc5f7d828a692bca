"""Every model, imported so that the shared metadata knows all tables."""

from webapp.models.activity import ActivityEvent, DataQualityFinding
from webapp.models.api_tokens import ApiToken
from webapp.models.archive import ArchivedEventCount, ArchiveFile
from webapp.models.audit import AuditEntry
from webapp.models.base import Base
from webapp.models.competitions import (
    Match,
    Placement,
    Registration,
    Tournament,
    TournamentResult,
)
from webapp.models.jobs import AlertDelivery, BackfillBatch, JobRun
from webapp.models.players import Player, Team, TeamMembership
from webapp.models.reconciliation import ReconciliationDrift, ReconciliationRun
from webapp.models.staff import StaffUser
from webapp.models.stats import PlayerStats

__all__ = [
    "AlertDelivery",
    "ArchiveFile",
    "ArchivedEventCount",
    "BackfillBatch",
    "JobRun",
    "ApiToken",
    "AuditEntry",
    "StaffUser",
    "ActivityEvent",
    "Base",
    "DataQualityFinding",
    "Match",
    "Placement",
    "Player",
    "PlayerStats",
    "ReconciliationDrift",
    "ReconciliationRun",
    "Registration",
    "Team",
    "TeamMembership",
    "Tournament",
    "TournamentResult",
]
