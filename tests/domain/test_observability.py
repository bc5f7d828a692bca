"""Monitoring hears about every recording and every timeline or feed read, and never breaks them."""

from __future__ import annotations

import pytest

from tests.conftest import T0
from webapp.domain.errors import Invalid
from webapp.domain.privacy import Viewer
from webapp.domain.recording import NewEvent, record_events
from webapp.domain.timeline import feed_page, timeline_page
from webapp.observability import FEED_QUERY, RECORD_EVENTS, TIMELINE_QUERY, subscribe
from webapp.transaction import unit_of_work


@pytest.fixture
def observations():
    heard = []
    stop = subscribe(heard.append)
    yield heard
    stop()


def won(player_id: int, source_id: int) -> NewEvent:
    return NewEvent(player_id=player_id, event_type="match_won", occurred_at=T0,
                    source_model="match", source_id=source_id,
                    metadata={"round": "R1", "side": "a", "opponent_player_ids": []})


def test_recording_is_reported_with_its_outcome(session, make_player, observations):
    alice = make_player("alice")
    with unit_of_work(session):
        record_events(session, [won(alice.id, 1), won(alice.id, 1), won(alice.id, 2)])

    [seen] = [o for o in observations if o.operation == RECORD_EVENTS]
    assert len(seen.details["outcome"].recorded) == 2
    assert len(seen.details["outcome"].duplicates) == 1
    assert len(seen.details["facts"]) == 3
    assert seen.seconds > 0


def test_a_rejected_batch_is_not_reported(session, make_player, observations):
    alice = make_player("alice")
    with pytest.raises(Invalid), unit_of_work(session):
        record_events(session, [won(alice.id, 1), won(alice.id + 999, 2)])
    assert [o for o in observations if o.operation == RECORD_EVENTS] == []


def test_timeline_and_feed_reads_are_timed(session, make_player, observations):
    alice = make_player("alice")
    with unit_of_work(session):
        record_events(session, [won(alice.id, 1)])

    feed = feed_page(session, alice, Viewer.owner(alice.id))
    timeline_page(session, alice.id)

    assert len(feed.items) == 1
    operations = [o.operation for o in observations]
    assert operations.count(FEED_QUERY) == 1
    assert operations.count(TIMELINE_QUERY) == 2  # the feed reads through the timeline


def test_a_failing_subscriber_does_not_fail_recording(session, make_player):
    def broken(observation):
        raise RuntimeError("exporter down")

    stop = subscribe(broken)
    try:
        alice = make_player("alice")
        with unit_of_work(session):
            outcome = record_events(session, [won(alice.id, 1)])
        assert len(outcome.recorded) == 1
    finally:
        stop()
