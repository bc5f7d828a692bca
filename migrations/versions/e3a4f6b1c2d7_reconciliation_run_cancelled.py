"""Reconciliation runs staff cancelled end cancelled, not failed.

Revision ID: e3a4f6b1c2d7
Revises: d26c1e852bc9
Create Date: 2026-11-25 14:20:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = "e3a4f6b1c2d7"
down_revision = "d26c1e852bc9"
branch_labels = None
depends_on = None

_NAME = "ck_reconciliation_runs_status_known"


def upgrade():
    # On SQLite the batch copies the table (its drift rows reference it; env.py checks keys after).
    with op.batch_alter_table("reconciliation_runs") as batch:
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME), "status IN ('running', 'succeeded', 'failed', 'cancelled')")


def downgrade():
    # The older schema calls a cancelled run failed; its error already says it was cancelled.
    op.execute("UPDATE reconciliation_runs SET status = 'failed' WHERE status = 'cancelled'")
    with op.batch_alter_table("reconciliation_runs") as batch:
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME), "status IN ('running', 'succeeded', 'failed')")
