"""Timelines: newest first, keyset pages without gaps or repeats, filters, constant query count."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event as sa_event

from tests.conftest import T0
from webapp.domain.cursors import encode_cursor
from webapp.domain.errors import Forbidden, Invalid
from webapp.domain.privacy import Viewer
from webapp.domain.recording import NewEvent, record_events
from webapp.domain.timeline import (
    TimelineFilters,
    feed_page,
    load_names,
    names_and_reversal_links,
    reversal_links,
    timeline_page,
)
from webapp.models.activity import ActivityEvent
from webapp.transaction import unit_of_work


def match_event(player, source_id, *, at=T0, kind="match_won", opponents=(), **fields) -> NewEvent:
    return NewEvent(
        player_id=player.id,
        event_type=kind,
        occurred_at=at,
        source_model="match",
        source_id=source_id,
        metadata={"round": "R1", "side": "a", "opponent_player_ids": [o.id for o in opponents]},
        **fields,
    )


def reversal_of(player, event_id, *, at) -> NewEvent:
    """The match_won_reversed a dispute resolution records for ``event_id`` (of match 1)."""
    return NewEvent(
        player_id=player.id,
        event_type="match_won_reversed",
        occurred_at=at,
        source_model="dispute",
        source_id=5,
        origin="dispute",
        origin_id=5,
        metadata={"match_id": 1},
        reverses_event_id=event_id,
    )


def record(session, facts) -> list[int]:
    with unit_of_work(session):
        outcome = record_events(session, facts)
    return [o.event_id for o in outcome.outcomes]


def all_pages(session, player, limit, filters=None) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = timeline_page(session, player.id, filters=filters, cursor=cursor, limit=limit)
        pages.append([event.id for event in page.events])
        cursor = page.next_cursor
        if cursor is None:
            return pages


def test_a_timeline_lists_only_the_players_events_newest_first(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    record(
        session,
        [
            match_event(alice, 1, at=T0),
            match_event(alice, 2, at=T0 + timedelta(days=2)),
            match_event(alice, 3, at=T0 + timedelta(days=1)),
            match_event(bob, 4, at=T0 + timedelta(days=3)),
        ],
    )

    page = timeline_page(session, alice.id)

    assert [event.source_id for event in page.events] == [2, 3, 1]
    assert {event.player_id for event in page.events} == {alice.id}
    assert page.next_cursor is None


def test_an_empty_timeline_is_one_empty_page(session, make_player):
    alice = make_player("alice")
    page = timeline_page(session, alice.id)
    assert page.events == []
    assert page.next_cursor is None


def test_a_page_reads_every_column_as_the_model_does(
    session, make_player, make_team, make_tournament, backend
):
    alice, bob = make_player("alice"), make_player("bob")
    team, secret = make_team("Blue", [alice]), make_tournament("Secret Cup", is_private=True)
    won, _ = record(
        session,
        [
            match_event(
                alice, 1, at=T0 + timedelta(microseconds=7), opponents=[bob], team_id=team.id,
                tournament_id=secret.id, origin="backfill", origin_id=3,
            ),
            match_event(alice, 2, at=T0 - timedelta(days=400)),
        ],
    )
    record(session, [reversal_of(alice, won, at=T0 + timedelta(hours=1))])
    # A row written by another tool: its own offset on the time, spaces around the JSON.
    metadata = "CAST(:metadata AS JSONB)" if backend == "postgresql" else ":metadata"
    with unit_of_work(session):
        session.execute(
            sa.text(
                "INSERT INTO activity_events (player_id, event_type, occurred_at, recorded_at,"
                " source_model, source_id, origin, is_private, metadata)"
                " VALUES (:player_id, 'match_lost', :at, :at, 'match', 9, 'live', :no, "
                + metadata + ")"
            ),
            {"player_id": alice.id, "at": "2026-03-01 12:00:00+02:00", "no": False,
             "metadata": ' {"round": "R2", "opponent_player_ids": [] } '},
        )

    events = timeline_page(session, alice.id).events
    stored = session.scalars(
        sa.select(ActivityEvent)
        .where(ActivityEvent.player_id == alice.id)
        .order_by(ActivityEvent.occurred_at.desc(), ActivityEvent.id.desc())
    ).all()

    assert len(events) == len(stored) == 4
    for event, model in zip(events, stored, strict=True):
        for name in (f.name for f in dataclasses.fields(event)):
            assert getattr(event, name) == getattr(model, name), name
            assert type(getattr(event, name)) is type(getattr(model, name)), name
        assert event.occurred_at.utcoffset() == event.recorded_at.utcoffset() == timedelta(0)
    assert events[-1].occurred_at == T0 - timedelta(days=400)
    assert events[-2].details == {"round": "R2", "opponent_player_ids": []}


@pytest.mark.parametrize("limit", [1, 3, 5, 7, 23, 24])
def test_keyset_pages_cover_every_event_once_even_when_times_are_equal(session, make_player, limit):
    alice = make_player("alice")
    # 23 events on 4 distinct instants: most pages end inside a run of equal times.
    ids = record(
        session, [match_event(alice, n, at=T0 + timedelta(minutes=n % 4)) for n in range(23)]
    )

    pages = all_pages(session, alice, limit)

    seen = [event_id for page in pages for event_id in page]
    assert len(seen) == len(set(seen)) == 23
    by_time = sorted(ids, key=lambda i: (T0 + timedelta(minutes=(i - ids[0]) % 4), i), reverse=True)
    assert seen == by_time
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit


def test_a_page_that_ends_exactly_at_the_last_event_says_there_is_no_more(session, make_player):
    alice = make_player("alice")
    record(session, [match_event(alice, n, at=T0 + timedelta(minutes=n)) for n in range(4)])

    first = timeline_page(session, alice.id, limit=2)
    second = timeline_page(session, alice.id, cursor=first.next_cursor, limit=2)

    assert first.next_cursor is not None
    assert len(second.events) == 2
    assert second.next_cursor is None


def test_events_recorded_after_the_first_page_do_not_shift_later_pages(session, make_player):
    alice = make_player("alice")
    record(session, [match_event(alice, n, at=T0 + timedelta(minutes=n)) for n in range(6)])
    first = timeline_page(session, alice.id, limit=3)

    record(session, [match_event(alice, 100, at=T0 + timedelta(days=1))])
    second = timeline_page(session, alice.id, cursor=first.next_cursor, limit=3)

    assert [e.source_id for e in first.events] == [5, 4, 3]
    assert [e.source_id for e in second.events] == [2, 1, 0]


def test_filter_by_event_type(session, make_player):
    alice = make_player("alice")
    record(
        session,
        [
            match_event(alice, 1, kind="match_won"),
            match_event(alice, 2, kind="match_lost"),
            match_event(alice, 3, kind="match_forfeit_won"),
        ],
    )

    page = timeline_page(
        session, alice.id, filters=TimelineFilters(event_types=("match_won", "match_forfeit_won"))
    )

    assert sorted(e.event_type for e in page.events) == ["match_forfeit_won", "match_won"]


def test_filter_by_date_range_includes_the_start_and_excludes_the_end(session, make_player):
    alice = make_player("alice")
    record(session, [match_event(alice, day, at=T0 + timedelta(days=day)) for day in range(5)])

    filters = TimelineFilters(
        occurred_from=T0 + timedelta(days=1), occurred_to=T0 + timedelta(days=3)
    )
    page = timeline_page(session, alice.id, filters=filters)

    assert [e.source_id for e in page.events] == [2, 1]


def test_filter_by_origin(session, make_player):
    alice = make_player("alice")
    record(
        session,
        [
            match_event(alice, 1, origin="live"),
            match_event(alice, 2, origin="backfill", origin_id=7),
            match_event(alice, 3, origin="staff", origin_id=3),
        ],
    )

    page = timeline_page(session, alice.id, filters=TimelineFilters(origins=("backfill", "staff")))

    assert sorted((e.origin, e.origin_id) for e in page.events) == [("backfill", 7), ("staff", 3)]


def test_filter_by_tournament(session, make_player, make_tournament):
    alice = make_player("alice")
    spring, autumn = make_tournament("Spring Cup"), make_tournament("Autumn Cup")
    record(
        session,
        [
            match_event(alice, 1, tournament_id=spring.id),
            match_event(alice, 2, tournament_id=autumn.id),
            match_event(alice, 3),
        ],
    )

    page = timeline_page(session, alice.id, filters=TimelineFilters(tournament_id=autumn.id))

    assert [e.source_id for e in page.events] == [2]


def test_filters_combine_and_page_by_keyset(session, make_player):
    alice = make_player("alice")
    record(
        session,
        [
            match_event(
                alice,
                n,
                at=T0 + timedelta(minutes=n // 3),
                kind=("match_won", "match_lost")[n % 2],
                origin=("live", "backfill")[n % 3 == 0],
                origin_id=1 if n % 3 == 0 else None,
            )
            for n in range(30)
        ],
    )
    filters = TimelineFilters(event_types=("match_won",), origins=("live",))

    pages = all_pages(session, alice, 2, filters)

    expected = [n for n in range(30) if n % 2 == 0 and n % 3 != 0]
    seen = [e for page in pages for e in page]
    assert len(seen) == len(set(seen)) == len(expected)
    events = timeline_page(session, alice.id, filters=filters, limit=100).events
    assert sorted(e.source_id for e in events) == expected


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"event_types": ("match_wonn",)}, "unknown event type"),
        ({"origins": ("import",)}, "unknown origin"),
        ({"occurred_from": T0.replace(tzinfo=None)}, "timezone-aware"),
        ({"occurred_from": T0, "occurred_to": T0}, "before occurred_to"),
        ({"tournament_id": "3"}, "integer"),
    ],
)
def test_bad_filters_are_refused_with_a_clear_message(fields, message):
    with pytest.raises(Invalid, match=message):
        TimelineFilters(**fields)


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        "",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(json.dumps({"id": 3}).encode()).decode(),
        encode_cursor({"occurred_at": "2026-03-02T18:00:00", "id": 3}),  # no timezone
        encode_cursor({"occurred_at": "yesterday", "id": 3}),
        encode_cursor({"occurred_at": T0.isoformat(), "id": "3"}),
        encode_cursor({"username": "alice", "id": 3}),  # a player-search cursor
    ],
)
def test_a_bad_cursor_is_invalid_with_a_clear_message(session, make_player, cursor):
    alice = make_player("alice")
    with pytest.raises(Invalid, match="invalid cursor"):
        timeline_page(session, alice.id, cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, 201, "10", True])
def test_a_limit_outside_the_allowed_range_is_invalid(session, make_player, limit):
    alice = make_player("alice")
    with pytest.raises(Invalid, match="limit"):
        timeline_page(session, alice.id, limit=limit)


def test_load_names_finds_players_teams_and_tournaments_in_one_statement(
    session, make_player, make_team, make_tournament, count_queries
):
    alice, bob, carol, dave = (make_player(n) for n in ("alice", "bob", "carol", "dave"))
    owls, foxes = make_team("Owls", [alice]), make_team("Foxes", [carol, dave])
    cup = make_tournament("Secret Cup", is_private=True)
    record(
        session,
        [
            NewEvent(
                player_id=alice.id,
                event_type="match_won",
                occurred_at=T0,
                source_model="match",
                source_id=1,
                team_id=owls.id,
                tournament_id=cup.id,
                metadata={
                    "round": "R1",
                    "side": "a",
                    "opponent_player_ids": [carol.id, dave.id],
                    "opponent_team_id": foxes.id,
                },
            ),
            match_event(alice, 2, opponents=[bob]),
        ],
    )
    events = timeline_page(session, alice.id).events

    with count_queries() as counter:
        names = load_names(session, events)

    assert counter["n"] == 1
    assert {p.username for p in names.players.values()} == {"bob", "carol", "dave"}
    assert names.players[bob.id].public_id == bob.public_id
    assert dict(names.teams) == {owls.id: "Owls", foxes.id: "Foxes"}
    assert names.tournaments[cup.id].name == "Secret Cup"
    assert names.tournaments[cup.id].is_private is True


def test_load_names_leaves_out_players_that_no_longer_exist(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    record(
        session,
        [
            NewEvent(
                player_id=alice.id,
                event_type="match_won",
                occurred_at=T0,
                source_model="match",
                source_id=1,
                metadata={"round": "R1", "side": "a", "opponent_player_ids": [bob.id, 999_999]},
            ),
        ],
    )
    names = load_names(session, timeline_page(session, alice.id).events)
    assert set(names.players) == {bob.id}


def test_load_names_of_an_empty_page_runs_no_query(session, count_queries):
    with count_queries() as counter:
        names = load_names(session, [])
    assert counter["n"] == 0
    assert not names.players and not names.teams and not names.tournaments


def test_reversal_links_say_which_event_undid_which(session, make_player):
    alice = make_player("alice")
    won, kept = record(session, [match_event(alice, 1), match_event(alice, 2)])
    [reversal] = record(session, [reversal_of(alice, won, at=T0 + timedelta(days=1))])
    page = timeline_page(session, alice.id)

    links = reversal_links(session, page.events)
    items = feed_page(session, alice, Viewer.owner(alice.id)).items

    assert links == {won: reversal}
    by_id = {item["id"]: item for item in items}
    assert by_id[won]["reversed_by_event_id"] == reversal
    assert by_id[kept]["reversed_by_event_id"] is None
    assert by_id[reversal]["reverses_event_id"] == won
    assert f"#{won}" in by_id[reversal]["summary"]


def test_names_and_reversal_links_of_a_page_come_from_one_statement(
    session, make_player, make_tournament, count_queries
):
    alice, bob = make_player("alice"), make_player("bob")
    cup = make_tournament("Spring Cup")
    won, _ = record(
        session,
        [
            match_event(alice, 1, opponents=[bob], tournament_id=cup.id),
            match_event(alice, 2, opponents=[bob]),
        ],
    )
    [reversal] = record(session, [reversal_of(alice, won, at=T0 + timedelta(days=1))])
    events = timeline_page(session, alice.id).events

    with count_queries() as counter:
        names, reversed_by = names_and_reversal_links(session, events)

    assert counter["n"] == 1
    assert reversed_by == {won: reversal} == reversal_links(session, events)
    assert names == load_names(session, events)
    assert names.players[bob.id].username == "bob"
    assert names.tournaments[cup.id].name == "Spring Cup"


def test_statements_per_feed_page_do_not_grow_with_the_page_size(
    session, make_player, make_team, make_tournament, count_queries
):
    alice = make_player("alice", feed_visibility="public")
    opponents = [make_player(f"opponent{n}") for n in range(20)]
    tournaments = [make_tournament(f"Cup {n}", is_private=n % 2 == 0) for n in range(20)]
    teams = [make_team(f"Team {n}", [opponents[n]]) for n in range(20)]
    record(
        session,
        [
            NewEvent(
                player_id=alice.id,
                event_type="match_lost",
                occurred_at=T0 + timedelta(minutes=n),
                source_model="match",
                source_id=n,
                tournament_id=tournaments[n].id,
                metadata={
                    "round": "R1",
                    "side": "b",
                    "opponent_player_ids": [opponents[n].id],
                    "opponent_team_id": teams[n].id,
                },
            )
            for n in range(20)
        ],
    )

    counts = {}
    for limit in (1, 5, 20):
        assert (
            alice.feed_visibility == "public"
        )  # loaded, and the transaction begun, outside the count
        with count_queries() as counter:
            page = feed_page(session, alice, Viewer.public(), limit=limit)
        assert len(page.items) == limit
        counts[limit] = counter["n"]

    assert counts[1] == counts[5] == counts[20] == 2  # keyset; names and reversals


def test_a_private_feed_is_refused_to_the_public_and_other_players(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    record(session, [match_event(alice, 1)])

    for viewer in (Viewer.public(), Viewer.player(bob.id)):
        with pytest.raises(Forbidden):
            feed_page(session, alice, viewer)
    assert len(feed_page(session, alice, Viewer.owner(alice.id)).items) == 1
    assert len(feed_page(session, alice, Viewer.staff_redacted()).items) == 1


def test_a_redacted_viewer_cannot_tie_masked_events_to_a_private_tournament_by_filtering(
    session, make_player, make_tournament
):
    alice = make_player("alice", feed_visibility="public")
    secret = make_tournament("Secret Cup", is_private=True)
    record(session, [match_event(alice, 1, tournament_id=secret.id), match_event(alice, 2)])
    by_secret = TimelineFilters(tournament_id=secret.id)

    assert feed_page(session, alice, Viewer.public(), filters=by_secret).items == []
    assert feed_page(session, alice, Viewer.staff_redacted(), filters=by_secret).items == []
    assert len(feed_page(session, alice, Viewer.owner(alice.id), filters=by_secret).items) == 1
    assert (
        len(feed_page(session, alice, Viewer.staff_full("ticket 12"), filters=by_secret).items) == 1
    )
    # Without the filter the private event is there for the public, masked.
    assert len(feed_page(session, alice, Viewer.public()).items) == 2


def test_the_keyset_query_reads_the_timeline_index(session, make_player, backend):
    alice = make_player("alice")
    record(session, [match_event(alice, n, at=T0 + timedelta(minutes=n)) for n in range(5)])
    first = timeline_page(session, alice.id, limit=2)
    captured = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM activity_events" in statement and not statement.startswith("EXPLAIN"):
            captured.append((statement, parameters))

    engine = session.get_bind()
    sa_event.listen(engine, "before_cursor_execute", capture)
    try:
        timeline_page(session, alice.id, cursor=first.next_cursor, limit=2)
    finally:
        sa_event.remove(engine, "before_cursor_execute", capture)
    [(statement, parameters)] = captured

    connection = session.connection()
    if backend == "postgresql":
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars().all()
    else:
        plan = [
            row[3]
            for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        ]
    session.rollback()
    plan_text = "\n".join(plan)
    assert "ix_activity_events_player_timeline" in plan_text
    assert "Sort" not in plan_text and "TEMP B-TREE" not in plan_text, plan_text
    if backend == "postgresql":
        assert "OFFSET" not in statement
    else:  # SQLAlchemy's SQLite dialect always writes an OFFSET after a LIMIT; it stays 0
        assert statement.rstrip().endswith("OFFSET ?") and parameters[-1] == 0
