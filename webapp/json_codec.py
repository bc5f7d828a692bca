"""JSON in and out of the process through orjson: API responses and metadata read from the database.

A feed page is fifty events, each with nested details: Python's json module
took a tenth of an API request to write the page and as much again to read the
events' metadata. orjson writes and reads the same documents several times
faster. Documents are still written to the database by json.dumps, as every
stored event was, so what is stored does not change with this module.
"""

from __future__ import annotations

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
