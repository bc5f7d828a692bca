"""Recording events: idempotency, conflicts, stats updated with each inserted event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select

from tests.conftest import T0, query_plan
from webapp.domain.errors import Invalid
from webapp.domain.recording import (
    NewEvent,
    RecordStatus,
    check_facts,
    convert_checked,
    record_checked,
    record_converted,
    record_event,
    record_events,
)
from webapp.models import ActivityEvent, DataQualityFinding, PlayerStats
from webapp.models.archive import ArchivedEventKey, ArchiveFile
from webapp.transaction import unit_of_work


def won(player, match_id=1, **overrides) -> NewEvent:
    fields = dict(
        player_id=player.id,
        event_type="match_won",
        occurred_at=T0,
        source_model="match",
        source_id=match_id,
        metadata={"round": "R1", "side": "a", "opponent_player_ids": [999]},
    )
    fields.update(overrides)
    return NewEvent(**fields)


def stats(session, player, scope="all") -> dict[str, int]:
    row = session.get(PlayerStats, (player.id, scope))
    session.expire_all()
    return row.as_dict() if row else {}


def event_count(session) -> int:
    return session.scalar(select(func.count()).select_from(ActivityEvent))


def test_recording_an_event_inserts_it_and_updates_both_scopes(session, make_player):
    alice = make_player("alice")
    with unit_of_work(session):
        outcome = record_event(session, won(alice))
    assert outcome.status is RecordStatus.RECORDED
    assert event_count(session) == 1
    assert stats(session, alice)["matches_won"] == 1
    assert stats(session, alice)["matches_played"] == 1
    assert stats(session, alice, "public")["matches_won"] == 1


def test_the_same_fact_twice_is_one_event_and_one_stat_change(session, make_player):
    alice = make_player("alice")
    with unit_of_work(session):
        first = record_event(session, won(alice))
    with unit_of_work(session):
        second = record_event(session, won(alice))
    assert second.status is RecordStatus.DUPLICATE
    assert second.event_id == first.event_id
    assert event_count(session) == 1
    assert stats(session, alice)["matches_won"] == 1


def test_a_repeated_fact_is_looked_up_through_the_key_index_not_a_table_scan(
    session, make_player, count_queries
):
    # SQLite answers a row-value IN by scanning every stored event: a repeated live
    # result would cost as much as the table is long.
    alice = make_player("alice")
    with unit_of_work(session):
        record_events(session, [won(alice, match_id=n) for n in range(3)])
    with count_queries() as counter, unit_of_work(session):
        repeat = record_event(session, won(alice, match_id=1))
    assert repeat.status is RecordStatus.DUPLICATE
    lookups = [(sql, parameters) for sql, parameters in counter["statements"] if "JOIN activity_events" in sql]
    assert lookups, "the repeat was not looked up by its key"

    plan = query_plan(session.connection(), *lookups[0])
    session.rollback()
    if session.get_bind().dialect.name == "sqlite":
        # Scanning the listed keys is expected; the events are searched by the key's unique index.
        assert not [s for s in plan if s.startswith("SCAN") and "CONSTANT" not in s and s != "SCAN k"], plan
        assert any(s.startswith("SEARCH") and "sqlite_autoindex_activity_events" in s for s in plan), plan
    else:
        assert not [s for s in plan if "Seq Scan on activity_events" in s], plan


def test_a_repeat_with_a_different_payload_is_a_conflict_kept_as_a_finding(session, make_player):
    alice = make_player("alice")
    with unit_of_work(session):
        first = record_event(session, won(alice))
    with unit_of_work(session):
        again = record_event(session, won(alice, occurred_at=T0 + timedelta(minutes=5)))
    with unit_of_work(session):
        record_event(session, won(alice, occurred_at=T0 + timedelta(minutes=5)))
    assert again.status is RecordStatus.CONFLICT
    stored = session.get(ActivityEvent, first.event_id)
    assert stored.occurred_at == T0, "the first event stands"
    findings = session.scalars(select(DataQualityFinding)).all()
    assert len(findings) == 1, "the same conflicting attempt twice is one finding"
    assert findings[0].event_id == first.event_id
    assert findings[0].differences == ["occurred_at"]
    assert stats(session, alice)["matches_won"] == 1


def test_a_batch_reports_which_facts_were_new_and_which_duplicates(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    with unit_of_work(session):
        record_event(session, won(alice, match_id=1))
    with unit_of_work(session):
        outcome = record_events(session, [won(alice, match_id=1), won(bob, match_id=1), won(bob, match_id=1)])
    assert [o.status for o in outcome.outcomes] == [
        RecordStatus.DUPLICATE, RecordStatus.RECORDED, RecordStatus.DUPLICATE,
    ]
    assert event_count(session) == 2
    assert stats(session, bob)["matches_won"] == 1


def test_a_large_batch_stores_every_value_as_given(session, make_player, make_team, make_tournament):
    # Past a few rows PostgreSQL gets one array a column: values must come back
    # as the single-row path stores them, large ids and NULL-only columns included.
    alice, bob = make_player("alice"), make_player("bob")
    team = make_team("Night Owls", [alice, bob])
    cup = make_tournament("Winter Cup")
    facts = [
        won(alice if n % 2 else bob, match_id=2**40 + n, occurred_at=T0 + timedelta(minutes=n),
            team_id=team.id if n % 3 == 0 else None, tournament_id=cup.id,
            metadata={"round": f"Round «{n}»", "side": "a", "opponent_player_ids": [2**35 + n]})
        for n in range(20)
    ]
    with unit_of_work(session):
        outcome = record_events(session, facts)
    assert len(outcome.recorded) == 20
    stored = {e.source_id: e for e in session.scalars(select(ActivityEvent))}
    for fact in facts:
        event = stored[fact.source_id]
        assert (event.player_id, event.occurred_at, event.team_id, event.tournament_id) == (
            fact.player_id, fact.occurred_at, fact.team_id, fact.tournament_id)
        assert event.details == dict(fact.metadata) and event.reverses_event_id is None
    assert stats(session, alice)["matches_won"] + stats(session, bob)["matches_won"] == 20


def test_every_member_of_a_team_gets_their_own_event_from_the_same_source(session, make_player, make_team, make_tournament):
    alice, bob = make_player("alice"), make_player("bob")
    team = make_team("Night Owls", [alice, bob])
    with unit_of_work(session):
        outcome = record_events(session, [won(alice, team_id=team.id), won(bob, team_id=team.id)])
    assert len(outcome.recorded) == 2


def test_events_of_a_private_tournament_count_only_in_the_all_scope(session, make_player, make_tournament):
    alice = make_player("alice")
    secret = make_tournament("Invitational", is_private=True)
    with unit_of_work(session):
        outcome = record_event(session, won(alice, tournament_id=secret.id))
    assert session.get(ActivityEvent, outcome.event_id).is_private
    assert stats(session, alice)["matches_won"] == 1
    assert stats(session, alice, "public").get("matches_won", 0) == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"event_type": "match_drawn"}, "unknown event type 'match_drawn'"),
        ({"metadata": {"side": "a", "opponent_player_ids": [1]}}, "field 'round'"),
        ({"metadata": {"round": "R1", "side": "a", "opponent_player_ids": "7"}}, "field 'opponent_player_ids'"),
        ({"metadata": {"round": "R1", "side": "a", "opponent_player_ids": [], "note": "gg"}}, "field 'note'"),
        ({"player_id": 424242}, "unknown player id(s): 424242"),
        ({"tournament_id": 515151}, "unknown tournament id(s): 515151"),
        ({"origin": "rumour"}, "unknown origin 'rumour'"),
        ({"occurred_at": T0.replace(tzinfo=None)}, "timezone-aware"),
        ({"team_id": "TEAM"}, "not a member of team"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error_and_nothing_written(session, make_player, make_team, overrides, message):
    alice, bob = make_player("alice"), make_player("bob")
    if overrides.get("team_id") == "TEAM":
        overrides["team_id"] = make_team("Other Team", [bob]).id
    with pytest.raises(Invalid, match=_escaped(message)):
        with unit_of_work(session):
            record_events(session, [won(bob, match_id=77), won(alice, **overrides)])
    assert event_count(session) == 0
    assert session.scalar(select(func.count()).select_from(PlayerStats)) == 0


def test_a_team_event_for_someone_who_had_left_the_team_is_refused(session, make_player, make_team):
    alice = make_player("alice")
    team = make_team("Old Guard", [alice], joined_at=T0 - timedelta(days=30), left_at=T0 - timedelta(days=1))
    with pytest.raises(Invalid, match="not a member of team"):
        with unit_of_work(session):
            record_event(session, won(alice, team_id=team.id))
    assert event_count(session) == 0


def test_a_reversal_undoes_its_original_exactly_and_only_once(session, make_player, make_team):
    alice, bob = make_player("alice"), make_player("bob")
    team = make_team("Pair", [alice, bob])
    with unit_of_work(session):
        original = record_event(session, NewEvent(
            player_id=alice.id, event_type="tournament_won", occurred_at=T0, source_model="tournament_result",
            source_id=5, team_id=team.id, metadata={"is_team_win": True},
        ))
    assert stats(session, alice)["team_tournament_wins"] == 1
    reversal = NewEvent(
        player_id=alice.id, event_type="tournament_won_reversed", occurred_at=T0 + timedelta(days=1),
        source_model="dispute_resolution", source_id=1, origin="dispute", reverses_event_id=original.event_id,
    )
    with unit_of_work(session):
        assert record_event(session, reversal).status is RecordStatus.RECORDED
    with unit_of_work(session):
        assert record_event(session, reversal).status is RecordStatus.DUPLICATE
    assert stats(session, alice)["tournaments_won"] == 0
    assert stats(session, alice)["team_tournament_wins"] == 0
    second = reversal._replace(source_id=2)
    with pytest.raises(Invalid, match="already reversed"):
        with unit_of_work(session):
            record_event(session, second)


def test_a_reversal_must_point_at_an_event_of_the_type_it_reverses(session, make_player):
    alice = make_player("alice")
    with unit_of_work(session):
        lost = record_event(session, won(alice, event_type="match_lost"))
    with pytest.raises(Invalid, match="not a match_won"):
        with unit_of_work(session):
            record_event(session, NewEvent(
                player_id=alice.id, event_type="match_won_reversed", occurred_at=T0, source_model="dispute_resolution",
                source_id=1, origin="dispute", reverses_event_id=lost.event_id,
            ))


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


def test_the_archived_key_lookup_searches_the_key_index_instead_of_scanning_the_archive(session, backend):
    from webapp.domain.recording import _listed_references

    connection = session.connection()
    parameters = (1, 1, 1, "match_won", "match", 1, 2, "match_lost", "match", 2)
    if backend == "sqlite":
        sql = _listed_references("?", 1, 1, 2)
        plan = [row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters)]
        archive_steps = [step for step in plan if "archived_event_keys" in step or " a " in f" {step} "]
        assert archive_steps and all(step.startswith("SEARCH") for step in archive_steps), plan
    else:
        # PostgreSQL picks by table statistics, and the test's table is empty:
        # with scans priced out, the lookup must still be answerable by the key index.
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        sql = _listed_references("%s", 1, 1, 2)
        plan = "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + sql, parameters))
        assert "pk_archived_event_keys" in plan and "Seq Scan on archived_event_keys" not in plan, plan
    session.rollback()


def test_a_few_facts_at_once_add_the_deltas_of_exactly_the_new_ones_to_their_scopes(
    session, make_player, make_tournament
):
    alice, bob = make_player("alice"), make_player("bob")
    secret = make_tournament("Invitational", is_private=True)
    with unit_of_work(session):
        record_event(session, won(bob, match_id=1))
    with unit_of_work(session):
        outcome = record_events(session, [
            won(alice, match_id=2), won(alice, match_id=3, tournament_id=secret.id), won(bob, match_id=1),
        ])
    assert [o.status for o in outcome.outcomes] == [
        RecordStatus.RECORDED, RecordStatus.RECORDED, RecordStatus.DUPLICATE,
    ]
    assert (stats(session, alice)["matches_won"], stats(session, alice, "public")["matches_won"]) == (2, 1)
    assert (stats(session, bob)["matches_won"], stats(session, bob, "public")["matches_won"]) == (1, 1)


@pytest.mark.parametrize("batch_size", [1, 12], ids=["alone", "in_a_batch"])
def test_a_reversal_cancels_its_original_in_both_scopes_after_its_tournament_turned_private(
    session, make_player, make_tournament, batch_size
):
    alice = make_player("alice")
    cup = make_tournament("Open Cup")
    originals = [won(alice, match_id=n, tournament_id=cup.id) for n in range(1, batch_size + 1)]
    with unit_of_work(session):
        recorded = record_events(session, originals).recorded
    with unit_of_work(session):
        cup.is_private = True
    with unit_of_work(session):
        reversals = record_events(session, [
            NewEvent(
                player_id=alice.id, event_type="match_won_reversed", occurred_at=T0 + timedelta(days=1),
                source_model="dispute_resolution", source_id=outcome.event_id, origin="dispute",
                tournament_id=cup.id, reverses_event_id=outcome.event_id,
            )
            for outcome in recorded
        ])
    assert len(reversals.recorded) == batch_size
    assert not any(session.get(ActivityEvent, o.event_id).is_private for o in reversals.recorded)
    assert stats(session, alice)["matches_won"] == 0
    assert stats(session, alice, "public")["matches_won"] == 0


def test_an_event_id_is_never_handed_out_again_after_the_newest_events_were_deleted(session, make_player):
    """A rolled-back backfill deletes the newest events; ids still follow the recording order."""
    alice = make_player("alice")
    with unit_of_work(session):
        first, newest = record_events(session, [won(alice, match_id=1), won(alice, match_id=2)]).recorded
    with unit_of_work(session):
        session.execute(delete(ActivityEvent).where(ActivityEvent.id == newest.event_id))
    with unit_of_work(session):
        later = record_event(session, won(alice, match_id=3))
    assert later.event_id > newest.event_id > first.event_id


@pytest.mark.parametrize("fillers", [1, 12], ids=["few facts", "a batch"])
def test_checked_facts_are_never_changed_so_they_record_the_same_after_a_rollback(
    session, make_player, make_team, make_tournament, fillers
):
    alice, bob = make_player("alice"), make_player("bob")
    team = make_team("Pair", [alice, bob])
    secret = make_tournament("Invitational", is_private=True)
    with unit_of_work(session):
        original = record_event(session, NewEvent(
            player_id=alice.id, event_type="tournament_won", occurred_at=T0, source_model="tournament_result",
            source_id=5, team_id=team.id, tournament_id=secret.id, metadata={"is_team_win": True},
        ))
    unmarked = won(bob, match_id=1, tournament_id=secret.id)  # private by its tournament, not by the fact
    reversal = NewEvent(
        player_id=alice.id, event_type="tournament_won_reversed", occurred_at=T0 + timedelta(days=1),
        source_model="dispute_resolution", source_id=1, origin="dispute", reverses_event_id=original.event_id,
    )
    facts = [unmarked, reversal, unmarked, *(won(bob, match_id=100 + n) for n in range(fillers))]
    checked = check_facts(facts)
    as_checked = [dict(row) for row in checked.rows]

    with pytest.raises(RuntimeError, match="undone"):
        with unit_of_work(session):
            record_checked(session, checked)
            raise RuntimeError("undone")
    assert [dict(row) for row in checked.rows] == as_checked
    with unit_of_work(session):
        outcomes = record_checked(session, checked).outcomes

    assert [o.status for o in outcomes[:3]] == [RecordStatus.RECORDED, RecordStatus.RECORDED, RecordStatus.DUPLICATE]
    private_win, undone = (session.get(ActivityEvent, o.event_id) for o in outcomes[:2])
    assert private_win.is_private
    assert (undone.team_id, undone.tournament_id, undone.is_private) == (team.id, secret.id, True)
    assert stats(session, bob, "public").get("matches_won", 0) == fillers
    assert stats(session, bob)["matches_won"] == fillers + 1
    assert stats(session, alice)["team_tournament_wins"] == 0


def test_checked_facts_narrow_to_some_of_them_in_their_order(make_player):
    alice = make_player("alice")
    facts = [won(alice, match_id=n) for n in range(1, 5)]
    checked = check_facts(facts)

    narrowed = checked.subset([facts[1], facts[3]])

    assert [row["source_id"] for row in narrowed.rows] == [2, 4]
    assert narrowed.keys == [checked.keys[1], checked.keys[3]]
    assert checked.subset(facts) is checked
    with pytest.raises(ValueError, match="not a selection"):
        checked.subset([won(alice, match_id=9)])


# Facts converted ahead for the driver (a batch prepared in another process).


def converted(session, facts):
    return convert_checked(check_facts(facts), session.get_bind().dialect)


def stored_events(session) -> list[tuple]:
    found = [
        (e.player_id, e.event_type, e.source_id, e.occurred_at, e.team_id, e.tournament_id, e.is_private,
         e.details)
        for e in session.scalars(select(ActivityEvent).order_by(ActivityEvent.player_id, ActivityEvent.source_id))
    ]
    session.rollback()
    return found


def all_stats(session) -> dict:
    found = {(s.player_id, s.scope): s.as_dict() for s in session.scalars(select(PlayerStats))}
    session.rollback()
    return found


def test_converted_facts_are_recorded_as_record_events_records_them(
    session, make_player, make_team, make_tournament
):
    alice, bob, carol = make_player("alice"), make_player("bob"), make_player("carol")
    team = make_team("Red", [bob, carol])
    hidden = make_tournament("Hidden Cup", is_private=True)
    facts = [
        won(alice, match_id=3),
        won(bob, match_id=1, team_id=team.id, tournament_id=hidden.id),
        won(carol, match_id=1, team_id=team.id, tournament_id=hidden.id),
        won(alice, match_id=2, occurred_at=T0 + timedelta(hours=5)),
    ]
    with unit_of_work(session):
        ids = record_converted(session, converted(session, facts))
    by_converted = (stored_events(session), all_stats(session))
    assert ids is not None and len(ids) == 4 and len(set(ids)) == 4

    with unit_of_work(session):
        session.execute(delete(ActivityEvent))
        session.execute(delete(PlayerStats))
    with unit_of_work(session):
        assert len(record_events(session, facts).recorded) == 4
    assert (stored_events(session), all_stats(session)) == by_converted
    # A private tournament's events are private, and count in the "all" scope only.
    assert all(event[6] for event in by_converted[0] if event[5] == hidden.id)
    assert (bob.id, "public") not in by_converted[1]


@pytest.mark.parametrize(
    "spoiler", ["repeat", "archived", "unknown player", "unknown tournament", "not a member"]
)
def test_converted_facts_that_need_the_general_way_write_nothing(
    session, make_player, make_team, make_tournament, spoiler
):
    alice, bob = make_player("alice"), make_player("bob")
    team = make_team("Red", [alice], joined_at=T0 - timedelta(days=1))
    with unit_of_work(session):
        record_event(session, won(alice, match_id=1))
        archived = ArchiveFile(month="2026-03", url="file:///cold/2026-03.jsonl.gz", event_count=1, bytes=1,
                               sha256="0" * 64)
        session.add(archived)
        session.flush()
        session.add(ArchivedEventKey(player_id=alice.id, event_type="match_won", source_model="match",
                                     source_id=8, event_id=10_000, file_id=archived.id))
    before = (stored_events(session), all_stats(session))
    facts = [won(bob, match_id=n) for n in range(2, 6)]
    facts.append({
        "repeat": won(alice, match_id=1),
        "archived": won(alice, match_id=8),  # T0 is old enough to have been archived
        "unknown player": won(alice, match_id=9, player_id=alice.id + 999),
        "unknown tournament": won(alice, match_id=9, tournament_id=make_tournament().id + 999),
        "not a member": won(alice, match_id=9, team_id=team.id, occurred_at=T0 - timedelta(days=2)),
    }[spoiler])

    with unit_of_work(session):
        assert record_converted(session, converted(session, facts)) is None
    assert (stored_events(session), all_stats(session)) == before


def test_reversals_are_not_converted_ahead(session, make_player):
    alice = make_player("alice")
    with unit_of_work(session):
        original = record_event(session, won(alice))
    reversal = NewEvent(
        player_id=alice.id, event_type="match_won_reversed", occurred_at=T0, source_model="dispute",
        source_id=1, origin="dispute", reverses_event_id=original.event_id,
    )
    assert convert_checked(check_facts([reversal]), session.get_bind().dialect) is None


def test_converted_facts_are_recorded_only_on_the_database_they_were_converted_for(session, make_player):
    alice = make_player("alice")
    facts = converted(session, [won(alice)])
    elsewhere = facts._replace(dialect="postgresql" if facts.dialect == "sqlite" else "sqlite")
    with pytest.raises(ValueError, match="converted for"), unit_of_work(session):
        record_converted(session, elsewhere)
