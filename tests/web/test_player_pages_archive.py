"""The player page's timeline with archived events, read from cold storage only when asked."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import T0, csrf_token_from
from webapp.domain import archive
from webapp.domain.audit import SYSTEM
from webapp.domain.recording import NewEvent, record_events
from webapp.jobs.runner import execute_run
from webapp.models import ArchiveFile, AuditEntry
from webapp.transaction import unit_of_work

NOW = T0
AFTER_DAYS = 365
HX = {"HX-Request": "true"}


def match_event(player, source_id, *, at, kind="match_won", opponents=(), **fields) -> NewEvent:
    return NewEvent(
        player_id=player.id,
        event_type=kind,
        occurred_at=at,
        source_model="match",
        source_id=source_id,
        metadata={"round": "R1", "side": "a", "opponent_player_ids": [o.id for o in opponents]},
        **fields,
    )


def page_url(player, suffix="") -> str:
    return f"/admin/players/{player.public_id}{suffix}"


def hot_section(html: str) -> str:
    return html.split('data-testid="cold-storage"')[0]


def cold_section(html: str) -> str:
    parts = html.split('data-testid="cold-storage"')
    assert len(parts) == 2, "the page has one cold storage section"
    return parts[1].split("</section>")[0]


def event_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-testid="event" data-event-id="(\d+)"', html)]


def cold_badges(html: str) -> int:
    return html.count('data-testid="event-cold-storage"')


def audit_entries(session) -> list[AuditEntry]:
    session.rollback()  # see what the requests committed
    return list(
        session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "player.view_unredacted")
            .order_by(AuditEntry.id)
        )
    )


@pytest.fixture
def archive_url(app, tmp_path, monkeypatch) -> str:
    url = str(tmp_path / "cold")
    monkeypatch.setitem(app.config, "ARCHIVE_URL", url)
    return url


@pytest.fixture
def world(session, make_player, make_tournament, archive_url):
    """Alice with one recent event and three a year and more old, archived; Bob her opponent."""
    alice = make_player("alice", display_name="Alice Liddell")
    bob = make_player("bobthebuilder", display_name="Robert Opponent")
    spring = make_tournament("Spring Cup")
    secret = make_tournament("Secret Invitational", is_private=True)
    facts = [
        match_event(
            alice, 1, at=NOW - timedelta(days=10), opponents=[bob], tournament_id=spring.id
        ),
        match_event(
            alice, 2, at=NOW - timedelta(days=500), opponents=[bob], tournament_id=spring.id
        ),
        match_event(
            alice,
            3,
            at=NOW - timedelta(days=450),
            kind="match_lost",
            opponents=[bob],
            tournament_id=secret.id,
        ),
        match_event(alice, 4, at=NOW - timedelta(days=400), kind="match_forfeit_won"),
    ]
    with unit_of_work(session):
        recent, spring_old, secret_old, forfeit_old = (
            o.event_id for o in record_events(session, facts).outcomes
        )
    with unit_of_work(session):
        run_id = archive.start_archive(
            session, SYSTEM, now=NOW, after_days=AFTER_DAYS, url=archive_url
        ).id
    assert execute_run(session, run_id).status == "succeeded"
    session.rollback()
    return {
        "alice": alice,
        "bob": bob,
        "spring": spring,
        "secret": secret,
        "recent": recent,
        "spring_old": spring_old,
        "secret_old": secret_old,
        "forfeit_old": forfeit_old,
        "archived": [forfeit_old, secret_old, spring_old],  # newest first
    }


def test_without_the_flag_the_page_shows_only_hot_events_and_reads_no_archive_file(
    client, sign_in, session, world
):
    sign_in("viewer")
    # With the files gone, any read of cold storage would show as an error on the page.
    for url in session.scalars(select(ArchiveFile.url)):
        Path(url.removeprefix("file://")).unlink()
    session.rollback()

    html = client.get(page_url(world["alice"])).text

    assert event_ids(html) == [world["recent"]]
    assert 'data-testid="cold-storage"' not in html
    assert cold_badges(html) == 0
    assert 'data-testid="include-archived-link"' in html
    assert "include_archived=1" in html

    html = client.get(page_url(world["alice"]), query_string={"include_archived": "1"}).text
    assert 'data-testid="cold-storage-error"' in cold_section(html)
    assert "missing" in cold_section(html)
    assert event_ids(hot_section(html)) == [world["recent"]], "the hot timeline still shows"


def test_with_the_flag_archived_events_follow_the_hot_ones_marked_and_redacted_for_a_viewer(
    client, sign_in, session, world
):
    sign_in("viewer")
    response = client.get(page_url(world["alice"]), query_string={"include_archived": "1"})
    html = response.text

    assert response.status_code == 200
    assert event_ids(hot_section(html)) == [world["recent"]]
    cold = cold_section(html)
    assert "From cold storage" in cold
    assert event_ids(cold) == world["archived"]
    assert cold_badges(cold) == 3 and cold_badges(hot_section(html)) == 0
    assert (
        'name="include_archived" value="1"' in html
        and "checked" in html.split('id="filter-include-archived"')[1].split(">")[0]
    )
    assert "bobthebuilder" not in html and "Robert Opponent" not in html
    assert "Secret Invitational" not in html
    assert "[Private Tournament]" in cold
    assert world["bob"].public_id in cold, "opponents appear by public id"
    assert "Spring Cup" in cold
    assert "<script" not in cold, "no inline script (CSP)"
    assert audit_entries(session) == [], "a redacted page writes nothing"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"type": "match_lost"}, "secret_old"),
        ({"type": ["match_won", "match_forfeit_won"]}, "spring_old forfeit_old"),
        ({"from": "2025-01-01"}, "forfeit_old"),
        ({"to": "2024-12-31"}, "spring_old secret_old"),
        ({"tournament": "spring"}, "spring_old"),
        ({"tournament": "secret"}, ""),  # a viewer's filter matches no private tournament
        ({"origin": "live"}, "spring_old secret_old forfeit_old"),
        ({"origin": "dispute"}, ""),
    ],
    ids=["type", "types", "from", "to", "tournament", "private-tournament", "origin", "no-origin"],
)
def test_the_timeline_filters_apply_to_archived_events(client, sign_in, world, query, expected):
    sign_in("viewer")
    if "tournament" in query:
        query = {"tournament": world[query["tournament"]].id}
    html = client.get(
        page_url(world["alice"]), query_string={**query, "include_archived": "1"}
    ).text

    wanted = {world[name] for name in expected.split()}
    assert event_ids(cold_section(html)) == [i for i in world["archived"] if i in wanted]
    if not wanted:
        assert "No archived events match these filters" in cold_section(html)


def test_the_filters_form_swaps_the_timeline_with_its_cold_storage_section_and_load_more_skips_it(
    client, sign_in, world
):
    sign_in("viewer")
    fragment = client.get(
        page_url(world["alice"]), query_string={"include_archived": "1"}, headers=HX
    ).text
    assert "<html" not in fragment
    assert fragment.lstrip().startswith('<div id="timeline"')
    assert event_ids(cold_section(fragment)) == world["archived"]

    more = client.get(
        page_url(world["alice"], "/timeline"), query_string={"include_archived": "1"}, headers=HX
    ).text
    assert event_ids(more) == [world["recent"]]
    assert 'data-testid="cold-storage"' not in more and cold_badges(more) == 0


def test_with_a_reason_archived_events_show_in_full_and_the_load_is_audited(
    client, sign_in, session, world
):
    sign_in("trust_safety")
    token = csrf_token_from(client.get(page_url(world["alice"])).text)
    client.post(page_url(world["alice"], "/reveal"), data={"reason": "DSP-7", "csrf_token": token})

    html = client.get(page_url(world["alice"]), query_string={"include_archived": "1"}).text

    cold = cold_section(html)
    assert event_ids(cold) == world["archived"]
    assert "@bobthebuilder" in cold
    assert "Secret Invitational" in cold
    entries = audit_entries(session)
    assert [e.details["view"] for e in entries] == ["grant", "page"]
    assert entries[-1].details["include_archived"] is True
    assert entries[-1].details["reason"] == "DSP-7"
