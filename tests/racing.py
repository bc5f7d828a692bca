"""Running the same action from several staff members at once, each in a thread and session of its own."""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from flask import Flask
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

Outcome = tuple[str, Any]


def race(
    engine: Engine,
    attempts: Sequence[Any],
    act: Callable[[Session, Any], Outcome],
    *,
    timeout: float,
    app: Flask | None = None,
) -> list[Outcome]:
    """Run ``act(session, attempt)`` for every attempt at once; return the outcomes, sorted.

    Each thread connects first and all are released together, so the actions
    really overlap. Anything ``act`` raises becomes an ``("error", traceback)``
    outcome for the test to fail on.
    """
    start = threading.Barrier(len(attempts))
    outcomes: queue.Queue = queue.Queue()

    def contender(attempt: Any) -> None:
        with app.app_context() if app is not None else nullcontext(), Session(engine) as session:
            try:
                session.execute(select(1))
                session.rollback()
                start.wait(timeout)
                outcomes.put(act(session, attempt))
            except Exception:  # noqa: BLE001 - reported to the test, which fails on it
                outcomes.put(("error", traceback.format_exc()))

    threads = [threading.Thread(target=contender, args=(a,)) for a in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return sorted(outcomes.get_nowait() for _ in threads)
