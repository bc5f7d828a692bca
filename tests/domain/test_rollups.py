"""The monitoring rollups agree with a direct count of the events, whatever happened.

Hypothesis runs random sequences of live and backfill batches, reversals,
folds at random moments (some settling everything, some leaving the newest
events pending), archival runs and backfill rollbacks. After every sequence
and a last fold, the rollups count, per event type, exactly the events in the
hot table plus those archived plus those rolled back (the rollups count events
ever recorded); and the day buckets hold what the minute buckets hold.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from webapp.domain import archive, backfill, monitoring
from webapp.domain.audit import SYSTEM
from webapp.domain.errors import Conflict
from webapp.domain.recording import NewEvent, record_events
from webapp.jobs.runner import execute_run
from webapp.models import (
    ActivityEvent,
    ArchivedEventCount,
    ArchivedEventKey,
    ArchiveFile,
    BackfillBatch,
    EventVolumeRollup,
    JobRun,
    PlayerStats,
    RollupWatermark,
)
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work

AFTER_DAYS = 30
_sources = itertools.count(1)


@dataclass(frozen=True)
class Record:
    player: int
    event_types: tuple[str, ...]
    days_ago: int
    origin: str


@dataclass(frozen=True)
class Reverse:
    pick: int


@dataclass(frozen=True)
class Fold:
    # Minutes after now the fold believes it is: 0 leaves this session's events pending.
    minutes_later: int


@dataclass(frozen=True)
class Archive:
    pass


@dataclass(frozen=True)
class RollBack:
    """Roll back the backfill run's events, as a staff member undoing a bad backfill would."""


records = st.builds(
    Record,
    player=st.integers(0, 2),
    event_types=st.lists(st.sampled_from(("match_won", "match_lost", "match_forfeit_won")),
                         min_size=1, max_size=4).map(tuple),
    days_ago=st.sampled_from((2, 40, 400)),
    origin=st.sampled_from(("live", "backfill")),
)
steps = st.lists(
    st.one_of(records, records, st.builds(Reverse, pick=st.integers(0, 40)),
              st.builds(Fold, minutes_later=st.sampled_from((0, 5, 60))), st.just(Archive()),
              st.just(RollBack())),
    min_size=1,
    max_size=10,
)


@pytest.fixture
def players(session, make_player):
    return [make_player(f"roll{n}").id for n in range(3)]


def forget_everything(session) -> None:
    session.rollback()
    with unit_of_work(session):
        for model in (ArchivedEventKey, ArchiveFile, ArchivedEventCount, BackfillBatch, JobRun, ActivityEvent,
                      PlayerStats, EventVolumeRollup, RollupWatermark):
            session.execute(delete(model))


def record(session, players, step: Record, backfill_run: int) -> None:
    now = utcnow()
    facts = [
        NewEvent(
            player_id=players[step.player],
            event_type=event_type,
            occurred_at=now - timedelta(days=step.days_ago),
            source_model="match",
            source_id=next(_sources),
            origin=step.origin,
            origin_id=backfill_run if step.origin == "backfill" else None,
            metadata={"round": "R1", "side": "a", "opponent_player_ids": [999]},
        )
        for event_type in step.event_types
    ]
    with unit_of_work(session):
        inserted = [outcome.event_id for outcome in record_events(session, facts).recorded]
        if step.origin == "backfill" and inserted and backfill_run:
            # The ledger line a backfill batch writes: where a rollback finds its events.
            batch_no = session.scalar(select(func.count()).select_from(BackfillBatch)) + 1
            session.add(BackfillBatch(run_id=backfill_run, batch_no=batch_no, events_inserted=len(inserted),
                                      first_event_id=min(inserted), last_event_id=max(inserted),
                                      checkpoint_after=backfill.START.as_checkpoint(), started_at=now,
                                      finished_at=now))


def roll_back(session, backfill_run: int, rolled_back: Counter[str]) -> None:
    session.rollback()
    ranges = backfill.event_ranges(session, backfill_run)
    doomed = Counter(dict(session.execute(
        select(ActivityEvent.event_type, func.count())
        .where(ActivityEvent.origin == "backfill", ActivityEvent.origin_id == backfill_run)
        .group_by(ActivityEvent.event_type)
    ).all()))
    session.rollback()
    try:
        with unit_of_work(session):
            after = 0
            while (chunk := backfill.rollback_chunk(session, backfill_run, ranges, after, 3)) is not None:
                after = chunk.last_event_id
    except Conflict:
        return  # a reversal refers to one of them: nothing was deleted
    rolled_back.update(doomed)


