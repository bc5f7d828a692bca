"""Fixtures for the job tests: a real webhook receiver the alert deliveries post to."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


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
