"""Event ids are never reused on SQLite: activity_events gets AUTOINCREMENT.

Without it SQLite hands out one more than the largest id in the table, so
after the newest events were deleted (a backfill rolled back) new events took
their ids again, below what the monitoring fold had already counted, and out
of the recording order that ids otherwise follow. PostgreSQL's identity
sequence never goes back: nothing changes there.

Revision ID: b3d9f5a07c76
Revises: a2c8e4f96b65
Create Date: 2026-11-25 07:20:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "b3d9f5a07c76"
down_revision = "a2c8e4f96b65"
branch_labels = None
depends_on = None

REVERSAL_INDEX = "uq_activity_events_reverses_event_id"


def _copy_events(autoincrement: bool) -> None:
    """Copy activity_events into a table made with or without AUTOINCREMENT, every row kept.

    SQLite can only make a table AUTOINCREMENT when creating it. The partial
    index is dropped and made again around the copy, since the copy would
    rebuild it without its WHERE clause. Rows of other tables that reference
    events are checked once the migrations are done (env.py).
    """
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index(REVERSAL_INDEX, table_name="activity_events")
    with op.batch_alter_table(
        "activity_events", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass
    op.create_index(
        REVERSAL_INDEX, "activity_events", ["reverses_event_id"], unique=True,
        sqlite_where=sa.text("reverses_event_id IS NOT NULL"),
    )


def upgrade():
    # The copy keeps every id, and AUTOINCREMENT starts above the largest of them.
    _copy_events(autoincrement=True)


def downgrade():
    _copy_events(autoincrement=False)
