"""Latency histograms: every process adds its counts, flushed outside the caller's transaction."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from tests.domain.test_recording import won
from webapp import observability
from webapp.domain import monitoring
from webapp.domain.recording import record_events
from webapp.latency import LatencyRecorder
from webapp.models import LatencyRollup
from webapp.observability import FEED_QUERY, Observation
from webapp.transaction import unit_of_work


def stored(session, grain: str = "minute") -> int:
    n = session.scalar(select(func.coalesce(func.sum(LatencyRollup.n), 0)).where(LatencyRollup.grain == grain))
    session.rollback()
    return n


def test_two_processes_add_their_counts_to_the_same_histogram(app, session):
    first, second = LatencyRecorder(app), LatencyRecorder(app)
    for recorder, seconds in ((first, 0.004), (first, 0.004), (second, 0.2)):
        recorder.observe(Observation(FEED_QUERY, seconds))

    assert first.flush() == 2 and second.flush() == 1
    assert first.flush() == 0  # nothing is added twice

    assert stored(session) == 3 and stored(session, "day") == 3
    series = monitoring.latency(session, monitoring.time_range("24h"))
    assert series.counts[FEED_QUERY][-1] == 3
    assert series.by_operation[FEED_QUERY][0.5][-1] < 5 < series.by_operation[FEED_QUERY][0.99][-1]


def test_recording_inside_a_transaction_is_timed_and_flushed_in_the_background(app, session, make_player):
    recorder = LatencyRecorder(app, flush_seconds=0.05)
    stop_listening = observability.subscribe(recorder.observe)
    try:
        alice = make_player("alice")
        with unit_of_work(session):
            record_events(session, [won(alice, source_id=1)])
            # Still inside the caller's transaction (on SQLite, holding the write lock):
            # the recorder only counts, it never writes from here.
        deadline = time.monotonic() + 10
        while stored(session) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_listening()
        recorder.stop()
    assert stored(session) == 1


def test_observations_of_another_app_are_not_counted(app, session):
    other = LatencyRecorder(object())  # an app that is not the current one
    other.observe(Observation(FEED_QUERY, 0.01))
    assert other.flush() == 0
