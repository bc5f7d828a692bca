"""The backfill and its rollback as job procedures: batches, each one unit of work.

A backfill batch commits its events, their stat deltas, its ledger line and the
run's checkpoint together, then pauses briefly so live traffic keeps its share
of the database. A batch that fails is rolled back whole, noted in the ledger
as a failed attempt, and the run fails with the error; resuming it continues
from the last committed checkpoint.
"""

from __future__ import annotations

import logging
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from flask import current_app
from sqlalchemy.orm import Session

from webapp.domain import backfill
from webapp.domain.audit import Actor
from webapp.domain.jobs import RunTakenOver, get_run
from webapp.jobs.preparation import START_METHODS, PreparationLost, PreparationProcess
from webapp.transaction import run_in_unit_of_work, unit_of_work

log = logging.getLogger(__name__)

#: How long a forked preparation process is waited for before the first batch.
FORKED_READY_SECONDS = 5.0


def backfill_procedure(session: Session, context) -> dict[str, Any]:
    """Record the history in the run's scope in batches from its checkpoint; end with parity."""
    run_id = context.run_id
    params = context.params
    scope = backfill.BackfillScope.from_params(params.get("scope"))
    batch_size = int(params.get("batch_size", backfill.DEFAULT_BATCH_SIZE))
    pause = float(params.get("pause_seconds", backfill.DEFAULT_PAUSE_SECONDS))
    position = backfill.Position.from_checkpoint(context.checkpoint)
    done = backfill.ledger_totals(backfill.ledger(session, run_id)).rows_read
    batch_no = backfill.next_batch_no(session, run_id)
    total = backfill.count_source_rows(session, scope)
    session.rollback()

    in_a_process = _prepares_in_a_process(session, total - done)
    prepared_apart = 0  # batches recorded as the preparation process packed them, this attempt
    with _BatchReader(session, run_id, scope, batch_size, in_a_process=in_a_process) as reader:
        reader.read_after(position)
        while True:
            context.raise_if_cancelled()
            try:
                prepared = reader.next()
                if prepared is None:
                    break
                reader.read_after(prepared.after)
                # A batch that deadlocks with live traffic is undone whole and run again.
                line = run_in_unit_of_work(
                    session, partial(_record_batch, context, prepared, batch_no, done, total)
                )
                if line is not None:
                    prepared_apart += isinstance(prepared, backfill.PackedBatch)
                else:
                    # A packed batch that needs its facts: prepared again here, outside the
                    # transaction that records it, as every batch is.
                    again = reader.prepare_here(prepared.start)
                    if again is None:  # its records are gone since: none is left
                        break
                    line = run_in_unit_of_work(
                        session, partial(_record_batch, context, again, batch_no, done, total)
                    )
                    if line.position != prepared.after:
                        # It ended elsewhere: the batch asked for next is not the next one.
                        reader.read_after(line.position)
            except RunTakenOver:
                raise  # the run is no longer this worker's to write to, not even its ledger
            except Exception as exc:
                _note_failed_attempt(session, run_id, batch_no, exc)
                raise
            batch_no, done = batch_no + 1, done + line.counts.rows_read
            if pause:
                time.sleep(pause)

    # Of this attempt's batches: an earlier attempt's count ended with it.
    summary = {**backfill.run_summary(session, run_id), "batches_prepared_apart": prepared_apart}
    session.rollback()
    if not summary["parity_ok"]:
        log.warning(
            "backfill run %s: parity check flagged %s", run_id, "; ".join(summary["parity_flags"])
        )
    return summary


