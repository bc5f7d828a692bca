"""``flask jobs``: resuming a run refuses what starting one would refuse."""

from __future__ import annotations

from sqlalchemy import select

from webapp.domain import jobs, operations
from webapp.domain.audit import SYSTEM
from webapp.models import AuditEntry, JobRun
from webapp.transaction import unit_of_work


def queue_fix(session) -> int:
    with unit_of_work(session):
        return operations.queue_reconciliation(session, SYSTEM, fix=True, batch_size=500).id


def test_resuming_a_fix_while_another_fix_is_queued_is_refused_and_queues_nothing(runner, session):
    first = queue_fix(session)
    with unit_of_work(session):
        jobs.request_cancel(session, SYSTEM, first)
    second = queue_fix(session)

    result = runner.invoke(args=["jobs", "resume", str(first), "--queue"])

    assert result.exit_code == 1
    assert f"error: reconciliation run {second} is already queued" in result.output
    session.rollback()
    assert session.get(JobRun, first).status == "cancelled"
    assert "job.reconcile.resume" not in set(session.scalars(select(AuditEntry.action)))


def test_resuming_a_reconciliation_says_nothing_of_the_backfills_request_rate_limit(runner, session):
    first = queue_fix(session)
    with unit_of_work(session):
        jobs.request_cancel(session, SYSTEM, first)

    result = runner.invoke(args=["jobs", "resume", str(first), "--queue"])

    assert result.exit_code == 0, result.output
    assert f"run {first} queued" in result.output
    assert "counted per process" not in result.output