def reverse(session, step: Reverse) -> None:
    session.rollback()
    reversible = session.scalars(
        select(ActivityEvent)
        .where(ActivityEvent.reverses_event_id.is_(None), ~ActivityEvent.event_type.like("%_reversed"),
               ~ActivityEvent.id.in_(select(ActivityEvent.reverses_event_id).where(
                   ActivityEvent.reverses_event_id.is_not(None))))
        .order_by(ActivityEvent.id)
    ).all()
    if not reversible:
        return
    original = reversible[step.pick % len(reversible)]
    with unit_of_work(session):
        record_events(session, [NewEvent(
            player_id=original.player_id,
            event_type=f"{original.event_type}_reversed",
            occurred_at=original.occurred_at + timedelta(hours=1),
            source_model="dispute_resolution",
            source_id=next(_sources),
            origin="dispute",
            reverses_event_id=original.id,
        )])


def fold(session, minutes_later: int) -> None:
    with unit_of_work(session):
        monitoring.fold_event_volume(session, now=utcnow() + timedelta(minutes=minutes_later))


def archive_old_events(session, url: str) -> None:
    with unit_of_work(session):
        run_id = archive.start_archive(session, SYSTEM, now=utcnow(), after_days=AFTER_DAYS, url=url).id
    assert execute_run(session, run_id).status == "succeeded"
    session.rollback()


def direct_counts(session, rolled_back: Counter[str] | None = None) -> Counter[str]:
    """Events per type counted the slow way: the hot table, the archived totals and what was rolled back."""
    hot = session.execute(
        select(ActivityEvent.event_type, func.count()).group_by(ActivityEvent.event_type)
    ).all()
    archived = session.execute(
        select(ArchivedEventCount.event_type, func.sum(ArchivedEventCount.n))
        .group_by(ArchivedEventCount.event_type)
    ).all()
    counts = Counter({t: n for t, n in hot})
    counts.update({t: int(n) for t, n in archived})
    counts.update(rolled_back or {})
    session.rollback()
    return +counts


def rollup_by_grain(session, grain: str) -> Counter[str]:
    table = EventVolumeRollup.__table__
    rows = session.execute(
        select(table.c.event_type, func.sum(table.c.settled + table.c.pending))
        .where(table.c.grain == grain).group_by(table.c.event_type)
    ).all()
    session.rollback()
    return +Counter({t: int(n) for t, n in rows})


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=steps, last_fold=st.sampled_from((0, 60)))
def test_rollups_agree_with_a_direct_count_after_any_sequence(session, players, tmp_path, steps, last_fold):
    forget_everything(session)
    with unit_of_work(session):
        backfill_run = JobRun(kind="backfill", status="succeeded")
        session.add(backfill_run)
    rolled_back: Counter[str] = Counter()
    for step in steps:
        if isinstance(step, Record):
            record(session, players, step, backfill_run.id)
        elif isinstance(step, Reverse):
            reverse(session, step)
        elif isinstance(step, Fold):
            fold(session, step.minutes_later)
        elif isinstance(step, RollBack):
            roll_back(session, backfill_run.id, rolled_back)
        else:
            archive_old_events(session, str(tmp_path / "cold"))
    fold(session, last_fold)

    expected = direct_counts(session, rolled_back)
    assert rollup_by_grain(session, "day") == expected
    # Every event was recorded just now, well inside the minute buckets' retention.
    assert rollup_by_grain(session, "minute") == expected
    assert monitoring.recorded_totals(session) == dict(expected)


def test_archival_before_the_fold_keeps_the_archived_events_counted(session, players, tmp_path):
    forget_everything(session)
    record(session, players, Record(0, ("match_won", "match_lost"), 400, "live"), backfill_run=0)
    archive_old_events(session, str(tmp_path / "cold"))
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == 0
    session.rollback()

    fold(session, 60)

    assert rollup_by_grain(session, "day") == {"match_won": 1, "match_lost": 1}


def test_a_fold_settles_only_events_recorded_before_the_settle_window(session, players):
    forget_everything(session)
    record(session, players, Record(0, ("match_won",), 2, "live"), backfill_run=0)
    with unit_of_work(session):
        early = monitoring.fold_event_volume(session, now=utcnow())
    record(session, players, Record(1, ("match_lost",), 2, "live"), backfill_run=0)
    with unit_of_work(session):
        later = monitoring.fold_event_volume(session, now=utcnow() + timedelta(hours=1))

    assert (early.settled_events, early.pending_events) == (0, 1)
    assert (later.settled_events, later.pending_events) == (2, 0)
    table = EventVolumeRollup.__table__
    assert session.scalar(select(func.sum(table.c.pending))) == 0
    assert session.scalar(select(func.sum(table.c.settled))) == 4  # minute and day buckets


def test_folding_twice_counts_nothing_twice(session, players):
    forget_everything(session)
    record(session, players, Record(2, ("match_won", "match_lost"), 2, "backfill"), backfill_run=0)
    fold(session, 60)
    fold(session, 60)
    fold(session, 0)

    assert rollup_by_grain(session, "day") == {"match_won": 1, "match_lost": 1}


