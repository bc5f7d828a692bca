"""Fixtures for browser tests: the real app served over HTTP, driven by Debian's Chromium.

Every test in this folder is marked ``browser`` and, through ``live_server``, runs
once per backend. What a test gets:

- ``live_server``: the backend's app on a free port of 127.0.0.1, empty tables afterwards;
- ``page``: a Playwright page in a fresh browser context whose base URL is the live
  server, so ``page.goto("/admin/")`` works; a screenshot of it is saved under
  ``test-artifacts/screenshots/`` when the test fails;
- ``console_errors``: the console errors, CSP violations and uncaught exceptions of ``page``;
- ``sign_in_through_form(email, password)``: fill in and submit the real sign-in form;
- ``signed_in_page(role, ...)``: a new staff account with those roles, signed in on ``page``.

Chromium is launched once per session (per xdist worker); each test gets its own
context, so cookies never leak between tests. Playwright is never allowed to
download a browser: without /usr/bin/chromium the tests skip on a laptop and fail
under CI=true.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.conftest import STAFF_PASSWORD
from webapp.config import PROJECT_ROOT
from webapp.extensions import limiter
from webapp.jobs.queue import start_in_process_consumer

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
# Short enough that a missing element fails the test quickly, long enough for a loaded CI machine.
ACTION_TIMEOUT_MS = 10_000

BROWSER_TESTS = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items) -> None:
    """Mark every test in this folder ``browser``, so ``-m "not browser"`` leaves them out."""
    for item in items:
        if BROWSER_TESTS in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Save a screenshot of the page when a browser test fails, while the page is still open."""
    report = yield
    if report.failed and report.when == "call" and "page" in item.funcargs:
        path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', item.nodeid)}.png"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            item.funcargs["page"].screenshot(path=str(path), full_page=True)
        except (PlaywrightError, OSError) as error:  # keep the test's own failure as the report
            report.sections.append(("screenshot", f"could not save {path}: {error}"))
        else:
            report.sections.append(("screenshot", str(path)))
    return report


def _require_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    message = f"Chromium is not installed at {CHROMIUM}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}, and CI=true requires the browser tests to run (see .ci/setup)")
    pytest.skip(f"{message}; run .ci/setup (or apt-get install chromium) to run the browser tests")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (per xdist worker)."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@dataclass(frozen=True)
class LiveServer:
    app: Flask
    url: str


class _FailuresOnlyHandler(WSGIRequestHandler):
    """Log only failed requests; a page pulls in dozens of assets that would bury them."""

    def log_request(self, code="-", size="-") -> None:
        if isinstance(code, int) and code >= 400:
            super().log_request(code, size)


@pytest.fixture(scope="session")
def _served(migrated_app) -> Iterator[LiveServer]:
    """The backend's app behind a real threaded HTTP server for the whole session."""
    server = make_server(
        "127.0.0.1", 0, migrated_app, threaded=True, request_handler=_FailuresOnlyHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield LiveServer(app=migrated_app, url=f"http://127.0.0.1:{server.server_port}")
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def live_server(_served, app) -> LiveServer:
    """The app served over HTTP for this test; its tables are emptied afterwards.

    Each request runs in a server thread with an app context of its own, so data a
    test creates must be committed to be seen by the browser (the factories commit).
    """
    limiter.reset()  # every test signs in from 127.0.0.1; rate limits are per test
    return _served


@pytest.fixture
def page(browser, live_server):
    """A page in a fresh browser context (no cookies) pointed at the live server."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    yield page
    # Closed before the tables are emptied, so no request of this test is still running then.
    context.close()


@pytest.fixture
def console_errors(page) -> list[str]:
    """Collect console errors (CSP violations among them) and uncaught exceptions of ``page``."""
    errors: list[str] = []

    def on_console(message) -> None:
        if message.type == "error" and not _is_favicon_miss(message):
            # A failed resource load names no URL in its text; the location does.
            errors.append(f"console: {message.text} (at {message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    return errors


@pytest.fixture
def sign_in_through_form(page) -> Callable[..., None]:
    """Fill in and submit the sign-in form on ``page``, as a person would.

    Opens /auth/sign-in unless the page is already on it (for example after being
    sent there from a protected page, with ``next`` in the URL).
    """

    def sign_in(email: str, password: str = STAFF_PASSWORD) -> None:
        if urlsplit(page.url).path != "/auth/sign-in":
            page.goto("/auth/sign-in")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()

    return sign_in


@pytest.fixture
def signed_in_page(page, make_staff, sign_in_through_form):
    """Create a staff account with the given roles and sign it in on ``page``; return the page.

    ``signed_in_page("viewer")``, or ``signed_in_page("admin", "privacy", email="ada@staff.test")``
    when the test needs to know the address.
    """

    def sign_in_as(role: str, *more_roles: str, email: str | None = None) -> Page:
        staff = make_staff(role, *more_roles, email=email)
        sign_in_through_form(staff.email)
        signed_in_as = page.get_by_test_id("signed-in-as")
        assert signed_in_as.is_visible(), (
            f"{staff.email} did not reach the dashboard; now on {page.url}"
        )
        return page

    return sign_in_as


def _is_favicon_miss(message) -> bool:
    # Chromium asks for /favicon.ico on its own, at a moment of its choosing, and the
    # app serves none yet: counting that 404 would make every console check flaky.
    return urlsplit(message.location.get("url") or "").path == "/favicon.ico"


@contextmanager
def queue_consumer(app: Flask) -> Iterator:
    """Run a queue consumer for ``app`` beside the live server, on a queue no other test left tasks in."""
    huey = app.extensions["huey"]
    huey.flush()  # no task left over by another test may pick up this test's run ids
    consumer = start_in_process_consumer(app, workers=1)
    try:
        yield consumer
    finally:
        consumer.stop(graceful=True)
        huey.flush()
