"""Garbage collection for batch work: fewer walks over what was alive before it.

A batch of a job (a backfill's, an import's) allocates tens of thousands of
short-lived rows, records and events. With the default thresholds the cyclic
collector keeps running, and each older-generation run walks everything alive
(the app, the session's identity map): a third of a backfill's CPU time. While
batch work runs, objects alive before it are frozen out of those walks and the
young generation may grow larger between collections. Cycles are still
collected, and the settings are put back when the last batch work ends.

The settings are process-wide and jobs may run in several worker threads at
once, so nested and concurrent uses share one setting: the first to enter sets
it, the last to leave restores it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_GENERATION_THRESHOLD = 50_000

_lock = threading.Lock()
_users = 0
_saved_thresholds: tuple[int, int, int] | None = None


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect garbage less often while the enclosed batch work runs."""
    global _users, _saved_thresholds
    with _lock:
        if _users == 0:
            _saved_thresholds = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(
                max(_saved_thresholds[0], YOUNG_GENERATION_THRESHOLD), *_saved_thresholds[1:]
            )
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved_thresholds is not None:
                gc.set_threshold(*_saved_thresholds)
                gc.unfreeze()
