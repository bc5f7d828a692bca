"""Void tournament results: a voided final leaves its tournament with no winner.

Revision ID: a2c8e4f96b65
Revises: e1b7d3f85a54
Create Date: 2026-11-25 00:55:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "a2c8e4f96b65"
down_revision = "e1b7d3f85a54"
branch_labels = None
depends_on = None

ONE_WINNER = (
    "(winner_player_id IS NULL AND winner_team_id IS NOT NULL)"
    " OR (winner_player_id IS NOT NULL AND winner_team_id IS NULL)"
)
WINNER_UNLESS_VOID = f"(status = 'decided' AND ({ONE_WINNER}))" \
    " OR (status = 'void' AND winner_player_id IS NULL AND winner_team_id IS NULL)"


def upgrade():
    # Every stored result named its winner: all of them are decided. On SQLite the
    # batch copies the table (placements reference it; env.py checks keys after).
    with op.batch_alter_table("tournament_results") as batch:
        batch.add_column(sa.Column("status", sa.String(length=8), server_default="decided", nullable=False))
        batch.drop_constraint(op.f("ck_tournament_results_one_winner"), type_="check")
        batch.create_check_constraint(op.f("ck_tournament_results_status_known"), "status IN ('decided', 'void')")
        batch.create_check_constraint(op.f("ck_tournament_results_winner_unless_void"), WINNER_UNLESS_VOID)


def downgrade():
    raise RuntimeError(
        "refusing to downgrade below a2c8e4f96b65: void tournament results name no winner, "
        "which the older schema cannot hold"
    )
