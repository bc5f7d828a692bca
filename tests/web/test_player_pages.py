"""Player pages: search, redaction, the audited reveal, htmx timeline paging, filters, preview."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from tests.conftest import T0, csrf_token_from
from webapp.domain.recording import NewEvent, record_events
from webapp.models import AuditEntry
from webapp.transaction import unit_of_work
from webapp.web.admin.base import UNREDACTED_ROLES

HX = {"HX-Request": "true"}
OTHER_ROLES = ("viewer", "engineer")


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


def record(session, facts) -> list[int]:
    with unit_of_work(session):
        outcome = record_events(session, facts)
    return [o.event_id for o in outcome.outcomes]


def page_url(player, suffix="") -> str:
    return f"/admin/players/{player.public_id}{suffix}"


def event_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-testid="event" data-event-id="(\d+)"', html)]


def search_results(html: str) -> list[str]:
    return re.findall(r'data-testid="search-result">\s*<td><a href="[^"]+">([^<]+)</a>', html)


def preview_columns(html: str) -> dict[str, str]:
    """The preview's columns by viewer, in page order."""
    return dict(re.findall(r'data-viewer="(\w+)">(.*?)</section>', html, re.DOTALL))


def audit_entries(session, action="player.view_unredacted") -> list[AuditEntry]:
    session.rollback()  # see what the requests committed
    return list(
        session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        )
    )


def reveal(client, player, reason, *, token=None):
    if token is None:
        token = csrf_token_from(client.get(page_url(player)).text)
    return client.post(page_url(player, "/reveal"), data={"reason": reason, "csrf_token": token})


@pytest.fixture
def world(session, make_player, make_tournament):
    """Alice, whose page we open; Bob, her opponent; a public and a private tournament."""
    alice = make_player("alice", display_name="Alice Liddell", email="alice.l@example.test")
    bob = make_player("bobthebuilder", display_name="Robert Opponent", email="bob@example.test")
    spring = make_tournament("Spring Cup")
    secret = make_tournament("Secret Invitational", is_private=True)
    won, lost = record(
        session,
        [
            match_event(alice, 1, at=T0, opponents=[bob], tournament_id=spring.id),
            match_event(
                alice,
                2,
                at=T0 + timedelta(days=1),
                kind="match_lost",
                opponents=[bob],
                tournament_id=secret.id,
            ),
        ],
    )
    return {
        "alice": alice,
        "bob": bob,
        "spring": spring,
        "secret": secret,
        "won": won,
        "lost": lost,
    }


# Search


@pytest.mark.parametrize(
    "query",
    ["ALI", "alice liddell", "dc-25-000001", "ALICE.L@EXAMPLE", "Alice.l@example.test"],
    ids=["username", "display-name", "public-id", "email-prefix", "email"],
)
def test_privileged_staff_search_by_each_field_ignoring_case(client, sign_in, world, query):
    sign_in("trust_safety")
    html = client.get("/admin/players/", query_string={"q": query}).text
    assert search_results(html) == [world["alice"].public_id]
    assert "alice.l@example.test" not in html, "results never show an email"


def test_a_viewer_searches_by_public_id_and_display_name_but_not_email_or_username(
    client, sign_in, world
):
    sign_in("viewer")
    alice = world["alice"]

    def found(query):
        return search_results(client.get("/admin/players/", query_string={"q": query}).text)

    assert found("dc-25-000001") == [alice.public_id]
    assert found("alice l") == [alice.public_id]
    assert found("alice.l@") == []
    assert found("bobthe") == []
    html = client.get("/admin/players/", query_string={"q": "a"}).text
    assert "alice.l@example.test" not in html and "bob@example.test" not in html


