"""GDPR requests: tracking, identity verification, notes, erasure approvals.

Revision ID: b8e3a0d52c21
Revises: a7d2f9c41b10
Create Date: 2026-11-24 23:30:00.000000

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = 'b8e3a0d52c21'
down_revision = 'a7d2f9c41b10'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade():
    op.add_column('players', sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        'players',
        sa.Column('is_tombstone', sa.Boolean(), server_default=sa.false(), nullable=False),
    )

    op.create_table('gdpr_requests',
    sa.Column('id', BigId, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('player_id', BigId, nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('identity_verification', sa.Text(), nullable=True),
    sa.Column('verified_by_id', BigId, nullable=True),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('handled_by_id', BigId, nullable=True),
    sa.Column('erasure_requested_by_id', BigId, nullable=True),
    sa.Column('erasure_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('approved_by_id', BigId, nullable=True),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refusal_reason', sa.Text(), nullable=True),
    sa.Column('verification_report', Json, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('export', 'erasure')", name=op.f('ck_gdpr_requests_kind_known')),
    sa.CheckConstraint("status IN ('open', 'verified', 'awaiting_approval', 'completed', 'refused')", name=op.f('ck_gdpr_requests_status_known')),
    sa.CheckConstraint('due_at > received_at', name=op.f('ck_gdpr_requests_due_after_received')),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], name=op.f('fk_gdpr_requests_player_id_players')),
    sa.ForeignKeyConstraint(['verified_by_id'], ['staff_users.id'], name=op.f('fk_gdpr_requests_verified_by_id_staff_users')),
    sa.ForeignKeyConstraint(['handled_by_id'], ['staff_users.id'], name=op.f('fk_gdpr_requests_handled_by_id_staff_users')),
    sa.ForeignKeyConstraint(['erasure_requested_by_id'], ['staff_users.id'], name=op.f('fk_gdpr_requests_erasure_requested_by_id_staff_users')),
    sa.ForeignKeyConstraint(['approved_by_id'], ['staff_users.id'], name=op.f('fk_gdpr_requests_approved_by_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gdpr_requests'))
    )
    op.create_index('ix_gdpr_requests_status_due_at', 'gdpr_requests', ['status', 'due_at'], unique=False)
    op.create_index('ix_gdpr_requests_player_id', 'gdpr_requests', ['player_id'], unique=False)

    op.create_table('gdpr_request_entries',
    sa.Column('id', BigId, nullable=False),
    sa.Column('request_id', BigId, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('staff_id', BigId, nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['gdpr_requests.id'], name=op.f('fk_gdpr_request_entries_request_id_gdpr_requests')),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_users.id'], name=op.f('fk_gdpr_request_entries_staff_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gdpr_request_entries'))
    )
    op.create_index('ix_gdpr_request_entries_request_id', 'gdpr_request_entries', ['request_id', 'id'], unique=False)


def downgrade():
    raise RuntimeError(
        "refusing to downgrade below b8e3a0d52c21: it would drop GDPR requests, the record of what was asked and done"
    )
