"""Every model, imported so that the shared metadata knows all tables."""

from webapp.models.activity import ActivityEvent, DataQualityFinding
from webapp.models.api_tokens import ApiToken
from webapp.models.archive import ArchivedEventCount, ArchivedEventKey, ArchiveFile
from webapp.models.audit import AuditEntry
from webapp.models.base import Base
from webapp.models.competitions import (
    Match,
    Placement,
    Registration,
    Tournament,
    TournamentResult,
)
from webapp.models.disputes import (
    Dispute,
    DisputeNote,
    DisputeReport,
    DisputeView,
    MatchResolution,
)
from webapp.models.gdpr import GdprRequest, GdprRequestEntry
from webapp.models.gdpr_exports import GdprExport, GdprExportDownload
from webapp.models.jobs import AlertDelivery, BackfillBatch, JobRun
from webapp.models.monitoring import EventVolumeRollup, LatencyRollup, RollupWatermark
from webapp.models.players import Player, Team, TeamMembership
from webapp.models.reconciliation import ReconciliationDrift, ReconciliationRun
from webapp.models.staff import StaffUser
from webapp.models.stats import PlayerStats

__all__ = [
    "AlertDelivery",
    "ArchiveFile",
    "ArchivedEventCount",
    "ArchivedEventKey",
    "BackfillBatch",
    "JobRun",
    "ApiToken",
    "AuditEntry",
    "StaffUser",
    "ActivityEvent",
    "Base",
    "DataQualityFinding",
    "EventVolumeRollup",
    "LatencyRollup",
    "RollupWatermark",
    "GdprExport",
    "GdprExportDownload",
    "GdprRequest",
    "GdprRequestEntry",
    "Dispute",
    "DisputeNote",
    "DisputeReport",
    "DisputeView",
    "MatchResolution",
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
