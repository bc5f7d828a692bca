"""Fixtures for the job tests: a real webhook receiver the alert deliveries post to, and a backfill's history."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import T0
from webapp.models import TeamMembership


class WebhookReceiver:
    """A local HTTP server that records every JSON POST and answers with ``status``."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(json.loads(body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(app):
    receiver = WebhookReceiver()
    previous = app.config.get("ALERT_WEBHOOK_URL")
    app.config["ALERT_WEBHOOK_URL"] = receiver.url
    yield receiver
    app.config["ALERT_WEBHOOK_URL"] = previous
    receiver.close()


def wait_until_finished(session, run_id: int, seconds: float = 60):
    """Wait for a run a consumer is working on to end; return it."""
    from webapp.models import JobRun

    deadline = time.monotonic() + seconds
    while not (run := session.get(JobRun, run_id)).is_finished:
        assert time.monotonic() < deadline, f"run {run_id} is still {run.status}"
        session.rollback()
        time.sleep(0.05)
    return run


# A hand-made history with every rule in it.


@dataclass
class History:
    players: dict
    solo: object
    cup: object
    won_match: object
    forfeit: object
    scheduled: object
    team_match: object
    red: object


@pytest.fixture
def history(
    session, make_player, make_team, make_tournament, make_match, make_registration, make_result
) -> History:
    p = {
        name: make_player(name)
        for name in (
            "alice",
            "bob",
            "gina",
            "hank",
            "carol",
            "dave",
            "erin",
            "frank",
            "ivan",
            "judy",
        )
    }
    solo = make_tournament("Solo Open")
    for name, status in (
        ("alice", "checked_in"),
        ("bob", "completed"),
        ("gina", "no_show"),
        ("hank", "withdrawn"),
    ):
        make_registration(solo, p[name], status)
    won_match = make_match(solo, p["alice"], p["bob"], winner="a", round="SF")
    forfeit = make_match(solo, p["alice"], p["bob"], winner="b", state="forfeit", round="F")
    scheduled = make_match(solo, p["alice"], p["bob"], state="scheduled", round="X")
    make_result(solo, p["alice"])

    # Red at the time of the cup: carol and dave. Frank left before it, erin joined after.
    red = make_team("Red", [p["carol"], p["dave"]])
    session.add_all(
        [
            TeamMembership(
                team_id=red.id,
                player_id=p["frank"].id,
                joined_at=T0 - timedelta(days=300),
                left_at=T0 - timedelta(days=30),
            ),
            TeamMembership(
                team_id=red.id, player_id=p["erin"].id, joined_at=T0 + timedelta(days=10)
            ),
        ]
    )
    session.commit()
    blue = make_team("Blue", [p["ivan"], p["judy"]])
    cup = make_tournament("Private Cup", is_private=True, is_team_based=True)
    make_registration(cup, red)
    make_registration(cup, blue)
    team_match = make_match(cup, red, blue, winner="a", round="F", is_final=True)
    make_result(cup, red)
    return History(p, solo, cup, won_match, forfeit, scheduled, team_match, red)
