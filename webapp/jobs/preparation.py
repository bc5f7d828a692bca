"""A process that prepares a backfill's batches while the worker records them.

Preparing a batch (reading the platform's records, deriving their events,
checking each fact on its own and converting it for the driver) writes
nothing, and it costs about as much CPU as recording the batch, most of it
in Python, so a thread would only take turns with the recording at the
interpreter lock. A process of its own prepares the next batch on the other
core instead, and sends it back packed (``backfill.PackedBatch``).

How the process starts depends on the worker. A worker running no other
thread forks it: nothing can be holding a lock the child would inherit, and
the child has the product imported already. A worker with threads (the web
server's, other jobs', the latency rollups') might be in the middle of a
database call in one of them, so it starts a new interpreter instead
(``python -m webapp.jobs.preparation``), which costs the product's imports.
Either way, until the process says it is ready, the worker prepares batches
itself; the child opens its own database connections and never touches the
worker's.

Whatever goes wrong in the process (an error, a crash, a kill) only means
the worker prepares the batch itself, where the error, if there is one, is
raised and handled as any batch's. When the worker dies, the process finds
its pipe closed and ends.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import webapp
from webapp.domain import backfill

log = logging.getLogger(__name__)

#: What the process sends for a batch it could not pack: the worker prepares it itself.
NOT_PACKED = "not packed"
#: Seconds to wait for the process to stop before it is killed.
STOP_TIMEOUT_SECONDS = 5.0
#: Ways to start the process (see the module's doc): by default, as the worker allows.
START_METHODS = ("auto", "fork", "interpreter")
#: Seconds to wait for a batch (one takes about a second) before giving the process up as hung.
ANSWER_TIMEOUT_SECONDS = 120.0


class PreparationLost(RuntimeError):
    """The preparation process stopped answering: it died, or failed."""


@dataclass(frozen=True)
class _Request:
    number: int
    position: backfill.Position


class PreparationProcess:
    """A process that prepares the batches asked of it, one at a time, and packs them."""

    def __init__(
        self, engine: Engine, engine_options: dict[str, Any], run_id: int, scope: backfill.BackfillScope,
        batch_size: int, *, start: str = "auto",
    ):
        """Start the process, ``start`` saying how (one of START_METHODS)."""
        if start not in START_METHODS:
            raise ValueError(f"unknown way to start the preparation process {start!r}; known: {START_METHODS}")
        self.forked = start == "fork" or (start == "auto" and threading.active_count() == 1)
        self._connection, child_end = Pipe()
        try:
            if self.forked:
                self._process: _Child = _Forked(child_end, self._connection)
            else:
                self._process = _Started(child_end)
        finally:
            child_end.close()
        try:
            self._connection.send((
                engine.url.render_as_string(hide_password=False), engine_options, run_id, scope.as_params(),
                batch_size,
            ))
        except BaseException:
            self.close()  # a process that never got its work: not left behind
            raise
        log.info(
            "backfill run %s: batches prepared by process %s (%s)", run_id, self.pid,
            "forked" if self.forked else "a new interpreter",
        )
        self._ready = False
        self._asked = 0

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running()

    @property
    def exit_code(self) -> int | None:
        return self._process.exit_code()

    @property
    def ready(self) -> bool:
        """Whether the process has started and can be asked for a batch (never waits)."""
        return self.wait_until_ready(0)

    def wait_until_ready(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the process to be ready; say whether it is."""
        if not self._ready and self._process.running():
            try:
                if self._connection.poll(seconds):
                    self._ready = self._connection.recv() == "ready"
            except (EOFError, OSError):
                return False
        return self._ready and self._process.running()

    def ask(self, position: backfill.Position) -> int:
        """Ask for the batch after ``position``; return the request's number, for ``receive``."""
        self._asked += 1
        try:
            self._connection.send(_Request(self._asked, position))
        except (OSError, ValueError) as error:
            raise PreparationLost(f"could not ask the preparation process for a batch: {error}") from error
        return self._asked

    def receive(self, number: int) -> backfill.PackedBatch | str | None:
        """Wait for the answer to request ``number``: a packed batch, ``NOT_PACKED``, or ``None`` at the end.

        Answers to earlier requests, no longer wanted, are passed over. A
        process that sends nothing for ANSWER_TIMEOUT_SECONDS while still
        running (stopped, or stuck on a lock) is given up as lost.
        """
        while True:
            try:
                if not self._connection.poll(ANSWER_TIMEOUT_SECONDS):
                    raise PreparationLost(
                        f"the preparation process sent nothing for {ANSWER_TIMEOUT_SECONDS:g} s"
                    )
                answered, kind, payload = self._connection.recv()
            except (EOFError, OSError) as error:
                raise PreparationLost(
                    f"the preparation process stopped (exit code {self.exit_code})"
                ) from error
            if kind == "error":
                raise PreparationLost(f"the preparation process failed: {payload}")
            if answered == number:
                return payload

    def close(self) -> None:
        """Tell the process to stop and wait for it; kill it if it does not.

        This end is closed before the wait: a process still sending a batch
        nobody will read would otherwise wait on a full pipe until killed.
        """
        try:
            self._connection.send(None)
        except (OSError, ValueError):
            pass  # already gone
        self._connection.close()
        self._process.stop(STOP_TIMEOUT_SECONDS)


