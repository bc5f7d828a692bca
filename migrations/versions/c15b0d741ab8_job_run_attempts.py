"""Job run attempts: when the current attempt began and how much was done before it.

A resumed run's rate and time left were measured from its first start, across
the hours it was stopped. Runs stored before this revision have neither value
and keep being measured from their first start until they are next started.

Revision ID: c15b0d741ab8
Revises: b3d9f5a07c76
Create Date: 2026-11-25 13:45:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "c15b0d741ab8"
down_revision = "b3d9f5a07c76"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(sa.Column("attempt_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("attempt_done_from", sa.BigInteger(), nullable=True))


def downgrade():
    # Only the measure of the current attempt goes; every run, its progress and
    # its checkpoint stay. On SQLite the batch copies job_runs (env.py checks the
    # keys that point at it afterwards).
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("attempt_done_from")
        batch.drop_column("attempt_started_at")
