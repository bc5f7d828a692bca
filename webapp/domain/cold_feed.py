"""A player's archived events, read back from cold storage and presented like the hot feed.

Reading cold storage means opening and scanning archive files, so it happens
only when a caller asks for it. The events come back with the same redaction
as ``webapp.domain.timeline.feed_page`` gives the hot ones, each marked
``from_cold_storage``. Archival only moves events older than every hot event
of the time, so these read as the continuation of the hot timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from webapp.domain.archive import ArchiveStorage, ColdEvent, archived_events_for_player
from webapp.domain.errors import Forbidden
from webapp.domain.privacy import FeedOwner, Viewer, can_view_feed, present_event
from webapp.domain.timeline import TimelineFilters, names_and_reversal_links

# Rows presented at most: a player's whole archive can be years of events.
DEFAULT_LIMIT = 200


@dataclass(frozen=True)
class ColdFeed:
    """Archived events as one viewer may see them, newest first (JSON-ready dicts).

    ``total`` counts every archived event the filters match; ``items`` holds
    at most the limit asked for.
    """

    items: list[dict[str, Any]]
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.items)


def archived_feed(
    session: Session,
    player: FeedOwner,
    viewer: Viewer,
    *,
    storage: ArchiveStorage,
    filters: TimelineFilters | None = None,
    limit: int = DEFAULT_LIMIT,
) -> ColdFeed:
    """Return ``player``'s archived events matching ``filters``, presented for ``viewer``.

    The filters mean what they mean for ``feed_page``, including a redacted
    viewer's tournament filter matching only events of public tournaments.

    :raise Forbidden: if ``viewer`` may not see this feed.
    :raise ArchiveVerificationFailed: if an archive file holding the player's events cannot be read.
    """
    if not can_view_feed(player, viewer):
        raise Forbidden("this player's feed is private")
    filters = filters or TimelineFilters()
    if filters.tournament_id is not None and not viewer.sees_everything_of(player.id):
        filters = replace(filters, exclude_private=True)
    events = [
        event
        for event in archived_events_for_player(
            session,
            player.id,
            storage=storage,
            occurred_from=filters.occurred_from,
            occurred_to=filters.occurred_to,
        )
        if _matches(event, filters)
    ]
    shown = events[:limit]
    names, reversed_by = names_and_reversal_links(session, shown)
    items = [
        present_event(event, viewer, names, reversed_by=reversed_by.get(event.id))
        | {"from_cold_storage": True}
        for event in shown
    ]
    return ColdFeed(items, len(events))


def _matches(event: ColdEvent, filters: TimelineFilters) -> bool:
    """The hot timeline's filters (``timeline._filtered``) applied to one archived event."""
    return (
        (not filters.event_types or event.event_type in filters.event_types)
        and (not filters.origins or event.origin in filters.origins)
        and (filters.tournament_id is None or event.tournament_id == filters.tournament_id)
        and not (filters.exclude_private and event.is_private)
    )
