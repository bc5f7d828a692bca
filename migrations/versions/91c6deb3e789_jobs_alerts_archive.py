"""Job runs, backfill batch ledgers, alert deliveries, archive files and archived event counts.

Revision ID: 91c6deb3e789
Revises: 5b7e2c9a4d10
Create Date: 2026-11-24 21:30:27.834194

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '91c6deb3e789'
down_revision = '5b7e2c9a4d10'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('alert_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('rule', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("channel IN ('webhook', 'email')", name=op.f('ck_alert_deliveries_channel_known')),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name=op.f('ck_alert_deliveries_status_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_deliveries'))
    )
    with op.batch_alter_table('alert_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_alert_deliveries_status', ['status'], unique=False)

    op.create_table('archived_event_counts',
    sa.Column('player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('is_private', sa.Boolean(), nullable=False),
    sa.Column('is_team', sa.Boolean(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], name=op.f('fk_archived_event_counts_player_id_players')),
    sa.PrimaryKeyConstraint('player_id', 'event_type', 'is_private', 'is_team', name=op.f('pk_archived_event_counts'))
    )
    op.create_table('job_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('requested_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('progress_done', sa.BigInteger(), nullable=False),
    sa.Column('progress_total', sa.BigInteger(), nullable=True),
    sa.Column('checkpoint', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('result', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('worker', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f('ck_job_runs_status_known')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['staff_users.id'], name=op.f('fk_job_runs_requested_by_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_runs'))
    )
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.create_index('ix_job_runs_kind_status', ['kind', 'status'], unique=False)

    op.create_table('archive_files',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('restored_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['job_runs.id'], name=op.f('fk_archive_files_run_id_job_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_archive_files')),
    sa.UniqueConstraint('url', name=op.f('uq_archive_files_url'))
    )
    op.create_table('backfill_batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('batch_no', sa.Integer(), nullable=False),
    sa.Column('rows_read', sa.Integer(), nullable=False),
    sa.Column('events_inserted', sa.Integer(), nullable=False),
    sa.Column('duplicates', sa.Integer(), nullable=False),
    sa.Column('rejected_forfeit', sa.Integer(), nullable=False),
    sa.Column('rejected_no_show', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('first_event_id', sa.BigInteger(), nullable=True),
    sa.Column('last_event_id', sa.BigInteger(), nullable=True),
    sa.Column('checkpoint_after', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['job_runs.id'], name=op.f('fk_backfill_batches_run_id_job_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backfill_batches')),
    sa.UniqueConstraint('run_id', 'batch_no', name=op.f('uq_backfill_batches_run_id_batch_no'))
    )


def downgrade():
    # archived_event_counts is what keeps archived history in every stat, and
    # archive_files is how to find that history again: dropping them loses events.
    raise RuntimeError(
        "refusing to downgrade below 91c6deb3e789: it would drop the record of archived events"
    )
