"""leaner write path: handled_events keyed (event_id, handler) without a second index; score
entries lose an index nothing reads and the foreign key to activities (they go with their lead)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('handled_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_handled_events_event_id'))
        batch_op.drop_constraint(batch_op.f('pk_handled_events'), type_='primary')
        batch_op.create_primary_key(batch_op.f('pk_handled_events'), ['event_id', 'handler'])
    with op.batch_alter_table('score_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_score_entries_rule'))
        batch_op.drop_constraint(batch_op.f('fk_score_entries_activity_id_activities'), type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('score_entries', schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f('fk_score_entries_activity_id_activities'), 'activities',
                                    ['activity_id'], ['id'], ondelete='SET NULL')
        batch_op.create_index(batch_op.f('ix_score_entries_rule'), ['lead_id', 'version', 'rule', 'occurred_at'],
                              unique=False)
    with op.batch_alter_table('handled_events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('pk_handled_events'), type_='primary')
        batch_op.create_primary_key(batch_op.f('pk_handled_events'), ['handler', 'event_id'])
        batch_op.create_index(batch_op.f('ix_handled_events_event_id'), ['event_id'], unique=False)
