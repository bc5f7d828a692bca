"""Archived event keys: the idempotency keys of events moved to cold storage.

Revision ID: e1b7d3f85a54
Revises: d0a5c2f74e43
Create Date: 2026-11-24 23:45:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1b7d3f85a54'
down_revision = 'd0a5c2f74e43'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('archived_event_keys',
    sa.Column('player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('source_model', sa.String(length=40), nullable=False),
    sa.Column('source_id', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('file_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['archive_files.id'], name=op.f('fk_archived_event_keys_file_id_archive_files')),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], name=op.f('fk_archived_event_keys_player_id_players')),
    sa.PrimaryKeyConstraint('player_id', 'event_type', 'source_model', 'source_id', name=op.f('pk_archived_event_keys'))
    )
    op.create_index(op.f('ix_archived_event_keys_file_id'), 'archived_event_keys', ['file_id'], unique=False)
    # Files archived before this revision are not indexed here: a migration cannot
    # reach the archive storage. Restoring such a file and archiving it again does.


def downgrade():
    raise RuntimeError(
        "refusing to downgrade below e1b7d3f85a54: archived events would be recorded again as new"
    )
