"""Latency histograms of observed operations, added to the monitoring rollups by each process.

A recorder listens to ``webapp.observability`` and counts each duration in a
fixed histogram bin per (minute, operation) in memory. A background thread
adds the counts to ``monitoring_latency`` every few seconds, and once more at
exit, through its own short transaction: observations arrive inside the
caller's transaction (recording reports before its commit), and on SQLite a
second writer there would wait on the caller's own lock.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import Counter
from time import time

from flask import Flask, current_app, has_app_context

from webapp import observability
from webapp.database import WRITE_OPTION

log = logging.getLogger(__name__)

DEFAULT_FLUSH_SECONDS = 5.0


class LatencyRecorder:
    """Histogram counts of one app's observed operations, flushed to its database."""

    def __init__(self, app: Flask, flush_seconds: float = DEFAULT_FLUSH_SECONDS) -> None:
        self.app = app
        self.flush_seconds = flush_seconds
        self._counts: Counter[tuple[int, str, int]] = Counter()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe = None

    def start(self) -> None:
        """Listen to observations from now on, and flush at process exit."""
        self._unsubscribe = observability.subscribe(self.observe)
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop listening and flush what is left."""
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        self._wake.set()
        try:
            self.flush()
        except Exception:  # noqa: BLE001, S110 - at exit the database (and logging) may already be gone
            pass

    def observe(self, observation: observability.Observation) -> None:
        # Several apps may live in one process (tests, benchmarks): each counts its own.
        if not has_app_context() or current_app._get_current_object() is not self.app:
            return
        from webapp.domain.monitoring import latency_bin

        key = (int(time()) // 60, observation.operation, latency_bin(observation.seconds))
        with self._lock:
            self._counts[key] += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="latency-flush", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._wake.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # the next flush tries again with the counts kept
                log.exception("could not add latency counts to the rollups")

    def flush(self) -> int:
        """Add the counts gathered so far to the rollups; return how many observations they held."""
        from webapp.domain.monitoring import add_latency_counts
        from webapp.extensions import db

        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, Counter()
            if not counts:
                return 0
            try:
                with self.app.app_context(), db.engine.connect() as connection:
                    connection = connection.execution_options(**{WRITE_OPTION: True})
                    with connection.begin():
                        add_latency_counts(connection, counts)
            except Exception:
                with self._lock:
                    self._counts.update(counts)  # kept for the next flush
                raise
            return sum(counts.values())


def init_app(app: Flask) -> LatencyRecorder:
    """Record the app's operation latencies into the monitoring rollups."""
    recorder = LatencyRecorder(app, float(app.config.get("LATENCY_FLUSH_SECONDS", DEFAULT_FLUSH_SECONDS)))
    recorder.start()
    app.extensions["latency_recorder"] = recorder
    return recorder
