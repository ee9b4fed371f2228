"""partial indexes for mostly empty columns: an erased person's hashes and the visitor id of
touchpoints and activities are indexed only where set, so a form post adds no NULL entries to them

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 04:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = [
    ('leads', 'ix_leads_erased_email_hash', 'erased_email_hash'),
    ('leads', 'ix_leads_erased_phone_hash', 'erased_phone_hash'),
    ('touchpoints', 'ix_touchpoints_visitor_id', 'visitor_id'),
    ('activities', 'ix_activities_visitor_id', 'visitor_id'),
]


def upgrade() -> None:
    for table, name, column in INDEXES:
        where = sa.text(f'{column} IS NOT NULL')
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column], unique=False, postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for table, name, column in INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column], unique=False)
