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

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    op.create_table('gdpr_exports',
    sa.Column('id', BigId, nullable=False),
    sa.Column('request_id', BigId, nullable=False),
    sa.Column('player_id', sa.BigInteger(), nullable=False),
    sa.Column('job_run_id', BigId, nullable=False),
    sa.Column('requested_by_id', BigId, nullable=True),
    sa.Column('storage_url', sa.Text(), nullable=False),
    sa.Column('json_url', sa.Text(), nullable=True),
    sa.Column('csv_url', sa.Text(), nullable=True),
    sa.Column('manifest_url', sa.Text(), nullable=True),
    sa.Column('json_bytes', sa.BigInteger(), nullable=True),
    sa.Column('csv_bytes', sa.BigInteger(), nullable=True),
    sa.Column('json_sha256', sa.String(length=64), nullable=True),
    sa.Column('csv_sha256', sa.String(length=64), nullable=True),
    sa.Column('event_count', sa.BigInteger(), nullable=True),
    sa.Column('archived_event_count', sa.BigInteger(), nullable=True),
    sa.Column('exported_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['gdpr_requests.id'], name=op.f('fk_gdpr_exports_request_id_gdpr_requests')),
    sa.ForeignKeyConstraint(['job_run_id'], ['job_runs.id'], name=op.f('fk_gdpr_exports_job_run_id_job_runs')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['staff_users.id'], name=op.f('fk_gdpr_exports_requested_by_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gdpr_exports')),
    sa.UniqueConstraint('job_run_id', name=op.f('uq_gdpr_exports_job_run_id'))
    )
    op.create_index('ix_gdpr_exports_request_id', 'gdpr_exports', ['request_id'], unique=False)
    op.create_index('ix_gdpr_exports_player_id', 'gdpr_exports', ['player_id'], unique=False)

    op.create_table('gdpr_export_downloads',
    sa.Column('id', BigId, nullable=False),
    sa.Column('export_id', BigId, nullable=False),
    sa.Column('staff_id', BigId, nullable=True),
    sa.Column('file', sa.String(length=16), nullable=False),
    sa.Column('downloaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ip_address', sa.String(length=45), nullable=True),
    sa.CheckConstraint("file IN ('json', 'csv', 'manifest')", name=op.f('ck_gdpr_export_downloads_file_known')),
    sa.ForeignKeyConstraint(['export_id'], ['gdpr_exports.id'], name=op.f('fk_gdpr_export_downloads_export_id_gdpr_exports')),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_users.id'], name=op.f('fk_gdpr_export_downloads_staff_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gdpr_export_downloads'))
    )
    op.create_index('ix_gdpr_export_downloads_export_id', 'gdpr_export_downloads', ['export_id'], unique=False)


def downgrade():
    raise RuntimeError(
        "refusing to downgrade below c9f4b1e63d32: it would drop the record of GDPR exports and their downloads"
    )