def test_search_results_page_through_every_player_once(client, sign_in, make_player):
    for n in range(45):
        make_player(f"gamer{n:02d}")
    sign_in("admin")
    seen, url, pages = [], "/admin/players/?q=GAMER", 0
    while url:
        html = client.get(url, headers=HX).text
        assert "<html" not in html
        seen += search_results(html)
        pages += 1
        link = re.search(r'data-testid="next-page"[^>]*hx-get="([^"]+)"', html) or re.search(
            r'href="([^"]+)" data-testid="next-page"', html
        )
        url = link.group(1).replace("&amp;", "&") if link else None
    assert pages == 3
    assert len(seen) == len(set(seen)) == 45


def test_the_search_page_without_htmx_is_a_full_page_with_the_form(client, sign_in, world):
    sign_in("viewer")
    response = client.get("/admin/players/?q=alice")
    assert "<html" in response.text and 'data-testid="player-search"' in response.text
    assert "HX-Request" in response.headers["Vary"], "caches keep the page and the fragment apart"


# The redacted view


@pytest.mark.parametrize("role", ["viewer", "engineer", *UNREDACTED_ROLES])
def test_every_role_opens_a_player_page_redacted_until_a_reason_is_given(
    client, sign_in, session, world, role
):
    sign_in(role)
    response = client.get(page_url(world["alice"]))
    html = response.text
    assert response.status_code == 200
    assert 'data-view="redacted"' in html
    assert "alice.l@example.test" not in html
    assert "bobthebuilder" not in html and "Robert Opponent" not in html
    assert "Secret Invitational" not in html
    assert "[Private Tournament]" in html
    assert world["bob"].public_id in html, "opponents appear by public id"
    assert "Spring Cup" in html
    assert 'data-scope="all"' not in html, "only public-scope stats"
    assert ('data-testid="reveal-form"' in html) == (role in UNREDACTED_ROLES)
    assert audit_entries(session) == [], "a redacted page writes nothing"


def test_a_redacted_viewer_filtering_by_a_private_tournament_sees_nothing_of_it(
    client, sign_in, world
):
    sign_in("viewer")
    html = client.get(
        page_url(world["alice"]), query_string={"tournament": world["secret"].id}
    ).text
    assert event_ids(html) == []
    html = client.get(
        page_url(world["alice"]), query_string={"tournament": world["spring"].id}
    ).text
    assert event_ids(html) == [world["won"]]



def test_each_row_links_its_opponent_and_tournament_to_player_pages_that_open(client, sign_in, world):
    sign_in("viewer")
    alice, bob, spring = world["alice"], world["bob"], world["spring"]
    html = client.get(page_url(alice)).text
    links = set(re.findall(r'<a href="(/admin/players/[^"#]+)"', html))

    tournament_link = f"/admin/players/{alice.public_id}?tournament={spring.id}"
    assert {f"/admin/players/{bob.public_id}", tournament_link} <= links
    assert client.get(f"/admin/players/{bob.public_id}").status_code == 200
    assert event_ids(client.get(tournament_link).text) == [world["won"]]

def test_an_unknown_player_is_not_found(client, sign_in):
    sign_in("viewer")
    assert client.get("/admin/players/DC-99-999999").status_code == 404


# Reveal


@pytest.mark.parametrize("role", OTHER_ROLES)
def test_roles_without_the_right_may_not_reveal(client, sign_in, session, world, role):
    sign_in(role)
    response = reveal(client, world["alice"], "curious")
    assert response.status_code == 403
    assert audit_entries(session) == []
    assert 'data-view="redacted"' in client.get(page_url(world["alice"])).text


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_reveal_without_a_reason_is_refused_and_audits_nothing(
    client, sign_in, session, world, reason
):
    sign_in("admin")
    response = reveal(client, world["alice"], reason)
    assert response.status_code == 400
    assert 'data-testid="reveal-error"' in response.text
    assert "alice.l@example.test" not in response.text
    assert audit_entries(session) == []
    assert 'data-view="redacted"' in client.get(page_url(world["alice"])).text


def test_a_reveal_needs_the_csrf_token(client, sign_in, session, world):
    sign_in("admin")
    response = reveal(client, world["alice"], "dispute #12", token="")
    assert response.status_code == 400
    assert audit_entries(session) == []