class _BatchReader:
    """Prepares batches on a connection of its own, ahead of the batch being recorded where it can.

    Preparing a batch (reading the platform's records, deriving their events
    and checking each fact on its own) writes nothing. A long backfill has
    its batches prepared by a process of its own (``webapp.jobs.preparation``)
    while this one records the batch before: both are mostly Python, and a
    second thread would take turns with the writer at the interpreter lock.
    A short one, where starting the process costs more than it saves, has
    them prepared on a thread on PostgreSQL (while the writer waits on the
    server) and, on SQLite, when asked for (a thread there measured slower).
    Either way, what a dispute resolution changed since is taken into account
    when the batch is recorded.
    """

    def __init__(
        self, session: Session, run_id: int, scope: backfill.BackfillScope, batch_size: int, *,
        in_a_process: bool = False,
    ):
        bind = session.get_bind()
        self._run_id = run_id
        self._session = Session(bind=bind)
        self._prepare = partial(self._read, run_id, scope, batch_size)
        self._process = self._start_process(bind, run_id, scope, batch_size) if in_a_process else None
        if self._process is not None and self._process.forked:
            # A forked process is ready in moments, sooner than a batch prepared here.
            self._process.wait_until_ready(FORKED_READY_SECONDS)
        self._reads_ahead_on_a_thread = bind.dialect.name != "sqlite"
        self._executor = self._reader_thread() if self._process is None else None
        self._pending: Future | tuple[backfill.Position, int] | backfill.Position | None = None

    def __enter__(self) -> _BatchReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            # Waits for a batch still being read; reading writes nothing, so nothing is lost.
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._process is not None:
            self._process.close()
        self._session.close()

    @staticmethod
    def _start_process(
        bind, run_id: int, scope: backfill.BackfillScope, batch_size: int
    ) -> PreparationProcess | None:
        start = current_app.config.get("BACKFILL_PREPARATION_START", "auto")
        if start not in START_METHODS:
            raise ValueError(f"BACKFILL_PREPARATION_START is {start!r}; it must be one of {START_METHODS}")
        try:
            return PreparationProcess(
                bind, current_app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}, run_id, scope, batch_size,
                start=start,
            )
        except Exception as error:  # noqa: BLE001  (no process to be had: the worker prepares every batch)
            log.warning("backfill run %s: could not start a preparation process (%s)", run_id, error)
            return None

    def read_after(self, position: backfill.Position) -> None:
        """Start preparing the batch after ``position`` (or, where it is prepared when asked for, note it)."""
        if self._process is not None and not self._process.running:
            self._without_process(PreparationLost(
                f"the preparation process stopped (exit code {self._process.exit_code})"
            ))
        if self._process is not None and self._process.ready:
            try:
                self._pending = (position, self._process.ask(position))
                return
            except PreparationLost as error:
                self._without_process(error)
        self._pending = self._executor.submit(self._prepare, position) if self._executor else position

    def next(self) -> backfill.PreparedBatch | backfill.PackedBatch | None:
        """The batch asked for by the last ``read_after``; ``None`` when no record is left."""
        pending, self._pending = self._pending, None
        if isinstance(pending, Future):
            return pending.result()
        if isinstance(pending, tuple):
            position, request = pending
            try:
                packed = self._process.receive(request)
            except PreparationLost as error:
                self._without_process(error)
                return self._prepare(position)
            if isinstance(packed, str):  # it could not pack this one
                return self._prepare(position)
            return packed
        return self._prepare(pending)

    def prepare_here(self, position: backfill.Position) -> backfill.PreparedBatch | None:
        """Prepare the batch after ``position`` now, on this reader's connection."""
        if self._executor is not None:
            # The reader thread may be preparing the next batch on the same connection: after it.
            return self._executor.submit(self._prepare, position).result()
        return self._prepare(position)

    def _reader_thread(self) -> ThreadPoolExecutor | None:
        if not self._reads_ahead_on_a_thread:
            return None
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"backfill-{self._run_id}-reader")

    def _without_process(self, error: PreparationLost) -> None:
        log.warning("backfill run %s: %s; preparing the remaining batches in the worker", self._run_id, error)
        process, self._process = self._process, None
        process.close()
        self._executor = self._reader_thread()  # as for a short run

    def _read(
        self, run_id: int, scope: backfill.BackfillScope, batch_size: int, position: backfill.Position
    ) -> backfill.PreparedBatch | None:
        try:
            return backfill.prepare_batch(self._session, run_id, scope, position, batch_size)
        finally:
            self._session.rollback()  # no snapshot held between batches


