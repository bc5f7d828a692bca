"""Disputes: reports, case notes, resolutions and the matches they corrected.

Revision ID: a7d2f9c41b10
Revises: 91c6deb3e789
Create Date: 2026-11-24 23:30:00.000000

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = 'a7d2f9c41b10'
down_revision = '91c6deb3e789'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('disputes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('match_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('match_state_before', sa.String(length=16), nullable=False),
    sa.Column('winner_side_before', sa.String(length=1), nullable=True),
    sa.CheckConstraint("status IN ('open', 'resolved')", name=op.f('ck_disputes_status_known')),
    sa.ForeignKeyConstraint(['match_id'], ['matches.id'], name=op.f('fk_disputes_match_id_matches')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_disputes'))
    )
    with op.batch_alter_table('disputes', schema=None) as batch_op:
        batch_op.create_index('ix_disputes_status_opened_at', ['status', 'opened_at'], unique=False)
        batch_op.create_index('uq_disputes_open_match', ['match_id'], unique=True, postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"))

    op.create_table('dispute_notes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dispute_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['dispute_id'], ['disputes.id'], name=op.f('fk_dispute_notes_dispute_id_disputes')),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_users.id'], name=op.f('fk_dispute_notes_staff_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dispute_notes'))
    )
    with op.batch_alter_table('dispute_notes', schema=None) as batch_op:
        batch_op.create_index('ix_dispute_notes_dispute_id', ['dispute_id'], unique=False)

    op.create_table('dispute_reports',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dispute_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('reporter', sa.String(length=100), nullable=True),
    sa.Column('reporter_staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.CheckConstraint("source IN ('platform', 'staff')", name=op.f('ck_dispute_reports_source_known')),
    sa.ForeignKeyConstraint(['dispute_id'], ['disputes.id'], name=op.f('fk_dispute_reports_dispute_id_disputes')),
    sa.ForeignKeyConstraint(['reporter_staff_id'], ['staff_users.id'], name=op.f('fk_dispute_reports_reporter_staff_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dispute_reports'))
    )
    with op.batch_alter_table('dispute_reports', schema=None) as batch_op:
        batch_op.create_index('ix_dispute_reports_dispute_id', ['dispute_id'], unique=False)

    op.create_table('dispute_views',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dispute_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('viewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dispute_id'], ['disputes.id'], name=op.f('fk_dispute_views_dispute_id_disputes')),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_users.id'], name=op.f('fk_dispute_views_staff_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dispute_views'))
    )
    with op.batch_alter_table('dispute_views', schema=None) as batch_op:
        batch_op.create_index('ix_dispute_views_dispute_id', ['dispute_id'], unique=False)

    op.create_table('match_resolutions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('match_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dispute_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('outcome', sa.String(length=4), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('based_on_version', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('resolved_by_staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state_before', sa.String(length=16), nullable=False),
    sa.Column('winner_side_before', sa.String(length=1), nullable=True),
    sa.Column('state_after', sa.String(length=16), nullable=False),
    sa.Column('winner_side_after', sa.String(length=1), nullable=True),
    sa.Column('tournament_result_id', sa.BigInteger(), nullable=True),
    sa.Column('preview', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('stats_before', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('stats_after', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.CheckConstraint("outcome IN ('a', 'b', 'void')", name=op.f('ck_match_resolutions_outcome_known')),
    sa.ForeignKeyConstraint(['dispute_id'], ['disputes.id'], name=op.f('fk_match_resolutions_dispute_id_disputes')),
    sa.ForeignKeyConstraint(['match_id'], ['matches.id'], name=op.f('fk_match_resolutions_match_id_matches')),
    sa.ForeignKeyConstraint(['resolved_by_staff_id'], ['staff_users.id'], name=op.f('fk_match_resolutions_resolved_by_staff_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_match_resolutions')),
    sa.UniqueConstraint('match_id', 'based_on_version', name=op.f('uq_match_resolutions_match_id_based_on_version')),
    sa.UniqueConstraint('token', name=op.f('uq_match_resolutions_token'))
    )
    with op.batch_alter_table('match_resolutions', schema=None) as batch_op:
        batch_op.create_index('ix_match_resolutions_dispute_id', ['dispute_id'], unique=False)


def downgrade():
    raise RuntimeError(
        "refusing to downgrade below a7d2f9c41b10: it would drop dispute resolutions, the source records of correction events"
    )
