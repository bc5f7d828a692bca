"""The ATP import as a procedure of its own transactions: one per chunk of rows.

Each chunk's records are committed together, so an import stopped anywhere
leaves whole records behind; running it again (or resuming its job run) starts
from the beginning and skips what is stored, since the import is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from webapp.domain import atp_import
from webapp.domain.atp_import import ImportPlan, ImportReport, ImportStep
from webapp.transaction import unit_of_work


def run_atp_import(session: Session, plan: ImportPlan, *,
                   chunk_size: int = atp_import.DEFAULT_CHUNK_SIZE,
                   during_step: Callable[[ImportStep], None] | None = None,
                   between_steps: Callable[[], None] | None = None) -> ImportReport:
    """Import ``plan`` committing chunk by chunk; return the report.

    ``during_step`` runs inside each step's unit of work (to record progress
    with it), ``between_steps`` outside any (to stop if cancelled).
    """
    report = ImportReport()
    steps = atp_import.import_steps(session, plan, report, chunk_size=chunk_size)
    while True:
        if between_steps:
            between_steps()
        with unit_of_work(session):
            step = next(steps, None)
            if step is not None and during_step:
                during_step(step)
        if step is None:
            return report


def import_atp_procedure(session: Session, context) -> dict[str, Any]:
    """Import as a job run: params ``data_dir``, ``years`` ("2019-2024"), ``include_doubles``, ``chunk_size``."""
    params = context.params
    years = params.get("years")
    plan = atp_import.plan_import(
        params.get("data_dir") or atp_import.default_data_dir(),
        years=atp_import.parse_years(str(years)) if years else None,
        include_doubles=bool(params.get("include_doubles", True)),
    )
    report = run_atp_import(
        session,
        plan,
        chunk_size=int(params.get("chunk_size", atp_import.DEFAULT_CHUNK_SIZE)),
        during_step=lambda step: context.progress(step.files_done, total=step.files_total),
        between_steps=context.raise_if_cancelled,
    )
    return report.as_dict()
