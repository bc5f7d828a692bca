"""The API tokens page: admins create tokens (shown once, stored as a hash) and revoke them."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from sqlalchemy import select

from tests.conftest import csrf_token_from
from tests.web.api_support import bearer
from webapp.models import ApiToken, AuditEntry
from webapp.models.staff import ROLES

PAGE = "/admin/api-tokens/"
CREATE = "/admin/api-tokens/new"


def revoke_url(token_id: int) -> str:
    return f"/admin/api-tokens/{token_id}/revoke"


def create(client, name="platform production", scopes=("read",)):
    page = client.get(PAGE)
    return client.post(
        CREATE,
        data={"name": name, "scopes": list(scopes), "csrf_token": csrf_token_from(page.text)},
    )


def shown_token(html: str) -> str:
    match = re.search(r'data-testid="new-token-value">([^<]+)<', html)
    assert match, "the page shows no new token"
    return match.group(1).strip()


def fresh(session):
    session.rollback()
    return session


def test_an_admin_creates_a_token_that_is_shown_once_and_stored_only_as_a_hash(
    client, session, sign_in
):
    admin = sign_in("admin")
    response = create(client, scopes=("read", "write"))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    plaintext = shown_token(response.text)
    assert plaintext.startswith("aops_") and len(plaintext) >= 40

    token = fresh(session).scalars(select(ApiToken)).one()
    assert token.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert token.prefix == plaintext[:12]
    assert token.scopes == ["read", "write"]
    assert token.created_by_id == admin.id
    secret = plaintext[len("aops_") :]
    stored = [str(value) for value in session.execute(select(ApiToken.__table__)).one()]
    assert not any(secret[:16] in value for value in stored), (
        "the database holds no part of the secret"
    )

    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "api_token.create")).one()
    assert (audit.staff_id, audit.target_type, audit.target_id) == (admin.id, "api_token", token.id)
    assert audit.details["scopes"] == ["read", "write"]
    assert secret[:16] not in json.dumps(audit.details)

    again = client.get(PAGE)
    assert plaintext not in again.text and secret[:16] not in again.text
    assert token.prefix in again.text and "platform production" in again.text


def test_a_created_token_reads_the_api(client, session, sign_in, make_player):
    player = make_player("pat")
    sign_in("admin")
    plaintext = shown_token(create(client).text)
    response = client.get(f"/api/players/{player.public_id}/stats", headers=bearer(plaintext))
    assert response.status_code == 200


def test_an_admin_revokes_a_token_and_the_api_refuses_it(client, session, sign_in, make_player):
    player = make_player("pat")
    admin = sign_in("admin")
    plaintext = shown_token(create(client).text)
    token_id = fresh(session).scalars(select(ApiToken.id)).one()

    page = client.get(PAGE)
    response = client.post(revoke_url(token_id), data={"csrf_token": csrf_token_from(page.text)})
    assert response.status_code == 302
    assert "is revoked" in client.get(PAGE).text

    token = fresh(session).get(ApiToken, token_id)
    assert token.revoked_at is not None
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "api_token.revoke")).one()
    assert (audit.staff_id, audit.target_id) == (admin.id, token_id)
    assert plaintext[5:21] not in json.dumps(audit.details)
    response = client.get(f"/api/players/{player.public_id}/stats", headers=bearer(plaintext))
    assert response.status_code == 401


def test_revoking_needs_the_csrf_token(client, session, sign_in):
    sign_in("admin")
    create(client)
    token_id = fresh(session).scalars(select(ApiToken.id)).one()
    assert client.post(revoke_url(token_id)).status_code == 400
    assert fresh(session).get(ApiToken, token_id).revoked_at is None


def test_creating_needs_the_csrf_token(client, session, sign_in):
    sign_in("admin")
    response = client.post(CREATE, data={"name": "sneaky", "scopes": ["write"]})
    assert response.status_code == 400
    assert fresh(session).scalars(select(ApiToken)).all() == []


@pytest.mark.parametrize(
    "name, scopes, message",
    [
        ("", ("read",), "This field is required"),
        ("x" * 101, ("read",), "Field cannot be longer"),
        ("platform", (), "Choose at least one scope"),
        ("platform", ("admin",), "not a valid choice"),
    ],
    ids=["no-name", "long-name", "no-scope", "unknown-scope"],
)
def test_a_bad_form_creates_nothing_and_says_why(client, session, sign_in, name, scopes, message):
    sign_in("admin")
    response = create(client, name=name, scopes=scopes)
    assert response.status_code == 400
    assert message in response.text
    assert 'data-testid="new-token"' not in response.text
    assert fresh(session).scalars(select(ApiToken)).all() == []


def test_revoking_an_unknown_token_is_404(client, sign_in):
    sign_in("admin")
    page = client.get(PAGE)
    assert (
        client.post(revoke_url(999999), data={"csrf_token": csrf_token_from(page.text)}).status_code
        == 404
    )


@pytest.mark.parametrize("role", [role for role in ROLES if role != "admin"])
def test_only_admins_see_create_or_revoke_tokens(client, session, sign_in, make_staff, role):
    from tests.web.api_support import issue_token

    token_plaintext = issue_token(session, make_staff("admin"), "read")
    token_id = session.scalars(select(ApiToken.id)).one()
    sign_in(role)
    csrf = csrf_token_from(client.get("/admin/").text)
    assert client.get(PAGE).status_code == 403
    assert (
        client.post(
            CREATE, data={"name": "mine", "scopes": ["write"], "csrf_token": csrf}
        ).status_code
        == 403
    )
    assert client.post(revoke_url(token_id), data={"csrf_token": csrf}).status_code == 403
    session.rollback()
    assert session.scalars(select(ApiToken.name)).all() == ["platform"]
    assert session.get(ApiToken, token_id).revoked_at is None
    assert "API tokens" not in client.get("/admin/").text, "the menu does not offer the page"
    assert token_plaintext


def test_the_tokens_page_has_no_inline_script(client, sign_in):
    sign_in("admin")
    html = create(client).text
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts)
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"


def test_the_page_lists_tokens_with_their_creator_and_use(client, session, sign_in, make_player):
    player = make_player("pat")
    admin = sign_in("admin")
    plaintext = shown_token(create(client, name="reporting").text)
    assert "never" in client.get(PAGE).text
    client.get(f"/api/players/{player.public_id}/stats", headers=bearer(plaintext))
    row = client.get(PAGE).text.split('data-testid="token-row"')[1]
    assert "reporting" in row and admin.email in row and "read" in row
    assert "never" not in row.split("</tr>")[0]
