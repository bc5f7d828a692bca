"""The request rate the platform is serving, for the safeguards of heavy jobs.

Every request adds one to a counter per second in the rate limiter's storage
(``webapp.extensions.limiter``). With the default memory storage that counts
the requests of this process (the web server runs its job consumer in the same
process, so a backfill started from the dashboard or a worker beside it sees
them); with Redis every process shares the counts.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from flask import Flask
from limits.storage import MemoryStorage

from webapp.extensions import limiter

log = logging.getLogger(__name__)

# Seconds the rate is averaged over, the current one included.
WINDOW_SECONDS = 5
_EXTENSION = "traffic_storage"


class ProcessCounter:
    """Per-second counts kept in this process: no threads, no I/O, safe across threads.

    limits' MemoryStorage would do, but it starts a timer thread to expire keys
    and races when two threads increment at once; a request must not pay for either.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def incr(self, key: str, expiry: int) -> int:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            if len(self._counts) > 4 * expiry:  # keys are per second: drop all but the newest
                for old in sorted(self._counts)[: -2 * expiry]:
                    del self._counts[old]
            return self._counts[key]

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)


def init_app(app: Flask) -> None:
    """Count every request the app serves."""
    # The storage the limiter built for this app (limiter.init_app runs first);
    # the limiter itself may later be bound to another app in the same process.
    storage = limiter.storage if limiter.enabled else None
    if storage is None or isinstance(storage, MemoryStorage):
        # In memory the count is per process anyway.
        storage = ProcessCounter()
    app.extensions[_EXTENSION] = storage

    @app.after_request
    def count_request(response):
        record_request(app)
        return response


def counts_every_process(app: Flask) -> bool:
    """Say whether the request counts are shared by every process, not this process's own."""
    return not isinstance(app.extensions[_EXTENSION], ProcessCounter)


def _key(app: Flask, second: int) -> str:
    return f"{app.config['QUEUE_NAME']}/requests/{second}"


def _second(now: datetime | float | None) -> int:
    if now is None:
        return int(time.time())
    if isinstance(now, datetime):
        return int(now.timestamp())
    return int(now)


def record_request(app: Flask, now: datetime | float | None = None) -> None:
    """Count one request served at ``now`` (default: this second)."""
    try:
        app.extensions[_EXTENSION].incr(_key(app, _second(now)), WINDOW_SECONDS * 2)
    except Exception:  # a lost count must never fail the request it belongs to
        log.exception("could not count a request in the rate limiter's storage")


def current_request_rate(
    app: Flask, now: datetime | float | None = None, window: int = WINDOW_SECONDS
) -> float:
    """Return the requests per second served over the last ``window`` seconds up to ``now``."""
    storage = app.extensions[_EXTENSION]
    second = _second(now)
    total = sum(storage.get(_key(app, s)) for s in range(second - window + 1, second + 1))
    return total / window