class _Child(Protocol):
    pid: int

    def running(self) -> bool: ...
    def exit_code(self) -> int | None: ...
    def stop(self, timeout: float) -> None: ...


class _Forked:
    """The process forked from this one."""

    def __init__(self, child_end: Connection, parent_end: Connection):
        self._process = multiprocessing.get_context("fork").Process(
            target=_serve_forked, args=(child_end, parent_end), name="backfill-preparation", daemon=True
        )
        self._process.start()
        self.pid = self._process.pid

    def running(self) -> bool:
        return self._process.is_alive()

    def exit_code(self) -> int | None:
        return self._process.exitcode

    def stop(self, timeout: float) -> None:
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


class _Started:
    """The process started as a new interpreter."""

    def __init__(self, child_end: Connection):
        source_root = str(Path(webapp.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, (source_root, os.environ.get("PYTHONPATH")))
        )}
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(child_end.fileno())],
            pass_fds=(child_end.fileno(),), env=env, stdin=subprocess.DEVNULL,
        )
        self.pid = self._process.pid

    def running(self) -> bool:
        return self._process.poll() is None

    def exit_code(self) -> int | None:
        return self._process.poll()

    def stop(self, timeout: float) -> None:
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _serve_forked(connection: Connection, parent_end: Connection) -> None:
    # The worker's end, inherited: closed, or the pipe would never report the worker gone.
    parent_end.close()
    # The worker's engine and pooled connections are inherited too, and left alone: disposed
    # of, they would be garbage collected, and a PostgreSQL connection closed here ends the
    # worker's session with it. The process opens its own, and multiprocessing ends it with
    # os._exit, which runs no finalizer.
    serve(connection)


def serve(connection: Connection) -> None:
    """The process's loop: prepare and pack each batch asked for until told to stop or the worker is gone."""
    import webapp.database  # noqa: F401  (the SQLite pragmas and BEGIN handling)

    try:
        url, engine_options, run_id, scope_params, batch_size = connection.recv()
    except (EOFError, OSError):
        return
    engine = create_engine(url, **engine_options)
    scope = backfill.BackfillScope.from_params(scope_params)
    session = Session(bind=engine)
    try:
        connection.send("ready")
        while True:
            request = connection.recv()
            if request is None:
                break
            try:
                prepared = backfill.prepare_batch(session, run_id, scope, request.position, batch_size)
                session.rollback()  # no snapshot held between batches
                packed = None if prepared is None else (
                    backfill.pack_batch(prepared, request.position, engine.dialect) or NOT_PACKED
                )
            except Exception:  # noqa: BLE001  (any failure is the worker's to meet: it prepares the batch itself)
                connection.send((request.number, "error", traceback.format_exc(limit=8)))
                break
            connection.send((request.number, "batch", packed))
    except (EOFError, OSError):
        pass  # the worker is gone: nothing to prepare for
    finally:
        session.close()
        engine.dispose()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
