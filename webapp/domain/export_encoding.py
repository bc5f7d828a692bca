"""Encoding exported events straight to their JSON text and CSV row.

An export writes every event a player has, so the cost per event decides how
long it takes: building the presented dict of ``ExportPresenter.present`` and
encoding it again with ``json`` was most of the export's CPU time. The
``EventEncoder`` here writes the same bytes without that intermediate: what
belongs to a tournament, a team or another player (its JSON object, its CSV
cells, its name for the summary) is encoded once per export and then pasted
into each event's line, and only the event's own fields are encoded per event.

``present`` stays the definition of what an exported event says; a test holds
this encoding equal to ``present`` followed by ``json`` and the CSV row, for
every kind of event, hot or archived.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from webapp.domain.privacy import (
    DELETED_PLAYER,
    DELETED_TEAM,
    SHOWN_DETAILS,
    UNKNOWN_TOURNAMENT,
    Names,
    summarize,
)

# Names are shared between the events of an export, never nested in themselves:
# there is no cycle to check for.
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
# The C scanner alone: ``json.loads`` spends as long again matching whitespace around it.
_scan = json.scanner.make_scanner(json.JSONDecoder())

# A spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_BOOL = {True: "true", False: "false", None: None}
_JSON_BOOL = {True: "true", False: "false"}


def decode_json(text: str | None) -> Any:
    """Return the value of a stored JSON document (a column's text)."""
    if text is None:
        return None
    return _scan(text, 0)[0]


def csv_text(value: str | None) -> str | None:
    """Text a person or a platform record chose (names, rounds): never a spreadsheet formula."""
    if value and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _json_value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    if kind is bool:
        return _JSON_BOOL[value]
    if kind is int:
        return int.__repr__(value)
    return dumps(value)


def _id(value: int | None) -> str:
    return "null" if value is None else int.__repr__(value)


class EventEncoder:
    """Encode events of one export to ``(json_text, csv_row)``, as ``present`` would show them.

    ``names`` is read as it is when an id is first met, so the caller looks
    names up (``ExportPresenter.learn``) before encoding the events that
    refer to them, as for ``present``.
    """

    def __init__(self, names: Names, reversed_by: Mapping[int, int]) -> None:
        self.names = names
        self.reversed_by = reversed_by
        # id -> (json object, csv name, {"name": ...} for the summary, private now)
        self._tournaments: dict[int, tuple[str, str | None, dict[str, Any], bool]] = {}
        # id -> (json object, csv name, {"name": ...} for the summary)
        self._teams: dict[int, tuple[str, str | None, dict[str, Any]]] = {}
        # id -> (json object, label)
        self._players: dict[int, tuple[str, str]] = {}
        # Event types, source models and origins: a handful of values, encoded once.
        self._strings: dict[str, str] = {}

    def _string(self, value: str) -> str:
        encoded = self._strings.get(value)
        if encoded is None:
            encoded = self._strings[value] = encode_basestring(value)
        return encoded

    def _tournament(self, tournament_id: int):
        found = self._tournaments.get(tournament_id)
        if found is None:
            tournament = self.names.tournaments.get(tournament_id)
            name = tournament.name if tournament else UNKNOWN_TOURNAMENT
            found = self._tournaments[tournament_id] = (
                f'{{"id":{_id(tournament_id)},"name":{encode_basestring(name)}}}',
                csv_text(name),
                {"name": name},
                tournament is not None and tournament.is_private,
            )
        return found

    def _team(self, team_id: int):
        found = self._teams.get(team_id)
        if found is None:
            name = self.names.teams.get(team_id, DELETED_TEAM)
            found = self._teams[team_id] = (
                f'{{"id":{_id(team_id)},"name":{encode_basestring(name)}}}',
                csv_text(name),
                {"name": name},
            )
        return found

    def _player(self, player_id: int):
        found = self._players.get(player_id)
        if found is None:
            player = self.names.players.get(player_id)
            public_id = player.public_id if player else None
            label = public_id or DELETED_PLAYER
            found = self._players[player_id] = (
                f'{{"public_id":{_json_value(public_id)},"label":{encode_basestring(label)}}}',
                label,
            )
        return found

    def encode(self, event, archived: bool) -> tuple[str, list[Any]]:
        """Return the event's JSON object as text and its CSV row."""
        # Unpacked by position: a hot row and an ArchivedEvent have the same columns.
        (id_, _player_id, event_type, occurred_at, recorded_at, source_model, source_id, origin,
         origin_id, team_id, tournament_id, is_private, details, reverses_event_id) = event
        details = details or {}
        get = details.get
        occurred = occurred_at.isoformat()
        recorded = recorded_at.isoformat() if recorded_at else None
        recorded_json = "null" if recorded is None else f'"{recorded}"'

        if tournament_id is None:
            tournament_json, tournament_name, tournament, private_now = "null", None, None, False
        else:
            tournament_json, tournament_name, tournament, private_now = self._tournament(
                tournament_id)
        private = bool(is_private) or private_now
        if team_id is None:
            team_json, team_name, team = "null", None, None
        else:
            team_json, team_name, team = self._team(team_id)
        opponent_team_id = get("opponent_team_id")
        if opponent_team_id is None:
            opponent_team_json, opponent_team_name, opponent_team = "null", None, None
        else:
            opponent_team_json, opponent_team_name, opponent_team = self._team(opponent_team_id)
        players, player = self._players, self._player
        opponents = [players.get(p) or player(p) for p in get("opponent_player_ids", ())]
        labels = [label for _json, label in opponents]

        shown = [
            f'"{key}":{_json_value(details[key])}' for key in SHOWN_DETAILS if key in details
        ]
        reversed_by = self.reversed_by.get(id_)
        summary = summarize({
            "type": event_type, "details": details, "tournament": tournament, "team": team,
            "opponent_team": opponent_team, "opponents": [{"label": label} for label in labels],
            "reverses_event_id": reverses_event_id,
        })
        strings, string = self._strings, self._string
        text = (
            f'{{"id":{_id(id_)},"type":{strings.get(event_type) or string(event_type)},'
            f'"occurred_at":"{occurred}","recorded_at":{recorded_json},"source":{{"model":'
            f'{strings.get(source_model) or string(source_model)},"id":{_id(source_id)}}},'
            f'"origin":{{"kind":{strings.get(origin) or string(origin)},"id":{_id(origin_id)}}},'
            f'"private":{_JSON_BOOL[private]},"tournament":{tournament_json},"team":{team_json},'
            f'"opponents":[{",".join([j for j, _label in opponents])}],'
            f'"opponent_team":{opponent_team_json},"details":{{{",".join(shown)}}},'
            f'"reverses_event_id":{_id(reverses_event_id)},'
            f'"reversed_by_event_id":{_id(reversed_by)},'
            f'"summary":{encode_basestring(summary)},"archived":{_JSON_BOOL[archived]}}}'
        )
        row = [
            id_, event_type, occurred, recorded, CSV_BOOL[archived], CSV_BOOL[private],
            source_model, source_id, origin, origin_id, tournament_id, tournament_name, team_id,
            team_name, " ".join(labels), opponent_team_id, opponent_team_name,
            csv_text(get("round")), csv_text(get("side")), get("placement"),
            CSV_BOOL[get("is_team_win")], reverses_event_id, reversed_by, csv_text(summary),
        ]
        return text, row