def test_a_reveal_is_audited_with_the_reason_and_shows_full_data(client, sign_in, session, world):
    staff = sign_in("trust_safety")
    alice = world["alice"]

    response = reveal(client, alice, "  dispute #12: disputed loss  ")
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == page_url(alice)

    [grant] = audit_entries(session)
    assert (grant.staff_id, grant.target_type, grant.target_id) == (staff.id, "player", alice.id)
    assert grant.ip_address == "127.0.0.1"
    assert grant.details["reason"] == "dispute #12: disputed loss"
    assert grant.details["view"] == "grant"
    assert grant.occurred_at is not None

    html = client.get(page_url(alice)).text
    assert 'data-view="full"' in html
    assert "alice.l@example.test" in html
    assert "bobthebuilder" in html and "Robert Opponent" in html
    assert "Secret Invitational" in html
    assert 'data-scope="all"' in html
    assert "dispute #12: disputed loss" in html


def test_every_full_load_is_audited_and_redacted_ones_are_not(client, sign_in, session, world):
    staff = sign_in("privacy")
    alice, bob = world["alice"], world["bob"]
    reveal(client, alice, "GDPR request #4")

    client.get(page_url(alice))
    client.get(page_url(alice, "/timeline"), headers=HX)
    client.get(page_url(alice, "/preview"))
    client.get(page_url(bob))  # no grant for Bob: redacted, not audited

    entries = audit_entries(session)
    assert [e.details["view"] for e in entries] == ["grant", "page", "timeline", "preview"]
    assert {(e.staff_id, e.target_id, e.details["reason"]) for e in entries} == {
        (staff.id, alice.id, "GDPR request #4")
    }
    assert 'data-view="redacted"' in client.get(page_url(bob)).text


def test_a_grant_ends_after_its_lifetime(client, sign_in, session, world):
    sign_in("admin")
    alice = world["alice"]
    reveal(client, alice, "fraud check")
    with client.session_transaction() as cookie_session:
        grant = cookie_session["player_grants"][str(alice.id)]
        grant["until"] = grant["until"] - 16 * 60

    html = client.get(page_url(alice)).text

    assert 'data-view="redacted"' in html and "alice.l@example.test" not in html
    assert [e.details["view"] for e in audit_entries(session)] == ["grant"]


def test_a_grant_ends_with_the_session(client, sign_in, world):
    sign_in("admin")
    alice = world["alice"]
    reveal(client, alice, "fraud check")
    token = csrf_token_from(client.get(page_url(alice)).text)
    client.post("/auth/sign-out", data={"csrf_token": token})
    sign_in("admin")
    assert 'data-view="redacted"' in client.get(page_url(alice)).text


# The timeline: htmx fragments, keyset paging, filters, reversals


def test_load_more_with_htmx_returns_only_rows_and_without_it_the_full_page(
    client, sign_in, session, make_player
):
    alice = make_player("alice")
    record(session, [match_event(alice, n, at=T0 + timedelta(minutes=n)) for n in range(30)])
    sign_in("viewer")
    first = client.get(page_url(alice)).text
    more = (
        re.search(r'href="([^"]+)" data-testid="load-more"', first).group(1).replace("&amp;", "&")
    )

    fragment = client.get(more, headers=HX)
    full = client.get(more)

    assert fragment.status_code == full.status_code == 200
    assert "<html" not in fragment.text and 'data-testid="player-page"' not in fragment.text
    assert 'id="timeline-events"' not in fragment.text, "rows and a new button, not the container"
    assert event_ids(fragment.text) == event_ids(full.text) == list(range(5, 0, -1))
    assert "<html" in full.text and 'data-testid="player-page"' in full.text
    assert 'data-testid="timeline-end"' in fragment.text
    assert "HX-Request" in fragment.headers["Vary"]


