"""GDPR export: the whole record of a player, streamed by a job into verified files, never half-offered."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from webapp.database import begin_snapshot
from webapp.domain import archive, gdpr_export, gdpr_requests, jobs, operations
from webapp.domain.audit import SYSTEM, Actor
from webapp.domain.backfill import Safeguards
from webapp.domain.errors import Conflict, Forbidden
from webapp.domain.export_encoding import EventEncoder
from webapp.domain.gdpr_requests import IdentityNotVerified
from webapp.domain.recording import NewEvent, record_events
from webapp.domain.timeline import names_and_reversal_links
from webapp.jobs.runner import execute_run
from webapp.models import ActivityEvent, AuditEntry, GdprExport, JobRun
from webapp.transaction import unit_of_work

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
AFTER_DAYS = 365

_source_ids = itertools.count(1)


def fact(player, event_type="match_won", *, at, opponent=None, **fields) -> NewEvent:
    return NewEvent(
        player_id=player.id, event_type=event_type, occurred_at=at, source_model="match",
        source_id=next(_source_ids),
        metadata={"round": "R1", "side": "a",
                  "opponent_player_ids": [opponent.id] if opponent else []},
        **fields,
    )


@pytest.fixture
def privacy(make_staff) -> Actor:
    return Actor(staff_id=make_staff("privacy").id, ip_address="10.0.0.7")


@pytest.fixture
def storage_url(tmp_path) -> str:
    return str(tmp_path / "exports")


@pytest.fixture
def archive_url(tmp_path) -> str:
    return str(tmp_path / "cold")


def open_request(session, actor, player, *, verified=True) -> int:
    with unit_of_work(session):
        request = gdpr_requests.open_request(session, actor, "export", player.public_id)
        if verified:
            gdpr_requests.record_identity_verification(
                session, actor, request.id, "photo id checked on a video call"
            )
        return request.id


def start(session, actor, request_id, storage_url, archive_url=None, max_age=3600) -> GdprExport:
    with unit_of_work(session):
        export = gdpr_export.start_export(
            session, actor, request_id, storage_url=storage_url, archive_url=archive_url,
            link_max_age_seconds=max_age,
        )
    return export


def run_export(session, export: GdprExport) -> tuple[JobRun, GdprExport]:
    run = execute_run(session, export.job_run_id)
    export = session.get(GdprExport, export.id)
    session.refresh(export)
    session.rollback()
    return run, export


def files_in(url: str) -> list[Path]:
    return sorted(p for p in Path(url).rglob("*") if p.is_file())


@pytest.fixture
def history(session, make_player, make_team, make_tournament, archive_url):
    """Alice: two years of matches against Bob (the older year archived), a private cup, a team."""
    alice, bob = make_player("alice"), make_player("bob", display_name="Bob Secret")
    team = make_team("Pair", [alice, bob], joined_at=NOW - timedelta(days=1000))
    private = make_tournament("Hidden Invitational", is_private=True)
    facts = []
    for k in range(8):
        at = NOW - timedelta(days=10 + 90 * k)
        facts += [fact(alice, at=at, opponent=bob), fact(bob, "match_lost", at=at, opponent=alice)]
    facts.append(fact(alice, "match_lost", at=NOW - timedelta(days=5), opponent=bob,
                      tournament_id=private.id))
    facts.append(NewEvent(player_id=alice.id, event_type="tournament_won",
                          occurred_at=NOW - timedelta(days=4), source_model="tournament_result",
                          source_id=next(_source_ids), team_id=team.id,
                          tournament_id=private.id, metadata={"is_team_win": True}))
    with unit_of_work(session):
        outcomes = record_events(session, facts).outcomes
    # A dispute took back Alice's latest win.
    with unit_of_work(session):
        record_events(session, [NewEvent(
            player_id=alice.id, event_type="match_won_reversed", occurred_at=NOW - timedelta(days=1),
            source_model="dispute", source_id=1, origin="dispute", origin_id=1,
            metadata={"match_id": facts[0].source_id}, reverses_event_id=outcomes[0].event_id,
        )])
    with unit_of_work(session):
        run_id = archive.start_archive(session, SYSTEM, now=NOW, after_days=AFTER_DAYS,
                                       url=archive_url).id
    assert execute_run(session, run_id).status == "succeeded"
    session.rollback()
    return {"alice": alice, "bob": bob, "team": team, "private": private}


def test_the_export_holds_the_profile_every_event_archived_ones_too_and_stats_in_both_scopes(
    session, privacy, history, storage_url, archive_url
):
    alice, bob = history["alice"], history["bob"]
    hot = set(session.scalars(select(ActivityEvent.id).where(ActivityEvent.player_id == alice.id)))
    archived_total = gdpr_export.archived_event_total(session, alice.id)
    session.rollback()
    assert archived_total > 0 and hot, "the history has both hot and archived events"

    export = start(session, privacy, open_request(session, privacy, alice), storage_url, archive_url)
    run, export = run_export(session, export)

    assert run.status == "succeeded", run.error
    document = json.loads(Path(export.json_url.removeprefix("file://")).read_bytes())
    assert document["format"] == gdpr_export.FORMAT
    assert document["request_id"] == export.request_id
    assert datetime.fromisoformat(document["exported_at"]) == export.exported_at
    assert document["player"] == {
        "id": alice.id, "public_id": alice.public_id, "username": "alice", "display_name": "Alice",
        "email": "alice@example.test", "feed_visibility": "private",
        "created_at": document["player"]["created_at"],
    }
    assert [t["team"]["name"] for t in document["teams"]] == ["Pair"]

    events = document["events"]
    assert len(events) == document["event_count"] == export.event_count == len(hot) + archived_total
    assert sum(e["archived"] for e in events) == archived_total == export.archived_event_count
    assert {e["id"] for e in events if not e["archived"]} == hot
    order = [(datetime.fromisoformat(e["occurred_at"]), e["id"]) for e in events]
    assert order == sorted(order), "hot and archived events are merged oldest first"
    assert all(e["occurred_at"] < f"{NOW - timedelta(days=AFTER_DAYS):%Y-%m-%d}"
               for e in events if e["archived"])

    # Private tournaments are the player's own data; other players appear by public id only.
    private_events = [e for e in events if e["private"]]
    assert {e["tournament"]["name"] for e in private_events} == {"Hidden Invitational"}
    opponents = [o for e in events for o in e["opponents"]]
    assert opponents and all(o == {"public_id": bob.public_id, "label": bob.public_id}
                             for o in opponents)
    text = Path(export.json_url.removeprefix("file://")).read_text()
    assert "Bob Secret" not in text and "bob@example.test" not in text

    [reversal] = [e for e in events if e["type"] == "match_won_reversed"]
    [reversed_win] = [e for e in events if e["id"] == reversal["reverses_event_id"]]
    assert reversed_win["reversed_by_event_id"] == reversal["id"]
    assert reversal["summary"] == f"Reversed match won #{reversed_win['id']}"

    stats = document["stats"]  # 8 wins, one taken back, and a private loss
    assert stats["all"]["counts"]["matches_played"] == 8
    assert stats["public"]["counts"]["matches_played"] == 7, "the private match is all-scope only"
    assert stats["all"]["counts"]["tournaments_won"] == 1
    assert stats["public"]["counts"]["tournaments_won"] == 0
    assert stats["all"]["computed"]["win_rate"] == round(7 / 8, 4)
    assert stats["public"]["computed"]["win_rate"] == 1.0

    rows = list(csv.DictReader(io.StringIO(
        Path(export.csv_url.removeprefix("file://")).read_text(encoding="utf-8"), newline="")))
    assert [int(r["id"]) for r in rows] == [e["id"] for e in events]
    assert {r["opponents"] for r in rows if r["type"] == "match_won"} == {bob.public_id}
    assert sum(r["archived"] == "true" for r in rows) == archived_total


def test_the_sha256_of_each_file_is_on_the_export_record_and_in_the_manifest(
    session, privacy, history, storage_url, archive_url
):
    export = start(session, privacy, open_request(session, privacy, history["alice"]),
                   storage_url, archive_url)
    run, export = run_export(session, export)

    assert run.status == "succeeded", run.error
    json_bytes = Path(export.json_url.removeprefix("file://")).read_bytes()
    csv_bytes = Path(export.csv_url.removeprefix("file://")).read_bytes()
    assert export.json_sha256 == hashlib.sha256(json_bytes).hexdigest()
    assert export.csv_sha256 == hashlib.sha256(csv_bytes).hexdigest()
    assert (export.json_bytes, export.csv_bytes) == (len(json_bytes), len(csv_bytes))
    manifest = json.loads(Path(export.manifest_url.removeprefix("file://")).read_text())
    assert [(f["name"], f["sha256"], f["bytes"]) for f in manifest["files"]] == [
        (export.json_url.rsplit("/", 1)[1], export.json_sha256, len(json_bytes)),
        (export.csv_url.rsplit("/", 1)[1], export.csv_sha256, len(csv_bytes)),
    ]
    assert export.completed_at is not None
    assert export.expires_at == export.completed_at + timedelta(hours=1)
    assert not any(p.name.endswith(".partial") for p in files_in(storage_url))


def test_nothing_is_exported_before_the_identity_is_verified(
    session, privacy, make_player, storage_url
):
    alice = make_player("alice")
    request_id = open_request(session, privacy, alice, verified=False)

    with pytest.raises(IdentityNotVerified):
        start(session, privacy, request_id, storage_url)

    assert session.scalar(select(func.count()).select_from(GdprExport)) == 0
    assert session.scalar(select(func.count()).select_from(JobRun)) == 0
    assert not Path(storage_url).exists()


def test_only_privacy_staff_and_admins_start_exports(session, privacy, make_staff, make_player,
                                                     storage_url):
    request_id = open_request(session, privacy, make_player("alice"))
    engineer = Actor(staff_id=make_staff("engineer").id)

    with pytest.raises(Forbidden):
        start(session, engineer, request_id, storage_url)
    assert session.scalar(select(func.count()).select_from(GdprExport)) == 0


def test_an_export_in_progress_is_seen_by_erasure_and_refuses_a_second_one(
    session, privacy, make_player, storage_url
):
    alice, bob = make_player("alice"), make_player("bob")
    request_id = open_request(session, privacy, alice)
    export = start(session, privacy, request_id, storage_url)

    assert gdpr_export.export_in_progress(session, alice.id)
    assert not gdpr_export.export_in_progress(session, bob.id)
    with pytest.raises(Conflict, match="already queued or running"):
        start(session, privacy, request_id, storage_url)

    run, _ = run_export(session, export)
    assert run.status == "succeeded", run.error
    assert not gdpr_export.export_in_progress(session, alice.id)
    actions = set(session.scalars(select(AuditEntry.action)))
    assert {"gdpr.export.start", "job.gdpr_export.queue"} <= actions


def test_a_cancelled_export_is_not_resumed_while_another_export_of_the_player_is_queued(
    session, privacy, make_player, storage_url
):
    alice = make_player("alice")
    request_id = open_request(session, privacy, alice)
    cancelled = start(session, privacy, request_id, storage_url)
    with unit_of_work(session):
        jobs.request_cancel(session, privacy, cancelled.job_run_id)
    start(session, privacy, request_id, storage_url)

    with pytest.raises(Conflict, match=f"an export of player {alice.id} is already queued"):
        with unit_of_work(session):
            operations.resume_job(
                session, privacy, cancelled.job_run_id, safeguards=Safeguards(now=NOW)
            )

    session.rollback()
    assert session.get(JobRun, cancelled.job_run_id).status == "cancelled"


def test_an_export_is_resumed_by_privacy_staff_or_the_command_line_but_not_by_an_engineer(
    session, privacy, make_player, make_staff, storage_url
):
    request_id = open_request(session, privacy, make_player("alice"))
    cancelled = start(session, privacy, request_id, storage_url)
    with unit_of_work(session):
        jobs.request_cancel(session, privacy, cancelled.job_run_id)
    engineer = Actor(staff_id=make_staff("engineer").id)

    with pytest.raises(Forbidden, match="privacy staff and admins only"):
        with unit_of_work(session):
            operations.resume_job(session, engineer, cancelled.job_run_id, safeguards=Safeguards(now=NOW))
    session.rollback()
    assert session.get(JobRun, cancelled.job_run_id).status == "cancelled"

    command_line = Actor(staff_id=None, via="command line (ops@host)")
    with unit_of_work(session):
        operations.resume_job(session, command_line, cancelled.job_run_id, safeguards=Safeguards(now=NOW))
    session.rollback()
    assert session.get(JobRun, cancelled.job_run_id).status == "queued"


def test_a_crash_mid_export_fails_the_run_and_offers_no_file(
    session, privacy, history, storage_url, archive_url
):
    alice = history["alice"]
    # A damaged archive file: the export reads the first lines, then the gzip stream breaks.
    url = session.scalars(select(archive.ArchiveFile.url).order_by(archive.ArchiveFile.month)).first()
    session.rollback()
    path = Path(url.removeprefix("file://"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    export = start(session, privacy, open_request(session, privacy, alice), storage_url, archive_url)
    run, export = run_export(session, export)

    assert run.status == "failed"
    assert "cannot be read" in run.error
    assert export.completed_at is None and export.json_url is None and export.json_sha256 is None
    assert files_in(storage_url) == [], "no whole or partial file is left behind"
    assert not gdpr_export.export_in_progress(session, alice.id)


def test_a_cancelled_export_ends_cancelled_and_leaves_no_file(
    session, privacy, make_player, storage_url
):
    alice = make_player("alice")
    export = start(session, privacy, open_request(session, privacy, alice), storage_url)

    def cancel_at_start(done: int, _total) -> None:
        # Staff press cancel as the run reports its first progress.
        if done == 0:
            session.get(JobRun, export.job_run_id).cancel_requested = True

    run = execute_run(session, export.job_run_id, listeners=[cancel_at_start])
    session.refresh(export)

    assert run.status == "cancelled"
    assert export.completed_at is None and export.json_url is None
    assert files_in(storage_url) == []
    assert not gdpr_export.export_in_progress(session, alice.id)


def test_the_job_refuses_a_request_whose_verification_was_withdrawn(
    session, privacy, make_player, storage_url
):
    alice = make_player("alice")
    export = start(session, privacy, open_request(session, privacy, alice), storage_url)
    # Verification withdrawn after the export was queued (e.g. found to be fraudulent).
    with unit_of_work(session):
        request = gdpr_requests.get_request(session, export.request_id)
        request.verified_at = None
        request.identity_verification = None

    run, export = run_export(session, export)

    assert run.status == "failed"
    assert "identity has not been verified" in run.error
    assert export.completed_at is None and files_in(storage_url) == []


# Memory: independent of the number of events.


def insert_events(session, player, n: int) -> None:
    start_at = NOW - timedelta(days=300)
    rows = [
        {"player_id": player.id, "event_type": "match_won", "occurred_at": start_at + timedelta(minutes=i),
         "recorded_at": NOW, "source_model": "match", "source_id": 10_000_000 + i, "origin": "backfill",
         "is_private": False, "metadata": {"round": "R1", "side": "a", "opponent_player_ids": []}}
        for i in range(n)
    ]
    with unit_of_work(session):
        for offset in range(0, n, 5_000):
            session.execute(insert(ActivityEvent.__table__), rows[offset:offset + 5_000])


def peak_while_exporting(session, player, tmp_path: Path) -> tuple[int, int]:
    begin_snapshot(session)
    with open(tmp_path / "out.json", "wb") as json_out, open(tmp_path / "out.csv", "wb") as csv_out:
        tracemalloc.start()
        try:
            streamed = gdpr_export.stream_export(session, player.id, json_out, csv_out,
                                                 exported_at=NOW)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    session.rollback()
    return streamed.event_count, peak


@pytest.mark.slow
def test_memory_while_exporting_does_not_grow_with_the_number_of_events(
    session, make_player, tmp_path
):
    small, large = make_player("small"), make_player("large")
    insert_events(session, small, 2_000)
    insert_events(session, large, 20_000)

    count_small, peak_small = peak_while_exporting(session, small, tmp_path)
    count_large, peak_large = peak_while_exporting(session, large, tmp_path)

    assert (count_small, count_large) == (2_000, 20_000)
    # Ten times the events, but the same chunk in memory at a time.
    assert peak_large < peak_small * 1.5 + 256 * 1024, (peak_small, peak_large)


def test_the_export_presents_events_exactly_as_the_owner_sees_them_with_others_by_public_id(
    session, history, archive_url
):
    alice = history["alice"]
    hot = list(gdpr_export._hot_events(session, alice.id))
    cold = list(gdpr_export._archived_events(
        session, alice.id, archive.ArchiveStorage(archive_url),
        gdpr_export.archived_event_total(session, alice.id)))
    events = hot + cold
    names, reversed_by = names_and_reversal_links(session, events)
    assert gdpr_export.reversal_links_of(session, alice.id) == reversed_by != {}
    presenter = gdpr_export.ExportPresenter(reversed_by=reversed_by)
    presenter.learn(session, events[: len(events) // 2])
    presenter.learn(session, events)  # only what the first half did not refer to
    session.rollback()
    assert cold and hot

    for event in events:
        assert presenter.present(event) == gdpr_export.redacted_for_export(
            event, names, reversed_by.get(event.id))


def test_each_event_is_written_as_its_presented_view_encoded(session, history, archive_url):
    alice = history["alice"]
    hot = list(gdpr_export._hot_events(session, alice.id))
    cold = list(gdpr_export._archived_events(
        session, alice.id, archive.ArchiveStorage(archive_url),
        gdpr_export.archived_event_total(session, alice.id)))
    presenter = gdpr_export.ExportPresenter(
        reversed_by=gdpr_export.reversal_links_of(session, alice.id))
    presenter.learn(session, hot + cold)
    session.rollback()
    encoder = EventEncoder(presenter.names, presenter.reversed_by)
    assert hot and cold

    for event, archived in [(e, False) for e in hot] + [(e, True) for e in cold]:
        presented = presenter.present(event)
        assert presented["archived"] is archived
        assert encoder.encode(event, archived) == (
            gdpr_export._dumps(presented), gdpr_export._csv_row(presented))
