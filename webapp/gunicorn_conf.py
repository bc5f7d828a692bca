"""Gunicorn settings for serving the app with Prometheus metrics summed over its workers.

    PROMETHEUS_MULTIPROC_DIR=/run/activity-ops/metrics \\
        gunicorn -c python:webapp.gunicorn_conf wsgi:app

Every worker writes its counters to files in ``PROMETHEUS_MULTIPROC_DIR``, and
a scrape answered by any worker sums them. The directory is emptied when the
server starts, so counts from a previous run are not added to this one's.
"""

from __future__ import annotations

import glob
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))


def _metrics_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def on_starting(server) -> None:
    """Start from an empty metrics directory (and create it if needed)."""
    path = _metrics_dir()
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)


def child_exit(server, worker) -> None:
    """Forget the live gauges of a worker that exited; its counters stay in the sums."""
    if _metrics_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
