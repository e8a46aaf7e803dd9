"""unscored events index; ledger index covering what scores read

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 16:10:00.000000

- ``ix_events_unscored``: the events still to score, for the engine's periodic sweep and
  ``nurture events process`` (partial: only rows with ``scored_at`` NULL, and not the
  engine's bookkeeping events, which are never scored; a scored event leaves the index).
- ``ix_score_entries_ledger`` replaces ``ix_score_entries_lead_time`` (same leading
  columns): it also holds what scores and score ceilings read, so they read the index only.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# The same text as nurture.db.models.UNSCORED_EVENTS (queries must repeat it exactly for
# SQLite to use the index).
UNSCORED = "scored_at IS NULL AND type NOT IN ('sent', 'deferred', 'failed', 'unknown')"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        'ix_events_unscored',
        'events',
        ['id'],
        unique=False,
        postgresql_where=sa.text(UNSCORED),
        sqlite_where=sa.text(UNSCORED),
    )
    op.create_index(
        'ix_score_entries_ledger',
        'score_entries',
        ['lead_id', 'occurred_at', 'points', 'decays', 'category', 'rule'],
        unique=False,
    )
    op.drop_index('ix_score_entries_lead_time', table_name='score_entries')


def downgrade() -> None:
    """Downgrade schema."""
    op.create_index(
        'ix_score_entries_lead_time', 'score_entries', ['lead_id', 'occurred_at'], unique=False
    )
    op.drop_index('ix_score_entries_ledger', table_name='score_entries')
    op.drop_index('ix_events_unscored', table_name='events')