def _prepares_in_a_process(session: Session, records_left: int) -> bool:
    """Whether a process of its own should prepare the batches: a long backfill, on a database it can open."""
    threshold = current_app.config.get("BACKFILL_PREPARATION_PROCESS_FROM")
    url = session.get_bind().url
    in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
    return threshold is not None and records_left >= threshold and not in_memory


def _record_batch(
    context,
    prepared: backfill.PreparedBatch | backfill.PackedBatch,
    batch_no: int,
    done: int,
    total: int,
    session: Session,
) -> backfill.BatchLine | None:
    """Record a batch and its progress; ``None``, with nothing written, for a packed one that needs its facts."""
    if isinstance(prepared, backfill.PackedBatch):
        line = backfill.record_packed_batch(session, context.run_id, batch_no, prepared)
        if line is None:
            return None
    else:
        line = backfill.record_batch(session, context.run_id, batch_no, prepared)
    done += line.counts.rows_read
    # The source may have grown since the count: progress never passes 100 %.
    context.progress(done, total=max(total, done), checkpoint=line.position.as_checkpoint())
    return line


def _note_failed_attempt(session: Session, run_id: int, batch_no: int, exc: Exception) -> None:
    """Put the failed batch in the ledger; if even that fails, the run's error still tells."""
    error = "".join(traceback.format_exception_only(exc)).strip()
    try:
        session.rollback()
        with unit_of_work(session):
            backfill.record_failed_attempt(session, run_id, batch_no, error)
    except Exception:
        log.exception(
            "backfill run %s: could not note failed batch %s in the ledger", run_id, batch_no
        )


def rollback_procedure(session: Session, context) -> dict[str, Any]:
    """Delete a backfill run's events in batches, each taking their stats out; audit the end."""
    params = context.params
    run_id = int(params["run_id"])
    batch_size = int(params.get("batch_size", backfill.DEFAULT_BATCH_SIZE))
    checkpoint = context.checkpoint or {}
    after, deleted = int(checkpoint.get("after_event_id", 0)), int(checkpoint.get("deleted", 0))
    # Checked again: a dispute may have reversed one of the events since the rollback was queued.
    plan = backfill.plan_rollback(session, run_id, rollback_run_id=context.run_id)
    ranges = backfill.event_ranges(session, run_id)
    total = deleted + plan.events
    actor = Actor(staff_id=get_run(session, context.run_id).requested_by_id)
    session.rollback()

    while True:
        context.raise_if_cancelled()
        chunk = run_in_unit_of_work(
            session,
            partial(_delete_chunk, context, run_id, ranges, after, batch_size, deleted, total),
        )
        if chunk is None:
            break
        after, deleted = chunk.last_event_id, deleted + chunk.deleted

    with unit_of_work(session):
        backfill.record_rollback(session, actor, run_id, context.run_id, deleted)
    return {
        "backfill_run_id": run_id,
        "events_deleted": deleted,
        "events_by_type": plan.events_by_type,
    }


def _delete_chunk(
    context,
    run_id: int,
    ranges: list[tuple[int, int]],
    after: int,
    batch_size: int,
    deleted: int,
    total: int,
    session: Session,
) -> backfill.RolledBackChunk | None:
    chunk = backfill.rollback_chunk(session, run_id, ranges, after, batch_size)
    if chunk is not None:
        deleted += chunk.deleted
        context.progress(
            deleted,
            total=max(total, deleted),
            checkpoint={"after_event_id": chunk.last_event_id, "deleted": deleted},
        )
    return chunk
