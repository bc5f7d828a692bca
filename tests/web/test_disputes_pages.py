"""Dispute pages: the queue, match pages, case files, and resolving with preview and confirm."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from tests.conftest import csrf_token_from
from webapp.domain.audit import Actor
from webapp.domain.disputes import resolve_dispute
from webapp.models import (
    ActivityEvent,
    AuditEntry,
    DisputeNote,
    DisputeView,
    Match,
    MatchResolution,
    PlayerStats,
)
from webapp.models.staff import ROLES
from webapp.transaction import unit_of_work

QUEUE = "/admin/disputes/"
ALLOWED = ("admin", "trust_safety")


@pytest.fixture
def disputed(make_disputed_match):
    """alice beat bob; bob's report put the match in the queue."""
    match, case, alice, bob = make_disputed_match("the score was entered the wrong way round")
    return {"match": match, "case": case.id, "alice": alice, "bob": bob}


def case_url(case_id: int, suffix: str = "") -> str:
    return f"/admin/disputes/cases/{case_id}{suffix}"


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" type="hidden" value="([^"]*)"', html) or re.search(
        rf'type="hidden" name="{name}" value="([^"]*)"', html) or re.search(
        rf'id="{name}" name="{name}" type="hidden" value="([^"]*)"', html)
    assert found, f"no hidden {name} field"
    return found.group(1)


def resolve_fields(html: str, outcome: str = "b", reason: str = "the referee's sheet says bob won") -> dict:
    return {"csrf_token": csrf_token_from(html), "outcome": outcome, "reason": reason,
            "version": hidden(html, "version"), "token": hidden(html, "token")}


def written(session) -> tuple:
    session.rollback()
    return (
        session.scalar(select(func.count()).select_from(ActivityEvent)),
        session.scalar(select(func.count()).select_from(MatchResolution)),
        [(m.state, m.winner_side, m.version) for m in session.scalars(select(Match).order_by(Match.id))],
    )


# Access.


@pytest.mark.parametrize("role", ROLES)
def test_only_trust_and_safety_and_admins_reach_disputes(client, sign_in, disputed, role):
    sign_in(role)
    expected = 200 if role in ALLOWED else 403
    for url in (QUEUE, f"/admin/disputes/matches/{disputed['match'].id}", case_url(disputed["case"])):
        assert client.get(url).status_code == expected, url


@pytest.mark.parametrize("role", [r for r in ROLES if r not in ALLOWED])
def test_other_roles_cannot_resolve_or_annotate(client, session, sign_in, disputed, role):
    sign_in(role)
    token = csrf_token_from(client.get("/admin/").text)
    before = written(session)
    for suffix, data in (("/preview", {"outcome": "b"}), ("/resolve", {"outcome": "b", "reason": "x",
                                                                        "version": "2", "token": "t"}),
                         ("/notes", {"body": "x"})):
        assert client.post(case_url(disputed["case"], suffix), data={"csrf_token": token, **data}).status_code == 403
    assert client.post(f"/admin/disputes/matches/{disputed['match'].id}/report",
                       data={"csrf_token": token, "reason": "x"}).status_code == 403
    assert written(session) == before


def test_anonymous_visitors_are_sent_to_sign_in(client, disputed):
    response = client.get(case_url(disputed["case"]))
    assert response.status_code == 302 and "/auth/sign-in" in response.headers["Location"]


# The queue, the match page and the case file.


def test_the_queue_lists_open_cases_with_who_reported_and_why(client, sign_in, disputed):
    sign_in("trust_safety")
    html = client.get(QUEUE).text
    assert 'data-testid="dispute-row"' in html
    assert disputed["bob"].public_id in html and "the score was entered the wrong way round" in html


def test_the_match_page_shows_both_sides_and_each_players_events(client, sign_in, disputed):
    sign_in("trust_safety")
    html = client.get(f"/admin/disputes/matches/{disputed['match'].id}").text
    assert disputed["alice"].public_id in html and disputed["bob"].public_id in html
    assert html.count('data-testid="match-event"') == 2
    # Each event names its player by public id.
    assert re.search(rf'data-event-type="match_won"[^>]*>.*?<code>{disputed["alice"].public_id}</code>', html, re.DOTALL)
    assert 'data-event-type="match_won"' in html and 'data-event-type="match_lost"' in html


def test_staff_open_any_match_by_id_or_platform_reference(client, session, sign_in, disputed):
    sign_in("trust_safety")
    match_id = disputed["match"].id
    with unit_of_work(session):
        session.get(Match, match_id).external_ref = "pm-42"
    for reference in (str(match_id), "pm-42"):
        response = client.get(f"/admin/disputes/matches/find?match={reference}")
        assert response.status_code == 302 and response.headers["Location"].endswith(f"/matches/{match_id}")
    assert client.get("/admin/disputes/matches/find?match=pm-404").status_code == 404


def test_staff_mark_a_match_disputed_from_its_page(client, session, sign_in, make_player, make_tournament,
                                                   make_match):
    match = make_match(make_tournament(), make_player(), make_player())
    sign_in("trust_safety")
    page = client.get(f"/admin/disputes/matches/{match.id}")
    response = client.post(f"/admin/disputes/matches/{match.id}/report",
                           data={"csrf_token": csrf_token_from(page.text), "reason": "a player wrote in"})
    assert response.status_code == 302 and "/admin/disputes/cases/" in response.headers["Location"]
    session.rollback()
    assert session.get(Match, match.id).state == "disputed"


def test_opening_a_case_file_records_who_looked_at_it(client, session, sign_in, disputed):
    staff = sign_in("trust_safety")
    client.get(case_url(disputed["case"]))
    html = client.get(case_url(disputed["case"])).text
    session.rollback()
    assert [v.staff_id for v in session.scalars(select(DisputeView))] == [staff.id, staff.id]
    assert session.scalar(select(func.count()).where(AuditEntry.action == "dispute.viewed",
                                                     AuditEntry.staff_id == staff.id)) == 2
    assert html.count('data-testid="case-viewer"') == 2 and staff.email in html


def test_a_case_says_what_counted_before_it_opened(client, session, sign_in, disputed, make_player,
                                                   make_tournament, make_match):
    from webapp.domain.disputes import report_dispute

    sign_in("trust_safety")
    played = client.get(case_url(disputed["case"])).text
    assert re.search(r'data-testid="case-before">Before the dispute the match was completed '
                     r'\(side A won\)\.<', played)

    # The platform may send a result it already marks disputed: none of it was ever recorded.
    match = make_match(make_tournament(), make_player(), make_player(), state="disputed")
    with unit_of_work(session):
        session.get(Match, match.id).winner_side = "a"
        case = report_dispute(session, Actor(staff_id=None), match.id, "contested at the venue").dispute
    arrived = client.get(case_url(case.id)).text
    assert re.search(r'data-testid="case-before">The platform sent this match already disputed, with '
                     r'side A as its winner: no result of it counted before the case was opened\.<', arrived)
    assert "the match was disputed" not in arrived


def test_the_preview_of_a_void_final_says_the_tournament_result_becomes_void(
    client, session, sign_in, make_player, make_tournament, make_match, make_result
):
    from webapp.domain.disputes import report_dispute
    from webapp.domain.results import record_match_result, record_tournament_result

    alice, bob = make_player("alice"), make_player("bob")
    cup = make_tournament("Winter Cup")
    final = make_match(cup, alice, bob, winner="a", is_final=True, round="F")
    make_result(cup, alice)
    with unit_of_work(session):
        record_match_result(session, final.id)
        record_tournament_result(session, cup.id)
    with unit_of_work(session):
        case = report_dispute(session, Actor(staff_id=None), final.id, "substitute not registered").dispute
    sign_in("trust_safety")
    page = client.get(case_url(case.id)).text

    preview = client.post(case_url(case.id, "/preview"), data=resolve_fields(page, outcome="void")).text

    assert re.search(r'data-testid="preview-tournament">[^<]*its win goes to\s+nobody, and the tournament '
                     r'result becomes void, naming no winner until the final is resolved again', preview)


def test_staff_add_evidence_notes(client, session, sign_in, disputed):
    sign_in("trust_safety")
    page = client.get(case_url(disputed["case"]))
    response = client.post(case_url(disputed["case"], "/notes"),
                           data={"csrf_token": csrf_token_from(page.text), "body": "VOD 12:30 shows bob scoring"},
                           follow_redirects=True)
    assert "VOD 12:30 shows bob scoring" in response.text
    session.rollback()
    assert session.scalar(select(func.count()).select_from(DisputeNote)) == 1


def test_forms_without_a_csrf_token_are_refused(client, session, sign_in, disputed):
    sign_in("admin")
    page = client.get(case_url(disputed["case"])).text
    before = written(session)
    fields = resolve_fields(page)
    del fields["csrf_token"]
    assert client.post(case_url(disputed["case"], "/resolve"), data=fields).status_code == 400
    assert client.post(case_url(disputed["case"], "/notes"), data={"body": "x"}).status_code == 400
    assert written(session) == before


# Resolving.


def test_preview_writes_nothing_and_confirm_writes_exactly_the_preview(client, session, sign_in, disputed):
    sign_in("trust_safety")
    page = client.get(case_url(disputed["case"])).text
    before = written(session)

    preview = client.post(case_url(disputed["case"], "/preview"), data=resolve_fields(page))
    assert preview.status_code == 200
    assert written(session) == before
    assert preview.text.count('data-testid="preview-event"') == 4
    assert "match_won_reversed" in preview.text and 'data-testid="preview-stat"' in preview.text

    confirm = client.post(case_url(disputed["case"], "/resolve"), data=resolve_fields(preview.text))
    assert confirm.status_code == 302
    session.rollback()
    resolution = session.scalars(select(MatchResolution)).one()
    assert (resolution.outcome, resolution.reason) == ("b", "the referee's sheet says bob won")
    assert session.get(Match, disputed["match"].id).winner_side == "b"
    assert session.get(PlayerStats, (disputed["bob"].id, "all")).matches_won == 1
    written_events = session.scalars(select(ActivityEvent).where(
        ActivityEvent.source_model == "match_resolution")).all()
    assert sorted(e.event_type for e in written_events) == sorted(
        e["event_type"] for e in resolution.preview["reversals"] + resolution.preview["new_events"])

    case = client.get(confirm.headers["Location"]).text
    assert case.count('data-testid="resolution-event"') == 4
    statuses = re.findall(r'data-testid="event-status">([^<]*)<', case)
    # The originals are reversed, the corrected outcome is in effect, reversals have no status.
    assert sorted(s.split("#")[0] for s in statuses) == ["", "", "in effect", "in effect",
                                                        "reversed by ", "reversed by "]
    assert 'data-testid="stats-before-after"' in case


def test_a_double_submit_writes_one_resolution(client, session, sign_in, disputed):
    sign_in("trust_safety")
    page = client.get(case_url(disputed["case"])).text
    fields = resolve_fields(client.post(case_url(disputed["case"], "/preview"), data=resolve_fields(page)).text)
    first = client.post(case_url(disputed["case"], "/resolve"), data=fields)
    after_first = written(session)
    second = client.post(case_url(disputed["case"], "/resolve"), data=fields, follow_redirects=True)
    assert first.status_code == 302 and second.status_code == 200
    assert "already recorded" in second.text
    assert written(session) == after_first


def test_a_stale_page_is_told_the_match_changed_since_it_was_opened(client, session, sign_in, disputed):
    sign_in("trust_safety")
    stale = client.get(case_url(disputed["case"])).text
    # Someone else resolves the match meanwhile.
    with unit_of_work(session):
        match = session.get(Match, disputed["match"].id)
        resolve_dispute(session, Actor(None), match.id, "void", "fixing", expected_version=match.version,
                        token="someone-else")
    before = written(session)

    for step in ("/preview", "/resolve"):
        response = client.post(case_url(disputed["case"], step), data=resolve_fields(stale))
        assert response.status_code == 409
        assert "changed since you opened it" in response.text
    assert written(session) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [({"reason": ""}, "A reason is required."), ({"outcome": ""}, "Choose the corrected winner or void."),
     ({"outcome": "c"}, "Not a valid choice")],
)
def test_a_resolution_without_reason_or_outcome_is_refused(client, session, sign_in, disputed, change, message):
    sign_in("trust_safety")
    page = client.get(case_url(disputed["case"])).text
    before = written(session)
    for step in ("/preview", "/resolve"):
        response = client.post(case_url(disputed["case"], step), data=resolve_fields(page) | change)
        assert response.status_code == 400 and message in response.text
    assert written(session) == before


def test_an_unknown_case_or_match_is_not_found(client, sign_in):
    sign_in("trust_safety")
    assert client.get(case_url(999_999)).status_code == 404
    assert client.get("/admin/disputes/matches/999999").status_code == 404
