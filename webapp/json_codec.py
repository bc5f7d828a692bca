"""JSON in and out of the process through orjson: API responses and metadata read from the database.

A feed page is fifty events, each with nested details: Python's json module
took a tenth of an API request to write the page and as much again to read the
events' metadata. orjson writes and reads the same documents several times
faster. Documents are still written to the database by json.dumps, as every
stored event was, so what is stored does not change with this module.
"""

from __future__ import annotations

from collections.abc import Callable
from json import JSONEncoder
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

#: Reads a JSON document (text or bytes); the engines' ``json_deserializer``.
loads = orjson.loads

# Times and dataclasses go to Flask's own conversion (times as HTTP dates), as
# they did before; keys are sorted as Flask sorts them; non-text keys become text.
_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_SORT_KEYS
    | orjson.OPT_NON_STR_KEYS
)
_COMPACT = (",", ":")


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider, writing and reading through orjson.

    orjson writes compact documents, as Flask's responses are outside debug
    mode; calls that ask for another layout (``indent``: the debug server's
    pretty printing) or other options keep Python's json module.
    """

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs.get("separators") == _COMPACT:
            del kwargs["separators"]
        if kwargs:
            return super().dumps(obj, **kwargs)
        return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if kwargs:
            return super().loads(s, **kwargs)
        return orjson.loads(s)


def quicker_json_text(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Return an equivalent of a JSON column's bind processor for mappings stored as text, if one holds.

    The processor calls ``json.dumps``, which builds its C encoder afresh on
    every call: half of the time it takes to write an event's metadata. The
    same encoder, with ``json.dumps``'s own settings, built once writes the
    same text; it is checked here on awkward documents before it is used.
    Values other than mappings go to the processor.
    """
    if c_make_encoder is None:  # an interpreter without the json module's C speedups
        return process
    encoder = c_make_encoder(
        None, JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ", False, False, True
    )

    def quicker(value: Any) -> Any:
        if value.__class__ is not dict:
            return process(value)
        return "".join(encoder(value, 0))

    samples = (
        {},
        {"round": "R1", "side": "a", "opponent_player_ids": [12, 345], "opponent_team_id": None},
        {"note": "Zoë «quoted» \"and\" \\ \n\t\u2028", "ratio": 0.1, "big": 2**70, "flag": True, "nan": float("nan")},
        {"nested": {"list": [[], {}, [1, {"a": False}]]}, "1": "key order kept", "0": 0},
    )
    if all(quicker(sample) == process(sample) for sample in samples):
        return quicker
    return process