def test_the_filters_form_gets_the_whole_timeline_block_with_htmx(client, sign_in, world):
    sign_in("viewer")
    html = client.get(page_url(world["alice"]), query_string={"type": "match_won"}, headers=HX).text
    assert html.lstrip().startswith('<div id="timeline"')
    assert "<html" not in html and 'data-testid="timeline-filters"' not in html
    assert event_ids(html) == [world["won"]]


def test_keyset_paging_through_120_events_shows_each_exactly_once(
    client, sign_in, session, make_player
):
    alice = make_player("alice")
    # Four events share each instant, so pages end inside runs of equal times.
    ids = record(
        session, [match_event(alice, n, at=T0 + timedelta(minutes=n // 4)) for n in range(120)]
    )
    sign_in("viewer")

    html = client.get(page_url(alice)).text
    seen, requests = event_ids(html), 1
    while link := re.search(r'hx-get="([^"]+)" hx-target="#load-more"', html):
        html = client.get(link.group(1).replace("&amp;", "&"), headers=HX).text
        seen += event_ids(html)
        requests += 1

    assert len(seen) == len(set(seen)) == 120
    assert seen == sorted(ids, key=lambda i: ((i - ids[0]) // 4, i), reverse=True)
    assert requests == 5  # 25 a page


def test_paging_keeps_the_filters(client, sign_in, session, make_player):
    alice = make_player("alice")
    record(
        session,
        [
            match_event(
                alice, n, at=T0 + timedelta(minutes=n), kind=("match_won", "match_lost")[n % 2]
            )
            for n in range(80)
        ],
    )
    sign_in("viewer")
    html = client.get(page_url(alice), query_string={"type": "match_lost"}).text
    seen = event_ids(html)
    while link := re.search(r'hx-get="([^"]+)" hx-target="#load-more"', html):
        html = client.get(link.group(1).replace("&amp;", "&"), headers=HX).text
        seen += event_ids(html)
    assert len(seen) == len(set(seen)) == 40


@pytest.fixture
def varied(session, make_player, make_tournament):
    """Alice's events on five days, from every origin, in two tournaments."""
    alice = make_player("alice")
    spring, autumn = make_tournament("Spring Cup"), make_tournament("Autumn Cup")
    ids = record(
        session,
        [
            match_event(alice, 1, at=T0, tournament_id=spring.id),
            match_event(
                alice,
                2,
                at=T0 + timedelta(days=1),
                kind="match_lost",
                origin="backfill",
                origin_id=7,
                tournament_id=spring.id,
            ),
            match_event(
                alice,
                3,
                at=T0 + timedelta(days=2),
                origin="dispute",
                origin_id=3,
                tournament_id=autumn.id,
            ),
            match_event(
                alice,
                4,
                at=T0 + timedelta(days=3),
                kind="match_forfeit_won",
                origin="staff",
                origin_id=1,
            ),
            match_event(
                alice,
                5,
                at=T0 + timedelta(days=4, hours=5),
                kind="match_lost",
                tournament_id=autumn.id,
            ),
        ],
    )
    return alice, dict(zip((1, 2, 3, 4, 5), ids, strict=True)), spring, autumn


@pytest.mark.parametrize(
    "args, expected",
    [
        ({"type": "match_lost"}, [5, 2]),
        ({"type": ["match_won", "match_forfeit_won"]}, [4, 3, 1]),
        ({"origin": "backfill"}, [2]),
        ({"origin": ["dispute", "staff"]}, [4, 3]),
        ({"from": "2026-03-03", "to": "2026-03-04"}, [3, 2]),
        ({"from": "2026-03-05"}, [5, 4]),
        ({"to": "2026-03-02"}, [1]),
        ({"from": "0001-01-01", "to": "9999-12-31"}, [5, 4, 3, 2, 1]),
        ({"type": "match_lost", "origin": "live", "from": "2026-03-03"}, [5]),
    ],
)
def test_filters_by_type_origin_and_date_range(client, sign_in, varied, args, expected):
    alice, ids, _spring, _autumn = varied
    sign_in("viewer")
    html = client.get(page_url(alice), query_string=args).text
    assert event_ids(html) == [ids[n] for n in expected]


def test_filter_by_tournament(client, sign_in, varied):
    alice, ids, spring, autumn = varied
    sign_in("viewer")
    assert event_ids(client.get(page_url(alice), query_string={"tournament": autumn.id}).text) == [
        ids[5],
        ids[3],
    ]
    assert event_ids(client.get(page_url(alice), query_string={"tournament": spring.id}).text) == [
        ids[2],
        ids[1],
    ]


@pytest.mark.parametrize(
    "args",
    [
        {"type": "match_wonn"},
        {"origin": "import"},
        {"from": "March"},
        {"tournament": "Cup"},
        {"tournament": "²"},
        {"tournament": "9" * 30},
        {"from": "2026-03-04", "to": "2026-03-02"},
        {"cursor": "not-a-cursor"},
    ],
)
def test_bad_filters_and_cursors_are_a_bad_request(client, sign_in, varied, args):
    sign_in("viewer")
    alice = varied[0]
    response = client.get(page_url(alice), query_string=args)
    assert response.status_code == 400
    assert 'data-testid="error"' in response.text
    fragment = client.get(page_url(alice, "/timeline"), query_string=args, headers=HX)
    assert fragment.status_code == 400 and "<html" not in fragment.text


def test_each_event_shows_type_time_summary_source_and_origin(client, sign_in, varied):
    alice, ids, _spring, _autumn = varied
    sign_in("viewer")
    html = client.get(page_url(alice)).text
    rows = dict(
        zip(event_ids(html), re.split(r'<article class="timeline-event', html)[1:], strict=True)
    )

    backfilled = rows[ids[2]]
    assert "match lost" in backfilled and "2026-03-03 18:00 UTC" in backfilled
    assert "Lost R1 to an unknown opponent in Spring Cup" in backfilled
    assert "source match #2" in backfilled
    assert "backfill run #7" in backfilled
    assert "resolving dispute #3" in rows[ids[3]]
    assert "staff member #1" in rows[ids[4]]
    assert 'data-origin="live"' in rows[ids[1]]


def test_reversals_link_to_what_they_reverse_and_back(client, sign_in, session, make_player):
    alice = make_player("alice")
    [won, kept] = record(
        session, [match_event(alice, 1), match_event(alice, 2, at=T0 + timedelta(hours=1))]
    )
    [reversal] = record(
        session,
        [
            NewEvent(
                player_id=alice.id,
                event_type="match_won_reversed",
                occurred_at=T0 + timedelta(days=1),
                source_model="match",
                source_id=1,
                origin="dispute",
                origin_id=5,
                metadata={"match_id": 1},
                reverses_event_id=won,
            )
        ],
    )
    sign_in("viewer")
    html = client.get(page_url(alice)).text
    assert f'<a href="#event-{won}" data-testid="reverses">reverses #{won}</a>' in html
    assert (
        f'<a href="#event-{reversal}" data-testid="reversed-by">reversed by #{reversal}</a>' in html
    )
    assert f'id="event-{won}"' in html and f'id="event-{reversal}"' in html
    assert html.count('data-testid="reversed-by"') == 1, f"event {kept} was not reversed"


# Preview


def test_the_preview_shows_three_columns_each_redacted_for_its_viewer(
    client, sign_in, session, world
):
    alice, bob = world["alice"], world["bob"]
    alice.feed_visibility = "public"
    session.commit()
    sign_in("admin")

    before = client.get(page_url(alice, "/preview")).text
    columns = preview_columns(before)
    assert list(columns) == ["public", "opponent", "owner"]
    assert 'data-testid="preview-unavailable"' in columns["owner"], (
        "the owner's view needs a reason"
    )
    assert bob.public_id in columns["opponent"].split("</h3>")[0], "an opponent from a recent match"
    for name in ("public", "opponent"):
        column = columns[name]
        assert event_ids(column) == [world["lost"], world["won"]]
        assert "[Private Tournament]" in column and "Secret Invitational" not in column
        assert "bobthebuilder" not in column and "Robert Opponent" not in column
        assert "alice.l@example.test" not in column
    assert "alice.l@example.test" not in before

    reveal(client, alice, "checking what the owner sees")
    owner = preview_columns(client.get(page_url(alice, "/preview")).text)["owner"]
    assert event_ids(owner) == [world["lost"], world["won"]]
    assert "Secret Invitational" in owner and "Robert Opponent" in owner
    assert "alice.l@example.test" in owner
    assert 'data-scope="all"' in owner


def test_a_private_feed_shows_nothing_to_the_public_or_an_opponent(client, sign_in, world):
    sign_in("viewer")
    html = client.get(page_url(world["alice"], "/preview")).text  # feeds are private by default
    columns = preview_columns(html)
    for name in ("public", "opponent"):
        assert 'data-testid="preview-feed-private"' in columns[name]
        assert event_ids(columns[name]) == []
    assert "Your role does not see it." in columns["owner"]


def test_staff_may_pick_the_opponent_of_the_preview(client, sign_in, world, make_player):
    carol = make_player("carol")
    sign_in("viewer")
    html = client.get(
        page_url(world["alice"], "/preview"), query_string={"opponent": carol.public_id.lower()}
    ).text
    assert "As a signed-in opponent</h3>" not in html
    assert f"As a signed-in opponent {carol.public_id}</h3>" in html
    assert (
        client.get(
            page_url(world["alice"], "/preview"), query_string={"opponent": "DC-00-000000"}
        ).status_code
        == 404
    )


def test_a_player_with_no_matches_has_no_opponent_to_preview_as(client, sign_in, make_player):
    loner = make_player("loner")
    sign_in("viewer")
    html = client.get(page_url(loner, "/preview")).text
    columns = preview_columns(html)
    assert "No opponent" in columns["opponent"]


# Pages follow the content security policy


def test_player_pages_have_no_inline_script_or_event_handlers(client, sign_in, world, session):
    sign_in("admin")
    alice = world["alice"]
    reveal(client, alice, "layout check")
    for url in (
        "/admin/players/?q=a",
        page_url(alice),
        page_url(alice, "/timeline"),
        page_url(alice, "/preview"),
    ):
        html = client.get(url).text
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], url
        assert not re.search(r"\son[a-z]+\s*=", html), url


def test_gets_never_write_except_the_audit_of_full_views(client, sign_in, session, world):
    sign_in("viewer")
    session.rollback()
    before = session.scalar(select(func.count()).select_from(AuditEntry))
    for url in (
        "/admin/players/?q=a",
        page_url(world["alice"]),
        page_url(world["alice"], "/timeline"),
        page_url(world["alice"], "/preview"),
    ):
        assert client.get(url).status_code == 200
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == before


def test_a_player_page_costs_the_same_statements_whatever_its_events_refer_to(
    client, sign_in, session, make_player, make_tournament, count_queries
):
    alice = make_player("alice")
    rivals = [make_player(f"rival{n}") for n in range(25)]
    cups = [make_tournament(f"Cup {n}", is_private=n % 2 == 0) for n in range(25)]
    record(
        session,
        [
            match_event(
                alice,
                n,
                at=T0 + timedelta(minutes=n),
                opponents=[rivals[n]],
                tournament_id=cups[n].id,
            )
            for n in range(25)
        ],
    )
    sign_in("admin")
    client.get(page_url(alice))  # the session's first request also loads what it caches

    def statements(**args) -> int:
        with count_queries() as counter:
            assert client.get(page_url(alice), query_string=args).status_code == 200
        return counter["n"]

    redacted = statements(tournament=cups[1].id), statements()
    reveal(client, alice, "counting statements")
    full = statements(tournament=cups[1].id), statements()

    # Names are looked up in one statement, not one per event; a full view adds its
    # audit entry's transaction and the reloads that follow a commit, whatever the page holds.
    assert redacted[0] == redacted[1]
    assert full[0] == full[1]
