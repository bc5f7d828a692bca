"""``flask serve``: the web server with a job consumer in the same process (the local default)."""

from __future__ import annotations

import click
from flask import current_app
from werkzeug.serving import run_simple

from webapp.jobs.queue import start_in_process_consumer


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Job worker threads beside the web server.")
def serve_command(host: str, port: int, workers: int) -> None:
    """Serve the dashboard and run queued jobs in this process."""
    app = current_app._get_current_object()
    consumer = start_in_process_consumer(app, workers)
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False)
    finally:
        consumer.stop(graceful=True)
