"""The API tokens page in a real browser: create a token, see it once, revoke it, clean console."""

from __future__ import annotations

import re

from playwright.sync_api import expect


def test_an_admin_creates_a_token_sees_it_once_and_revokes_it(signed_in_page, console_errors):
    page = signed_in_page("admin")
    page.goto("/admin/api-tokens/")
    expect(page.get_by_test_id("no-tokens")).to_be_visible()

    page.get_by_label("Name").fill("platform production")
    page.get_by_label("write").check()
    page.get_by_role("button", name="Create token").click()

    secret = page.get_by_test_id("new-token-value")
    expect(secret).to_have_text(re.compile(r"^aops_[A-Za-z0-9_-]{43}$"))
    plaintext = secret.inner_text()
    row = page.get_by_test_id("token-row")
    expect(row).to_contain_text("platform production")
    expect(row).to_contain_text("read, write")
    expect(row).to_contain_text(plaintext[:12])

    page.goto("/admin/api-tokens/")
    expect(page.get_by_test_id("new-token")).to_have_count(0)
    assert plaintext not in page.content()

    page.get_by_test_id("revoke").click()
    expect(page.get_by_text("is revoked")).to_be_visible()
    expect(page.get_by_test_id("token-row")).to_contain_text("revoked")
    expect(page.get_by_test_id("revoke")).to_have_count(0)
    assert console_errors == []
