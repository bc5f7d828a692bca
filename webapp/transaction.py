"""The one transaction boundary: commit on success, roll back on any error.

Views, CLI commands and jobs wrap their call into the domain in
``unit_of_work``; domain functions never commit. Side effects that must not
happen for a rolled-back change (alerts, webhooks, notifications) are
registered with ``after_commit`` and run only once the commit succeeded.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from webapp.database import begin_write
from webapp.domain.errors import Conflict, DomainError

log = logging.getLogger(__name__)

_HOOKS_KEY = "activity_ops_after_commit"

# PostgreSQL's serialization_failure and deadlock_detected: the transaction was
# chosen to lose against a concurrent one, and the same work may succeed if run again.
_COLLISION_SQLSTATES = frozenset({"40001", "40P01"})
_RETRY_PAUSE_S = 0.05

T = TypeVar("T")


class DatabaseUnavailable(DomainError):
    """The database could not complete the transaction (locked, gone, timed out)."""


class ConcurrentChange(Conflict):
    """A concurrent transaction collided with this one (deadlock, serialization failure); it was undone."""


def after_commit(session: Session, hook: Callable[[], None]) -> None:
    """Run ``hook`` after the current unit of work commits; drop it on rollback."""
    hooks = session.info.get(_HOOKS_KEY)
    if hooks is None:
        raise RuntimeError("after_commit() called outside a unit_of_work")
    hooks.append(hook)


@contextmanager
def unit_of_work(session: Session) -> Iterator[Session]:
    """Run the enclosed writes as one transaction on ``session``."""
    if _HOOKS_KEY in session.info:
        raise RuntimeError("unit_of_work() does not nest")
    hooks: list[Callable[[], None]] = []
    session.info[_HOOKS_KEY] = hooks
    try:
        try:
            # On SQLite the writer waits for the lock when it begins, and may
            # time out there: that error is mapped like any other.
            begin_write(session)
            yield session
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise Conflict(f"the change clashes with stored data: {exc.orig}") from exc
        except OperationalError as exc:
            session.rollback()
            if getattr(exc.orig, "sqlstate", None) in _COLLISION_SQLSTATES:
                raise ConcurrentChange(f"a concurrent change collided with this one: {exc.orig}") from exc
            raise DatabaseUnavailable(f"the database did not complete the change: {exc.orig}") from exc
        except BaseException:
            session.rollback()
            raise
    finally:
        session.info.pop(_HOOKS_KEY, None)
    for hook in hooks:
        try:
            hook()
        except Exception:  # a failed side effect never undoes a committed change
            log.exception("after-commit hook %r failed", hook)


def run_in_unit_of_work(session: Session, work: Callable[[Session], T], *, attempts: int = 3) -> T:
    """Run ``work(session)`` in a unit of work, and again from the start after a collision.

    Recording sorts the rows of one call, but a unit of work that records
    several results locks them in the order of its calls, so two such units can
    deadlock on PostgreSQL; the database then undoes one of them whole, and only
    running all of ``work`` again can finish it. ``work`` must therefore act
    outside the session only through ``after_commit``.

    :raise ConcurrentChange: if every attempt collided.
    """
    attempt = 1
    while True:
        try:
            with unit_of_work(session):
                return work(session)
        except ConcurrentChange:
            if attempt >= attempts:
                raise
            attempt += 1
            log.info("unit of work collided with a concurrent one; attempt %d of %d", attempt, attempts)
            # A random pause lets the transaction that won finish before the loser comes back.
            time.sleep(random.uniform(0, _RETRY_PAUSE_S * 2**attempt))
