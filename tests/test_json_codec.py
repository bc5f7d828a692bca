"""JSON responses and stored metadata read the same through orjson as through Python's json module."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from flask import Flask, jsonify, request

from tests.domain.test_recording import won
from webapp.domain.recording import record_event
from webapp.domain.timeline import timeline_page
from webapp.json_codec import OrjsonProvider, quicker_json_text
from webapp.models import ActivityEvent
from webapp.transaction import unit_of_work


@dataclass
class _Point:
    x: int
    label: str


def _app(debug: bool = False) -> Flask:
    app = Flask(__name__)
    app.debug = debug
    app.json = OrjsonProvider(app)
    return app


def _payload() -> dict:
    return {
        "zeta": 1, "alpha": [1.5, None, True], "by_id": {8: "eight", 7: "seven"}, "name": "Zoë ⚔",
        "at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC), "point": _Point(3, "p"),
    }


def test_a_response_holds_what_flasks_own_json_would_write():
    app = _app()
    with app.app_context():
        body = jsonify(_payload()).get_data(as_text=True)
        # What Flask's own provider makes of the same values: times as HTTP dates,
        # dataclasses as objects, keys as text and sorted.
        plain = Flask("plain")
        with plain.app_context():
            expected = plain.json.loads(plain.json.dumps(_payload()))
    assert json.loads(body) == expected
    assert expected["at"] == "Wed, 25 Nov 2026 09:30:00 GMT"
    assert list(json.loads(body)) == sorted(expected)
    assert list(json.loads(body)["by_id"]) == ["7", "8"]
    assert "\n  " not in body.strip()  # compact outside debug mode


def test_debug_mode_keeps_its_indented_layout():
    app = _app(debug=True)
    with app.app_context():
        body = jsonify({"b": 1, "a": {"c": 2}}).get_data(as_text=True)
    assert body == '{\n  "a": {\n    "c": 2\n  },\n  "b": 1\n}\n'


def _echo_client():
    app = _app()

    @app.post("/echo")
    def echo():
        return jsonify(received=request.get_json())

    return app.test_client()


def test_a_request_body_is_read_through_the_provider():
    response = _echo_client().post(
        "/echo", data='{"n": 12345678901, "s": "é"}', content_type="application/json"
    )
    assert response.get_json() == {"received": {"n": 12345678901, "s": "é"}}


def test_bad_json_in_a_request_is_a_400_not_a_crash():
    response = _echo_client().post("/echo", data='{"n": ', content_type="application/json")
    assert response.status_code == 400


def test_stored_metadata_reads_back_as_written(session, make_player):
    alice = make_player("alice")
    metadata = {"round": "Final – ⚔", "side": "b", "opponent_player_ids": [2**40, 7]}
    with unit_of_work(session):
        outcome = record_event(session, won(alice, metadata=metadata))
    session.expire_all()
    stored = session.scalar(sa.select(ActivityEvent.details).where(ActivityEvent.id == outcome.event_id))
    assert stored == metadata
    # What the feed reads goes through the driver-level statements of the timeline.
    page = timeline_page(session, alice.id, limit=5)
    assert page.events[0].details == metadata


# Event metadata written as json.dumps writes it, by an encoder built once.


@pytest.mark.parametrize("document", [
    {},
    {"round": "Final", "opponent_player_ids": [3, 1, 2], "opponent_team_id": None, "side": "b"},
    {"name": "Zoë «ß» \"quoted\" \\ back\nslash \U0001f3c6", "score": -0.5, "huge": 10**30, "ok": False},
    {"z": {"y": [{"x": []}]}, "a": "insertion order, not sorted"},
])
def test_quicker_json_text_writes_what_json_dumps_writes(document):
    assert quicker_json_text(json.dumps)(document) == json.dumps(document)


def test_quicker_json_text_leaves_anything_but_a_mapping_to_the_processor():
    seen = []

    def processor(value):
        seen.append(value)
        return json.dumps(value)

    quicker = quicker_json_text(processor)
    seen.clear()  # the samples it was checked on
    assert quicker([1, "two"]) == '[1, "two"]' and quicker(None) == "null"
    assert seen == [[1, "two"], None]


def test_quicker_json_text_keeps_a_processor_that_writes_otherwise():
    def sorted_keys(value):
        return json.dumps(value, sort_keys=True)

    assert quicker_json_text(sorted_keys) is sorted_keys
