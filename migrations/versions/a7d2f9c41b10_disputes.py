"""Disputes: reports, case notes, resolutions and the matches they corrected.

Revision ID: a7d2f9c41b10
Revises: 91c6deb3e789
Create Date: 2026-11-24 23:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a7d2f9c41b10'
down_revision = '91c6deb3e789'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    raise RuntimeError(
        "refusing to downgrade below a7d2f9c41b10: it would drop dispute resolutions, the source records of correction events"
    )
