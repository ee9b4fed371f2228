"""outbox indexes of pending rows only: the relay's (oldest unrelayed first) and the sweeper's
(relayed, not done), so they stay as small as the backlog and a done row's update adds no entry

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index('ix_outbox_events_unrelayed', table_name='outbox_events')
    op.drop_index('ix_outbox_events_undone', table_name='outbox_events')
    unrelayed, undone = sa.text('relayed_at IS NULL'), sa.text('done_at IS NULL')
    op.create_index('ix_outbox_events_unrelayed', 'outbox_events', ['created_at', 'id'], unique=False,
                    postgresql_where=unrelayed, sqlite_where=unrelayed)
    op.create_index('ix_outbox_events_undone', 'outbox_events', ['relayed_at'], unique=False,
                    postgresql_where=undone, sqlite_where=undone)


def downgrade() -> None:
    op.drop_index('ix_outbox_events_unrelayed', table_name='outbox_events')
    op.drop_index('ix_outbox_events_undone', table_name='outbox_events')
    op.create_index('ix_outbox_events_unrelayed', 'outbox_events', ['relayed_at', 'created_at'], unique=False)
    op.create_index('ix_outbox_events_undone', 'outbox_events', ['done_at', 'relayed_at'], unique=False)
