"""Create platform records, activity events, stats and reconciliation runs.

Revision ID: 3d4f492da9cc
Revises: 
Create Date: 2026-11-24 21:01:35.682359

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '3d4f492da9cc'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('players',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('public_id', sa.String(length=20), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=128), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('feed_visibility', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("feed_visibility IN ('private', 'public')", name=op.f('ck_players_feed_visibility_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_players')),
    sa.UniqueConstraint('email', name=op.f('uq_players_email')),
    sa.UniqueConstraint('public_id', name=op.f('uq_players_public_id')),
    sa.UniqueConstraint('username', name=op.f('uq_players_username'))
    )
    op.create_table('reconciliation_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('fix', sa.Boolean(), nullable=False),
    sa.Column('player_id', sa.BigInteger(), nullable=True),
    sa.Column('players_checked', sa.Integer(), nullable=False),
    sa.Column('players_drifted', sa.Integer(), nullable=False),
    sa.Column('players_fixed', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name=op.f('ck_reconciliation_runs_status_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_runs'))
    )
    op.create_table('teams',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_teams')),
    sa.UniqueConstraint('name', name=op.f('uq_teams_name'))
    )
    op.create_table('tournaments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('is_private', sa.Boolean(), nullable=False),
    sa.Column('is_team_based', sa.Boolean(), nullable=False),
    sa.Column('awards_winner', sa.Boolean(), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('external_ref', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('ends_at >= starts_at', name=op.f('ck_tournaments_dates_ordered')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tournaments')),
    sa.UniqueConstraint('external_ref', name=op.f('uq_tournaments_external_ref'))
    )
    op.create_table('activity_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source_model', sa.String(length=40), nullable=False),
    sa.Column('source_id', sa.BigInteger(), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('origin_id', sa.BigInteger(), nullable=True),
    sa.Column('team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('tournament_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=False),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('reverses_event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint("origin IN ('live', 'backfill', 'dispute', 'staff')", name=op.f('ck_activity_events_origin_known')),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], name=op.f('fk_activity_events_player_id_players')),
    sa.ForeignKeyConstraint(['reverses_event_id'], ['activity_events.id'], name=op.f('fk_activity_events_reverses_event_id_activity_events')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_activity_events_team_id_teams')),
    sa.ForeignKeyConstraint(['tournament_id'], ['tournaments.id'], name=op.f('fk_activity_events_tournament_id_tournaments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_activity_events')),
    sa.UniqueConstraint('player_id', 'event_type', 'source_model', 'source_id', name=op.f('uq_activity_events_player_id_event_type_source_model_source_id'))
    )
    with op.batch_alter_table('activity_events', schema=None) as batch_op:
        batch_op.create_index('ix_activity_events_player_timeline', ['player_id', 'occurred_at', 'id'], unique=False)
        batch_op.create_index('uq_activity_events_reverses_event_id', ['reverses_event_id'], unique=True, postgresql_where=sa.text('reverses_event_id IS NOT NULL'), sqlite_where=sa.text('reverses_event_id IS NOT NULL'))

    op.create_table('matches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tournament_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('round', sa.String(length=16), nullable=False),
    sa.Column('side_a_player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('side_a_team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('side_b_player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('side_b_team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('winner_side', sa.String(length=1), nullable=True),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('is_final', sa.Boolean(), nullable=False),
    sa.Column('external_ref', sa.String(length=100), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('scheduled', 'completed', 'forfeit', 'disputed', 'void')", name=op.f('ck_matches_state_known')),
    sa.CheckConstraint("state NOT IN ('completed', 'forfeit') OR winner_side IS NOT NULL", name=op.f('ck_matches_decided_has_winner')),
    sa.CheckConstraint("winner_side IS NULL OR winner_side IN ('a', 'b')", name=op.f('ck_matches_winner_side_known')),
    sa.CheckConstraint('(side_a_player_id IS NULL AND side_a_team_id IS NOT NULL) OR (side_a_player_id IS NOT NULL AND side_a_team_id IS NULL)', name=op.f('ck_matches_side_a_one_entrant')),
    sa.CheckConstraint('(side_b_player_id IS NULL AND side_b_team_id IS NOT NULL) OR (side_b_player_id IS NOT NULL AND side_b_team_id IS NULL)', name=op.f('ck_matches_side_b_one_entrant')),
    sa.ForeignKeyConstraint(['side_a_player_id'], ['players.id'], name=op.f('fk_matches_side_a_player_id_players')),
    sa.ForeignKeyConstraint(['side_a_team_id'], ['teams.id'], name=op.f('fk_matches_side_a_team_id_teams')),
    sa.ForeignKeyConstraint(['side_b_player_id'], ['players.id'], name=op.f('fk_matches_side_b_player_id_players')),
    sa.ForeignKeyConstraint(['side_b_team_id'], ['teams.id'], name=op.f('fk_matches_side_b_team_id_teams')),
    sa.ForeignKeyConstraint(['tournament_id'], ['tournaments.id'], name=op.f('fk_matches_tournament_id_tournaments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_matches')),
    sa.UniqueConstraint('external_ref', name=op.f('uq_matches_external_ref'))
    )
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.create_index('ix_matches_tournament_id', ['tournament_id'], unique=False)

    op.create_table('player_stats',
    sa.Column('player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('matches_played', sa.Integer(), nullable=False),
    sa.Column('matches_won', sa.Integer(), nullable=False),
    sa.Column('matches_lost', sa.Integer(), nullable=False),
    sa.Column('forfeit_wins', sa.Integer(), nullable=False),
    sa.Column('forfeit_losses', sa.Integer(), nullable=False),
    sa.Column('tournaments_played', sa.Integer(), nullable=False),
    sa.Column('tournaments_completed', sa.Integer(), nullable=False),
    sa.Column('tournaments_won', sa.Integer(), nullable=False),
    sa.Column('solo_tournament_wins', sa.Integer(), nullable=False),
    sa.Column('team_tournament_wins', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("scope IN ('all', 'public')", name=op.f('ck_player_stats_scope_known')),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], name=op.f('fk_player_stats_player_id_players')),
    sa.PrimaryKeyConstraint('player_id', 'scope', name=op.f('pk_player_stats'))
    )
    op.create_table('reconciliation_drifts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('player_id', sa.BigInteger(), nullable=False),
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('stat', sa.String(length=40), nullable=False),
    sa.Column('expected', sa.Integer(), nullable=False),
    sa.Column('actual', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['reconciliation_runs.id'], name=op.f('fk_reconciliation_drifts_run_id_reconciliation_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_drifts'))
    )
    with op.batch_alter_table('reconciliation_drifts', schema=None) as batch_op:
        batch_op.create_index('ix_reconciliation_drifts_run_id', ['run_id'], unique=False)

    op.create_table('registrations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tournament_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('registered', 'checked_in', 'no_show', 'withdrawn', 'completed')", name=op.f('ck_registrations_status_known')),
    sa.CheckConstraint('(player_id IS NULL AND team_id IS NOT NULL) OR (player_id IS NOT NULL AND team_id IS NULL)', name=op.f('ck_registrations_one_entrant')),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], name=op.f('fk_registrations_player_id_players')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_registrations_team_id_teams')),
    sa.ForeignKeyConstraint(['tournament_id'], ['tournaments.id'], name=op.f('fk_registrations_tournament_id_tournaments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registrations')),
    sa.UniqueConstraint('tournament_id', 'player_id', name=op.f('uq_registrations_tournament_id_player_id')),
    sa.UniqueConstraint('tournament_id', 'team_id', name=op.f('uq_registrations_tournament_id_team_id'))
    )
    op.create_table('team_memberships',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('left_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('left_at IS NULL OR left_at > joined_at', name=op.f('ck_team_memberships_interval_ordered')),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], name=op.f('fk_team_memberships_player_id_players')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_team_memberships_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_team_memberships')),
    sa.UniqueConstraint('team_id', 'player_id', 'joined_at', name=op.f('uq_team_memberships_team_id_player_id_joined_at'))
    )
    with op.batch_alter_table('team_memberships', schema=None) as batch_op:
        batch_op.create_index('ix_team_memberships_player_id', ['player_id'], unique=False)

    op.create_table('tournament_results',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tournament_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('winner_player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('winner_team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(winner_player_id IS NULL AND winner_team_id IS NOT NULL) OR (winner_player_id IS NOT NULL AND winner_team_id IS NULL)', name=op.f('ck_tournament_results_one_winner')),
    sa.ForeignKeyConstraint(['tournament_id'], ['tournaments.id'], name=op.f('fk_tournament_results_tournament_id_tournaments')),
    sa.ForeignKeyConstraint(['winner_player_id'], ['players.id'], name=op.f('fk_tournament_results_winner_player_id_players')),
    sa.ForeignKeyConstraint(['winner_team_id'], ['teams.id'], name=op.f('fk_tournament_results_winner_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tournament_results')),
    sa.UniqueConstraint('tournament_id', name=op.f('uq_tournament_results_tournament_id'))
    )
    op.create_table('data_quality_findings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('detected_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('attempted', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('differences', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['activity_events.id'], name=op.f('fk_data_quality_findings_event_id_activity_events')),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], name=op.f('fk_data_quality_findings_player_id_players')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_quality_findings')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_data_quality_findings_fingerprint'))
    )
    op.create_table('placements',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('result_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('place', sa.Integer(), nullable=False),
    sa.Column('player_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint('(player_id IS NULL AND team_id IS NOT NULL) OR (player_id IS NOT NULL AND team_id IS NULL)', name=op.f('ck_placements_one_entrant')),
    sa.CheckConstraint('place >= 1', name=op.f('ck_placements_place_positive')),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], name=op.f('fk_placements_player_id_players')),
    sa.ForeignKeyConstraint(['result_id'], ['tournament_results.id'], name=op.f('fk_placements_result_id_tournament_results')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_placements_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_placements'))
    )
    with op.batch_alter_table('placements', schema=None) as batch_op:
        batch_op.create_index('ix_placements_result_id', ['result_id'], unique=False)



def downgrade():
    # Downgrading past this revision would drop activity_events and with it the
    # history every stat is derived from. Refuse; a database that really must go
    # is dropped by an operator, deliberately, outside the migrations.
    raise RuntimeError(
        "refusing to downgrade below 3d4f492da9cc: it would drop activity_events and its rows"
    )
