"""Lower-cased, indexed copies of player names, public ids and emails for search.

Revision ID: 5b7e2c9a4d10
Revises: f11ce96f8d85
Create Date: 2026-11-24 22:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "5b7e2c9a4d10"
down_revision = "f11ce96f8d85"
branch_labels = None
depends_on = None

SOURCES = ("username", "display_name", "public_id", "email")


def upgrade():
    # Generated columns: STORED on PostgreSQL (before version 18 its only kind),
    # VIRTUAL on SQLite (which can add only virtual ones to an existing table).
    # Indexed either way, so search reads the index.
    stored = op.get_bind().dialect.name == "postgresql"
    for source in SOURCES:
        op.add_column(
            "players",
            sa.Column(
                f"search_{source}",
                sa.String(),
                sa.Computed(f"lower({source})", persisted=stored),
                nullable=False,
            ),
        )
        op.create_index(
            f"ix_players_search_{source}",
            "players",
            [f"search_{source}"],
            postgresql_ops={f"search_{source}": "text_pattern_ops"},
        )


def downgrade():
    for source in SOURCES:
        op.drop_index(f"ix_players_search_{source}", table_name="players")
        with op.batch_alter_table("players") as batch:
            batch.drop_column(f"search_{source}")
