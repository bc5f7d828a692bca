"""Opaque keyset-pagination cursors shared by timelines and player search.

A cursor is the URL-safe base64 of a small JSON object naming the last row a
page showed (its sort key). Clients pass it back unchanged; they are told
nothing about its shape, so it can change without breaking them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from webapp.domain.errors import Invalid


def encode_cursor(position: Mapping[str, Any]) -> str:
    """Return the opaque cursor for ``position`` (JSON-ready values only)."""
    raw = json.dumps(dict(position), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, fields: Mapping[str, type]) -> dict[str, Any]:
    """Return the position in ``cursor``, checking it holds exactly ``fields`` of those types.

    :raise Invalid: if the cursor was not made by ``encode_cursor`` with these fields.
    """
    problem = "it is not a cursor this API issued; start again from the first page"
    if not isinstance(cursor, str) or not cursor or len(cursor) > 1_000:
        raise Invalid(f"invalid cursor: {problem}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        raise Invalid(f"invalid cursor: {problem}") from None
    if not isinstance(position, dict) or set(position) != set(fields):
        raise Invalid(f"invalid cursor: {problem}")
    for name, kind in fields.items():
        value = position[name]
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise Invalid(f"invalid cursor: {problem}")
        if kind is str and (not isinstance(value, str) or "\x00" in value):
            raise Invalid(f"invalid cursor: {problem}")
        if kind is datetime:
            position[name] = _aware_datetime(value, problem)
    return position


def _aware_datetime(value: Any, problem: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise Invalid(f"invalid cursor: {problem}") from None
    if parsed.tzinfo is None:
        raise Invalid(f"invalid cursor: {problem}")
    return parsed
