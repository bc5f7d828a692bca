"""When a job run was last queued; archived event keys indexed by event id.

The sweep hands the workers again a run queued for long with no task waiting:
measured from its creation, a run resumed just now would count as waiting for
long. A backfill's rollback looks up archived events in its batches' id ranges.

Revision ID: f5c6a7d8e9b0
Revises: e3a4f6b1c2d7
Create Date: 2026-11-25 14:40:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "f5c6a7d8e9b0"
down_revision = "e3a4f6b1c2d7"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_archived_event_keys_event_id"), "archived_event_keys", ["event_id"])


def downgrade():
    # Only when runs were queued and an index go; every run and archived key stays. On
    # SQLite the batch copies job_runs (env.py checks the keys that point at it afterwards).
    op.drop_index(op.f("ix_archived_event_keys_event_id"), table_name="archived_event_keys")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("queued_at")
