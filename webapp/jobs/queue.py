"""The Huey queue, built per app from its config (nothing is bound at import)."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer


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
