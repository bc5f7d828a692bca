"""A worker killed with SIGKILL mid-backfill: the data stays consistent and the run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import func, select

from tests.jobs.test_backfill import (
    QUIET,
    assert_every_batch_whole,
    assert_stats_exact,
    event_count,
    ledger,
    parity,
    resume,
    stored_stats,
)
from webapp.config import PROJECT_ROOT
from webapp.domain import backfill, jobs
from webapp.domain.audit import SYSTEM
from webapp.domain.backfill import BackfillScope
from webapp.domain.demo import generate_demo_data
from webapp.jobs.queue import enqueue_run
from webapp.models import ActivityEvent, BackfillBatch, JobRun
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work

BATCH_SIZE = 10
# Long enough that the run takes several seconds, so the kill lands in the middle of it.
PAUSE_SECONDS = 0.1
BATCHES_BEFORE_KILL = 5


def _facts(session) -> set[tuple]:
    columns = (
        "player_id",
        "event_type",
        "source_model",
        "source_id",
        "occurred_at",
        "team_id",
        "tournament_id",
        "is_private",
        "details",
    )
    found = {
        tuple(repr(getattr(e, c)) for c in columns) for e in session.scalars(select(ActivityEvent))
    }
    session.rollback()
    return found


def _committed_batches(session, run_id) -> int:
    n = session.scalar(
        select(func.count()).select_from(BackfillBatch).where(BackfillBatch.run_id == run_id)
    )
    session.rollback()
    return n


KILL_INSIDE_BATCH = """
import os, signal, sys

from webapp import create_app
from webapp.extensions import db
from webapp.jobs.runner import execute_run

run_id, kill_at = int(sys.argv[1]), int(sys.argv[2])


def die_inside_the_batch(done, _total):
    # Progress is recorded inside the batch's transaction, after its events and
    # stat deltas were written and before the commit.
    if done >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


app = create_app()
with app.app_context():
    execute_run(db.session(), run_id, listeners=[die_inside_the_batch])
