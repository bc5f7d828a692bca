"""Job runs started without a staff account say who started them, e.g. from the command line.

Revision ID: d26c1e852bc9
Revises: c15b0d741ab8
Create Date: 2026-11-25 14:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "d26c1e852bc9"
down_revision = "c15b0d741ab8"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(sa.Column("requested_via", sa.String(length=200), nullable=True))


def downgrade():
    # Only who started command-line runs goes; every run and its results stay. On
    # SQLite the batch copies job_runs (env.py checks the keys that point at it afterwards).
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("requested_via")
