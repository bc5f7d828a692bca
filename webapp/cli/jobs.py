"""``flask jobs``: list, watch, cancel and resume job runs; run a worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from flask import Flask, current_app
from sqlalchemy.orm import Session
from tqdm import tqdm

from webapp.cli.actor import command_line_actor
from webapp.domain import backfill, jobs, operations
from webapp.domain.errors import DomainError
from webapp.extensions import db
from webapp.jobs.queue import enqueue_run, start_in_process_consumer
from webapp.jobs.runner import ProgressListener, execute_run, when_cancelled
from webapp.models.jobs import JobRun
from webapp.transaction import after_commit, unit_of_work
from webapp.web.traffic import counts_every_process, current_request_rate


@click.group("jobs")
def jobs_group() -> None:
    """Job runs: backfills, reconciliations, archival, imports."""


@jobs_group.command("list")
@click.option("--kind", type=click.Choice(jobs.JOB_KINDS))
@click.option("--limit", default=20, show_default=True)
def list_command(kind: str | None, limit: int) -> None:
    """List recent runs, newest first."""
    for run in jobs.recent_runs(db.session(), kind, limit):
        progress = jobs.progress_of(run)
        share = f"{progress.percent:5.1f}%" if progress.percent is not None else "     -"
        click.echo(f"{run.id:>6} {run.kind:<18} {run.status:<10} {share} {run.progress_done:>10,} "
                   f"{run.created_at:%Y-%m-%d %H:%M}")


@jobs_group.command("cancel")
@click.argument("run_id", type=int)
def cancel_command(run_id: int) -> None:
    """Ask a run to stop where it can (a queued run is cancelled at once)."""
    session = db.session()
    try:
        with unit_of_work(session):
            run = jobs.request_cancel(session, command_line_actor(), run_id)
    except DomainError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    if run.status == "cancelled":
        click.echo(f"run {run.id}: cancelled before it started")
    else:
        click.echo(f"run {run.id}: cancel requested; it {when_cancelled(run.kind)}")


@jobs_group.command("resume")
@click.argument("run_id", type=int)
@click.option("--queue", "via_queue", is_flag=True, help="Hand it to the workers instead of running it here.")
@click.option("--force", is_flag=True, help="Resume a backfill even inside the peak window.")
def resume_command(run_id: int, via_queue: bool, force: bool) -> None:
    """Resume a failed or cancelled run from its checkpoint (a backfill under its safeguards)."""
    app = current_app._get_current_object()
    queue_run(
        lambda session: operations.resume_job(
            session, command_line_actor(), run_id,
            # Only a backfill is held to the request rate: only it hears about the limit.
            safeguards=safeguards_now(app, force, warn=_is_backfill(session, run_id)),
        ).id,
        via_queue=via_queue,
    )
    if via_queue:
        click.echo(f"run {run_id} queued")
        return
    run_in_foreground(run_id)


def _is_backfill(session: Session, run_id: int) -> bool:
    run = session.get(JobRun, run_id)
    return run is not None and run.kind == "backfill"


def safeguards_now(app: Flask, force: bool, *, warn: bool = True) -> backfill.Safeguards:
    """Return the safeguards a backfill starts or resumes under at this moment.

    With ``warn``, say when the request rate they hold cannot include the web server's traffic.
    """
    if warn and not counts_every_process(app):
        click.secho(
            "warning: requests are counted per process (RATELIMIT_STORAGE_URI="
            f"{app.config['RATELIMIT_STORAGE_URI']}), so this command cannot see the web "
            "server's request rate and the request-rate limit cannot stop it; with a shared "
            "storage (redis://...) it applies here too",
            fg="yellow",
            err=True,
        )
    return backfill.current_safeguards(app.config, current_request_rate(app), force=force)


def queue_run(start: Callable[[Session], int], *, via_queue: bool) -> int:
    """Queue a run in one unit of work and return its id; ``start`` queues it and returns the id.

    With ``via_queue`` the run goes to the workers once the unit of work commits.
    On a domain error, say why and exit 1: nothing was queued.
    """
    app = current_app._get_current_object()
    session = db.session()
    try:
        with unit_of_work(session):
            run_id = start(session)
            if via_queue:
                after_commit(session, lambda: enqueue_run(app, run_id))
    except DomainError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    return run_id


@contextmanager
def progress_bar(description: str, unit: str = "item") -> Iterator[ProgressListener]:
    """A tqdm bar for a run's progress: pass what this yields to ``execute_run`` as a listener.

    It shows on a terminal and stays out of logs and pipes (``disable=None``).
    """
    # tqdm's monitor thread only nudges bars left unrefreshed, and this one is
    # refreshed on every progress report. With no other thread running, a
    # backfill forks its preparation process instead of starting an interpreter.
    tqdm.monitor_interval = 0
    with tqdm(unit=unit, dynamic_ncols=True, desc=description, disable=None) as bar:
        def show(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.n = done
            bar.refresh()

        yield show


def run_in_foreground(run_id: int) -> None:
    """Run a queued run in this process with a progress bar; exit non-zero unless it succeeds."""
    session = db.session()
    with progress_bar(f"run {run_id}") as show:
        run = execute_run(session, run_id, listeners=[show])
    colour = {"succeeded": "green", "cancelled": "yellow"}.get(run.status, "red")
    click.secho(f"run {run.id} {run.status}", fg=colour)
    if run.result:
        for key, value in run.result.items():
            click.echo(f"  {key}: {value}")
    if run.status == "failed":
        click.secho(run.error or "", fg="red", err=True)
    if run.status != "succeeded":
        raise SystemExit(1)


@jobs_group.command("worker")
@click.option("--workers", default=2, show_default=True)
def worker_command(workers: int) -> None:
    """Run a queue consumer in this process until interrupted."""
    consumer = start_in_process_consumer(current_app._get_current_object(), workers)
    click.echo(f"consumer running with {workers} worker threads; Ctrl-C to stop")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.stop(graceful=True)