def test_an_unknown_range_is_refused_with_the_ranges_there_are():
    from webapp.domain.errors import Invalid

    with pytest.raises(Invalid, match="range must be one of 24h, 30d, 90d, not '7y'"):
        monitoring.time_range("7y")
    assert monitoring.time_range(None).key == "24h"


def test_the_volume_series_puts_each_bucket_in_its_minute_and_day(session, players):
    forget_everything(session)
    record(session, players, Record(0, ("match_won", "match_won", "match_lost"), 2, "live"), backfill_run=0)
    fold(session, 60)
    now = utcnow()

    minutes = monitoring.event_volume(session, monitoring.time_range("24h"), now=now)
    days = monitoring.event_volume(session, monitoring.time_range("90d"), now=now)

    assert len(minutes.times) == 1440 and len(days.times) == 90
    assert minutes.times[-1] == now.replace(second=0, microsecond=0)
    assert days.times[-1] == datetime(now.year, now.month, now.day, tzinfo=UTC)
    assert sum(minutes.by_type["match_won"][-2:]) == 2 and minutes.total == 2 + 1
    assert days.by_type == {"match_won": [0] * 89 + [2], "match_lost": [0] * 89 + [1]}
    assert list(days.by_type) == ["match_won", "match_lost"]  # busiest type first


def test_quantiles_interpolate_within_the_histogram_bins():
    bins = Counter({monitoring.latency_bin(0.004): 50, monitoring.latency_bin(0.04): 50})

    assert monitoring.quantile(bins, 0.5) == pytest.approx(0.005)
    assert 0.03 < monitoring.quantile(bins, 0.95) <= 0.05
    assert monitoring.quantile(Counter(), 0.5) is None
    assert monitoring.quantile(Counter({len(monitoring.LATENCY_BOUNDS): 3}), 0.99) == 30.0


def test_an_event_committed_after_a_larger_id_was_folded_is_still_counted(app, session, players, backend):
    if backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time: ids always commit in order there")
    from sqlalchemy.orm import Session

    from webapp.database import begin_write
    from webapp.extensions import db

    forget_everything(session)
    slow = Session(bind=db.engine)
    try:
        begin_write(slow)
        record_events(slow, [NewEvent(player_id=players[0], event_type="match_won", occurred_at=utcnow(),
                                      source_model="match", source_id=next(_sources),
                                      metadata={"round": "R1", "side": "a", "opponent_player_ids": [9]})])
        slow.flush()  # the smaller id, not committed yet
        record(session, players, Record(1, ("match_lost",), 2, "live"), backfill_run=0)
        fold(session, 0)
        assert rollup_by_grain(session, "day") == {"match_lost": 1}
        slow.commit()
    finally:
        slow.close()

    fold(session, 0)
    assert rollup_by_grain(session, "day") == {"match_won": 1, "match_lost": 1}
    fold(session, 60)
    assert rollup_by_grain(session, "day") == {"match_won": 1, "match_lost": 1}


def test_events_deleted_before_the_fold_stay_counted_and_leave_the_hot_row_count(session, players):
    forget_everything(session)
    record(session, players, Record(0, ("match_won", "match_lost", "match_forfeit_won"), 2, "backfill"),
           backfill_run=0)
    ids = list(session.scalars(select(ActivityEvent.id).order_by(ActivityEvent.id)))
    session.rollback()

    # As a backfill rollback does: note them, then delete them, in one unit of work.
    with unit_of_work(session):
        monitoring.note_removed(session, ids[:2], archived=False)
        session.execute(delete(ActivityEvent).where(ActivityEvent.id.in_(ids[:2])))
    fold(session, 60)

    assert rollup_by_grain(session, "day") == {"match_won": 1, "match_lost": 1, "match_forfeit_won": 1}
    assert session.get(RollupWatermark, monitoring.EVENT_VOLUME).removed_events == 2
    session.rollback()
    if session.get_bind().dialect.name == "sqlite":
        size = monitoring.table_size(session, alert_bytes=None, archive_after_days=30)
        assert size.rows == 1 and size.bytes > 0


def test_the_periodic_task_folds_in_its_own_transaction(app, session, players):
    forget_everything(session)
    record(session, players, Record(0, ("match_won",), 2, "live"), backfill_run=0)

    app.extensions["huey_tasks"].fold_event_volume.call_local()

    assert rollup_by_grain(session, "day") == {"match_won": 1}


def test_a_rolled_back_backfill_leaves_the_hot_table_but_not_the_counts(session, players):
    forget_everything(session)
    with unit_of_work(session):
        run = JobRun(kind="backfill", status="succeeded")
        session.add(run)
    record(session, players, Record(1, ("match_won", "match_lost"), 2, "backfill"), backfill_run=run.id)
    rolled_back: Counter[str] = Counter()

    roll_back(session, run.id, rolled_back)
    fold(session, 60)

    assert rolled_back == {"match_won": 1, "match_lost": 1}
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == 0
    session.rollback()
    assert rollup_by_grain(session, "day") == direct_counts(session, rolled_back) == rolled_back
