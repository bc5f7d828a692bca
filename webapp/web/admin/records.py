"""Read-only browsing of platform records, events, stats and operational records."""

from __future__ import annotations

from webapp.models import (
    ActivityEvent,
    AuditEntry,
    DataQualityFinding,
    Match,
    Player,
    PlayerStats,
    Registration,
    ReconciliationRun,
    StaffUser,
    Team,
    TeamMembership,
    Tournament,
)
from webapp.web.admin.base import ReadOnlyModelView

RECORD_ROLES = ("admin", "engineer", "trust_safety")


class PlayerRecordsView(ReadOnlyModelView):
    allowed_roles = RECORD_ROLES
    # Emails and other personal fields are shown only on the audited player page.
    column_list = ("id", "public_id", "username", "display_name", "feed_visibility", "created_at")
    column_details_list = column_list
    column_searchable_list = ("public_id", "username")
    column_default_sort = ("id", True)


class TeamRecordsView(ReadOnlyModelView):
    allowed_roles = RECORD_ROLES
    column_default_sort = ("id", True)


class MembershipRecordsView(ReadOnlyModelView):
    allowed_roles = RECORD_ROLES
    column_filters = ("team_id", "player_id")


class TournamentRecordsView(ReadOnlyModelView):
    allowed_roles = RECORD_ROLES
    column_filters = ("is_private", "is_team_based")
    column_searchable_list = ("name",)
    column_default_sort = ("starts_at", True)


class MatchRecordsView(ReadOnlyModelView):
    allowed_roles = RECORD_ROLES
    column_filters = ("state", "tournament_id", "is_final")
    column_default_sort = ("id", True)


class RegistrationRecordsView(ReadOnlyModelView):
    allowed_roles = RECORD_ROLES
    column_filters = ("status", "tournament_id")


class EventRecordsView(ReadOnlyModelView):
    """Activity events are history: read-only here and everywhere."""

    allowed_roles = ("admin", "engineer", "trust_safety", "privacy")
    column_list = ("id", "player_id", "event_type", "occurred_at", "recorded_at", "source_model", "source_id",
                   "origin", "origin_id", "team_id", "tournament_id", "is_private", "reverses_event_id")
    column_filters = ("event_type", "origin", "player_id", "is_private")
    column_default_sort = ("id", True)


class StatsRecordsView(ReadOnlyModelView):
    allowed_roles = ("admin", "engineer", "trust_safety", "privacy")
    column_filters = ("scope", "player_id")


class FindingRecordsView(ReadOnlyModelView):
    """Data-quality findings: repeats of a stored fact with a different payload."""

    allowed_roles = ("admin", "engineer")
    column_default_sort = ("id", True)
    column_filters = ("kind", "player_id")


class ReconciliationRunsView(ReadOnlyModelView):
    allowed_roles = ("admin", "engineer")
    column_exclude_list = ("error",)
    column_default_sort = ("id", True)
    column_filters = ("status", "fix")


class StaffRecordsView(ReadOnlyModelView):
    allowed_roles = ("admin",)
    column_list = ("id", "email", "roles", "active", "last_sign_in_at", "created_at")
    column_details_list = column_list


class AuditTrailView(ReadOnlyModelView):
    """The audit trail, filterable; nothing here (or anywhere) can change an entry."""

    allowed_roles = ("admin", "privacy")
    column_default_sort = ("id", True)
    column_filters = ("action", "staff_id", "target_type", "target_id", "ip_address")


MODEL_VIEWS = (
    (PlayerRecordsView, Player, "Players", "Platform records"),
    (TeamRecordsView, Team, "Teams", "Platform records"),
    (MembershipRecordsView, TeamMembership, "Team memberships", "Platform records"),
    (TournamentRecordsView, Tournament, "Tournaments", "Platform records"),
    (MatchRecordsView, Match, "Matches", "Platform records"),
    (RegistrationRecordsView, Registration, "Registrations", "Platform records"),
    (EventRecordsView, ActivityEvent, "Activity events", "Activity"),
    (StatsRecordsView, PlayerStats, "Player stats", "Activity"),
    (FindingRecordsView, DataQualityFinding, "Data-quality findings", "Activity"),
    (ReconciliationRunsView, ReconciliationRun, "Reconciliation runs", "Operations"),
    (StaffRecordsView, StaffUser, "Staff accounts", "Administration"),
    (AuditTrailView, AuditEntry, "Audit trail", "Administration"),
)
