"""The Huey queue, built per app from its config (nothing is bound at import)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from flask import Flask
from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer
from sqlalchemy.orm import Session

from webapp.domain import jobs
from webapp.models.base import utcnow

log = logging.getLogger(__name__)


def make_huey(url: str, name: str) -> Huey:
    """Build the queue named by ``url``: ``sqlite:///path`` or ``redis://...``."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(name, url=url, utc=True)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name, filename=str(path), utc=True)
    raise RuntimeError(f"QUEUE_URL {url!r} is neither sqlite:///... nor redis://...")


def init_queue(app: Flask) -> Huey:
    """Build the app's queue and register its tasks on it."""
    from webapp.jobs.tasks import register_tasks

    huey = make_huey(app.config["QUEUE_URL"], app.config["QUEUE_NAME"])
    app.extensions["huey"] = huey
    app.extensions["huey_tasks"] = register_tasks(huey, app)
    return huey


def enqueue_run(app: Flask, run_id: int) -> None:
    """Hand a stored, queued run to the workers."""
    app.extensions["huey_tasks"].run_job(run_id)


def requeue_lost_runs(
    app: Flask, session: Session, older_than: timedelta, now: datetime | None = None
) -> list[int]:
    """Hand the workers again every run stored as queued for ``older_than`` whose task is not in the queue.

    A run is stored first and handed to the queue after its commit. If that
    failed (Redis down for a moment), the run would stay queued for ever, and
    every run refused while it is active (a second backfill, fix or archive)
    with it. A run whose task is waiting in the queue is left alone; one taken
    by a worker an instant ago may be handed out twice, and the second worker
    finds it started and lets it be (``run_job``). Returns the ids handed out.
    """
    cutoff = (now or utcnow()) - older_than
    candidates = jobs.queued_before(session, cutoff)
    session.rollback()
    if not candidates:
        return []
    waiting = {task.args[0] for task in app.extensions["huey"].pending() if task.name == "run_job" and task.args}
    lost = [run_id for run_id in candidates if run_id not in waiting]
    for run_id in lost:
        log.warning("job run %s was queued but not in the queue; handing it to the workers again", run_id)
        enqueue_run(app, run_id)
    return lost


class InProcessConsumer(Consumer):
    """A consumer that runs beside the web server in the same process.

    The web server owns the process's signals, so the consumer installs none.
    """

    def _set_signal_handlers(self) -> None:
        pass


def start_in_process_consumer(app: Flask, workers: int = 2) -> Consumer:
    """Start worker threads and the scheduler for the app's queue; stop with ``.stop(graceful=True)``."""
    huey: Huey = app.extensions["huey"]
    consumer = InProcessConsumer(huey, workers=workers, worker_type="thread", periodic=True,
                                 check_worker_health=False, scheduler_interval=1)
    consumer.start()
    return consumer