"""


def _start_worker(app, log_path, **env: str) -> subprocess.Popen:
    """The real consumer (`flask jobs worker`, one worker thread) on the test's database and queue."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "webapp", "jobs", "worker", "--workers", "1"],
            cwd=PROJECT_ROOT,
            env={**worker_env(app), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def worker_env(app) -> dict[str, str]:
    """The environment a process of the product needs to use the test's database and queue."""
    return {
        **os.environ,
        "ACTIVITY_OPS_ENV": "test",
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "QUEUE_URL": app.config["QUEUE_URL"],
        "QUEUE_NAME": app.config["QUEUE_NAME"],
    }


def _history_without_events(session) -> tuple[set[tuple], dict, int]:
    """Demo history recorded live, then its events wiped: what a backfill must bring back."""
    with unit_of_work(session):
        generate_demo_data(session, scale=0.02, seed=5)
    live_facts, live_stats = _facts(session), stored_stats(session)
    with unit_of_work(session):
        for table in ("data_quality_findings", "activity_events", "player_stats"):
            session.execute(sa.text(f"DELETE FROM {table}"))
    total_rows = backfill.count_source_rows(session, BackfillScope())
    assert total_rows > BATCH_SIZE * BATCHES_BEFORE_KILL * 3, (
        "the run must still be far from done at the kill"
    )
    return live_facts, live_stats, total_rows


def _start_backfill(session) -> int:
    with unit_of_work(session):
        return backfill.start_backfill(
            session,
            SYSTEM,
            BackfillScope(),
            safeguards=QUIET,
            batch_size=BATCH_SIZE,
            pause_seconds=PAUSE_SECONDS,
        ).id


def _assert_consistent_then_resume(
    session, run_id, pid, total_rows, live_facts, live_stats
) -> None:
    # What the dead worker left: whole batches only, and stats that agree with them.
    run = session.get(JobRun, run_id)
    assert (run.status, run.worker.endswith(f":{pid}")) == ("running", True)
    session.rollback()
    lines = ledger(session, run_id)
    assert BATCHES_BEFORE_KILL - 1 <= len(lines) < -(-total_rows // BATCH_SIZE)
    assert all(line.committed for line in lines)
    assert event_count(session) == sum(line.counts.events_inserted for line in lines)
    assert_every_batch_whole(session, run_id)
    assert_stats_exact(session)

    with unit_of_work(session):
        stale = jobs.fail_stale_runs(
            session, timedelta(seconds=1), now=utcnow() + timedelta(seconds=5)
        )
    assert [r.id for r in stale] == [run_id]

    finished = resume(session, run_id)
    assert finished.status == "succeeded", finished.error
    assert finished.result["rows_read"] == total_rows
    assert _facts(session) == live_facts  # every fact once: nothing lost, nothing twice
    assert stored_stats(session) == live_stats
    assert_stats_exact(session)
    report = parity(session, run_id)
    assert report.ok, report.flags


def test_a_worker_killed_between_or_inside_batches_leaves_consistent_data_and_the_run_resumes(
    app, session, tmp_path
):
    """The real consumer (`flask jobs worker`) in its own process, killed from outside mid-run."""
    live_facts, live_stats, total_rows = _history_without_events(session)
    run_id = _start_backfill(session)
    enqueue_run(app, run_id)
    log_path = tmp_path / "worker.log"
    worker = _start_worker(app, log_path)
    try:
        deadline = time.monotonic() + 90
        while _committed_batches(session, run_id) < BATCHES_BEFORE_KILL:
            assert worker.poll() is None, f"the worker exited early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, (
                f"the worker made no progress:\n{log_path.read_text()}"
            )
            time.sleep(0.02)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    _assert_consistent_then_resume(session, run_id, worker.pid, total_rows, live_facts, live_stats)


def test_a_worker_killed_inside_a_batch_transaction_loses_that_batch_whole(app, session, tmp_path):
    """Killed after a batch wrote its events and stats but before its commit: none of it stays."""
    live_facts, live_stats, total_rows = _history_without_events(session)
    run_id = _start_backfill(session)
    script = tmp_path / "die_inside_a_batch.py"
    script.write_text(KILL_INSIDE_BATCH)
    worker = subprocess.run(
        [sys.executable, str(script), str(run_id), str(BATCH_SIZE * BATCHES_BEFORE_KILL)],
        cwd=PROJECT_ROOT,
        env=worker_env(app),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr.decode()
    lines = ledger(session, run_id)
    assert len(lines) == BATCHES_BEFORE_KILL - 1  # the fifth batch died with its transaction
    run = session.get(JobRun, run_id)
    assert run.progress_done == BATCH_SIZE * (BATCHES_BEFORE_KILL - 1)
    assert run.checkpoint == lines[-1].position.as_checkpoint()
    session.rollback()
    _assert_consistent_then_resume(
        session, run_id, _pid_of(run.worker), total_rows, live_facts, live_stats
    )


def _pid_of(worker: str) -> int:
    return int(worker.rsplit(":", 1)[1])


def _preparation_processes_of(pid: int) -> list[int]:
    """The backfill preparation processes ``pid`` started (``python -m webapp.jobs.preparation``)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                command = cmdline.read().split(b"\0")
        except OSError:
            continue  # ended while looked at
        if parent == pid and b"webapp.jobs.preparation" in command:
            found.append(int(entry.name))
    return found


def _still_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def test_a_killed_workers_preparation_process_ends_and_the_run_resumes(app, session, tmp_path):
    """A worker with threads starts its preparation process as a new interpreter; killed, both go."""
    live_facts, live_stats, total_rows = _history_without_events(session)
    run_id = _start_backfill(session)
    enqueue_run(app, run_id)
    log_path = tmp_path / "worker.log"
    worker = _start_worker(app, log_path, BACKFILL_PREPARATION_PROCESS_FROM="0")
    try:
        deadline = time.monotonic() + 90
        preparation, batches_when_found = [], 0
        # Killed once the process has prepared some batches, not merely started.
        while not preparation or _committed_batches(session, run_id) < batches_when_found + 3:
            assert worker.poll() is None, f"the worker exited early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no preparation process at work:\n{log_path.read_text()}"
            if not preparation:
                preparation = _preparation_processes_of(worker.pid)
                batches_when_found = max(_committed_batches(session, run_id), BATCHES_BEFORE_KILL)
            time.sleep(0.02)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL

    [child] = preparation
    deadline = time.monotonic() + 30
    while _still_running(child):  # it finds the worker's end of its pipe closed
        assert time.monotonic() < deadline, f"preparation process {child} outlived its worker"
        time.sleep(0.05)
    _assert_consistent_then_resume(session, run_id, worker.pid, total_rows, live_facts, live_stats)
