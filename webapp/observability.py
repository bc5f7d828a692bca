"""Timings and outcomes of the operations monitoring watches, told to whoever listens.

Domain code reports what it did (``observed``); metrics exporters and latency
rollups subscribe. With no subscriber the cost is two clock reads, so the
recording path stays as fast as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

#: Operations reported: recording events, and reading a player's timeline or feed.
RECORD_EVENTS = "record_events"
TIMELINE_QUERY = "timeline_query"
FEED_QUERY = "feed_query"
OPERATIONS = (RECORD_EVENTS, TIMELINE_QUERY, FEED_QUERY)


@dataclass
class Observation:
    """One finished operation: how long it took and what it was about.

    ``details`` holds what the operation adds: for RECORD_EVENTS the ``session``,
    and either the ``facts`` given and the ``outcome`` (a BatchOutcome) or, for
    facts recorded from the driver's values, ``outcome_counts`` (events per
    status, type and origin). An operation that raised is not reported.
    """

    operation: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Observation], None]
_subscribers: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> Callable[[], None]:
    """Call ``subscriber`` with every observation from now on; return a function that stops it."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)

    def unsubscribe() -> None:
        if subscriber in _subscribers:
            _subscribers.remove(subscriber)

    return unsubscribe


@contextmanager
def observed(operation: str, **details: Any) -> Iterator[dict[str, Any]]:
    """Time the block and tell subscribers; the block may add details to the yielded dict."""
    started = perf_counter()
    yield details
    notify(operation, perf_counter() - started, details)


def notify(operation: str, seconds: float, details: dict[str, Any]) -> None:
    """Tell subscribers that ``operation`` took ``seconds``; what ``observed`` does when its block ends.

    For the recording path, which times itself rather than pay for a generator
    context manager on every event.
    """
    if not _subscribers:
        return
    observation = Observation(operation, seconds, details)
    for subscriber in tuple(_subscribers):
        # Monitoring must never fail the operation it watches.
        try:
            subscriber(observation)
        except Exception:  # noqa: BLE001, S110
            pass
