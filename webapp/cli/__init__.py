"""Flask CLI commands, one module per area."""

from flask import Flask


def register_cli(app: Flask) -> None:
    """Attach every command group to ``app``."""
    from webapp.cli.archive import archive_group
    from webapp.cli.atp import import_atp_command
    from webapp.cli.backfill import backfill_group
    from webapp.cli.demo import demo_data_command
    from webapp.cli.disputes import disputes_group
    from webapp.cli.jobs import jobs_group
    from webapp.cli.reconcile import reconcile_command
    from webapp.cli.serve import serve_command
    from webapp.cli.staff import staff_group
    from webapp.cli.summary import summary_command

    app.cli.add_command(demo_data_command)
    app.cli.add_command(reconcile_command)
    app.cli.add_command(summary_command)
    app.cli.add_command(staff_group)
    app.cli.add_command(jobs_group)
    app.cli.add_command(backfill_group)
    app.cli.add_command(serve_command)
    app.cli.add_command(import_atp_command)
    app.cli.add_command(archive_group)
    app.cli.add_command(disputes_group)
