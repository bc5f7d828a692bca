"""The export's event encoding writes exactly what the presented view of each event says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from webapp.domain import gdpr_export
from webapp.domain.export_encoding import EventEncoder, decode_json
from webapp.domain.privacy import Names, PlayerName, TournamentName

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

NAMES = Names(
    players={1: PlayerName("DC-25-000001", "alice", "Alice"),
             2: PlayerName("DC-25-000002", "bob", "Bob Secret")},
    teams={10: 'Pair "the best"', 11: "=HYPERLINK(\"x\")", 12: "Équipe ✓\n2"},
    tournaments={20: TournamentName("Cup, Spring", False),
                 21: TournamentName("Hidden Invitational", True),
                 22: TournamentName("+Plus Cup \u2028 \x01", False)},
)


def event(id_, event_type="match_won", *, details=None, **fields):
    values = {
        "id": id_, "player_id": 1, "event_type": event_type,
        "occurred_at": AT + timedelta(seconds=id_),
        "recorded_at": AT + timedelta(seconds=id_, microseconds=250), "source_model": "match",
        "source_id": 100 + id_, "origin": "live", "origin_id": None, "team_id": None,
        "tournament_id": None, "is_private": False, "details": details, "reverses_event_id": None,
        **fields,
    }
    return gdpr_export.ArchivedEvent(**values)


EVENTS = [
    event(1, details={"round": "R1", "side": "a", "opponent_player_ids": [2]}, tournament_id=20),
    event(2, "match_lost", details={"round": "=1+1", "side": "b",
                                    "opponent_player_ids": [2, 3, 1]}, tournament_id=21),
    # Recorded as private in a tournament that is public now; one in a tournament gone since.
    event(3, "match_forfeit_won", details={"opponent_team_id": 11}, tournament_id=22,
          is_private=True, team_id=10),
    event(4, "match_forfeit_lost", details={"opponent_team_id": 99}, tournament_id=98),
    event(5, "tournament_won", details={"is_team_win": True, "placement": 1}, team_id=12,
          tournament_id=21),
    event(6, "tournament_completed", details={"placement": 2.5, "round": "Final — ☂"},
          team_id=97),
    event(7, "tournament_registered", details=None, recorded_at=None, origin="backfill",
          origin_id=4),
    event(8, "match_won_reversed", details={"match_id": 101, "note": {"nested": [1, None]}},
          source_model="dispute", origin="dispute", origin_id=2, reverses_event_id=1,
          tournament_id=20),
    event(9, "tournament_checked_in", details={"is_team_win": False, "side": "-", "extra": "x"},
          source_id=None, occurred_at=AT.replace(microsecond=1)),
]


@pytest.mark.parametrize("archived", [False, True])
def test_every_kind_of_event_encodes_to_its_presented_view(archived):
    presenter = gdpr_export.ExportPresenter(names=NAMES, reversed_by={1: 8, 4: 77})
    encoder = EventEncoder(presenter.names, presenter.reversed_by)

    for source in EVENTS:
        text, row = encoder.encode(source, archived)
        presented = presenter.present(source)
        presented["archived"] = archived
        assert text == gdpr_export._dumps(presented)
        assert json.loads(text) == presented
        assert row == gdpr_export._csv_row(presented)


def test_names_met_again_are_encoded_the_same():
    encoder = EventEncoder(NAMES, {})
    first = [encoder.encode(e, False) for e in EVENTS]
    assert [encoder.encode(e, False) for e in EVENTS] == first


def test_stored_json_text_decodes_as_json_does():
    for text in ('{"round": "R1", "opponent_player_ids": [1, 2]}', '{"a":1.5,"b":[true,null]}',
                 "null", '"text"', '{"nested": {"x": "\\u00e9\\n"}}'):
        assert decode_json(text) == json.loads(text)
    assert decode_json(None) is None


def test_stored_times_read_back_in_utc_with_or_without_an_offset_in_the_text():
    stored = gdpr_export._StoredUTC()
    read = [stored.process_result_value(text, None) for text in (
        "2024-01-01 00:01:00.000250", "2024-01-01 00:01:00", "2024-01-01T02:01:00+02:00")]
    assert [t.isoformat() for t in read] == [
        "2024-01-01T00:01:00.000250+00:00", "2024-01-01T00:01:00+00:00",
        "2024-01-01T00:01:00+00:00"]
    assert all(t.tzinfo is UTC for t in read)
