"""A batch written with set-based statements: every new row of a table in one statement (every table
in one on PostgreSQL), the leads' changes in one executemany UPDATE per set of changed columns."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Base, driver_connection, plan_each_execution, plan_once
from core.outbox import outbox_t
from leads.intake.batch.book import BatchLead
from leads.intake.batch.rows import BatchRows
from leads.models import activities_t, consents_t, leads_t, tags_t, touchpoints_t, visitors_t
from leads.schemas import PROFILE_FIELDS


async def write_batch(session: AsyncSession, leads: list[BatchLead], rows: BatchRows, now: datetime) -> None:
    """Set-based writes: every new row in one statement, one executemany UPDATE per column set."""
    new = [
        {
            **{k: lead.values.get(k) for k in PROFILE_FIELDS},
            "id": lead.id, "customer_status": lead.values.get("customer_status") or "new",
            "custom": lead.custom, "source_channel": lead.channel,
            "created_at": lead.created_at, "updated_at": now,
        }
        for lead in leads if lead.new
    ]
    tag_rows = [{"lead_id": lead.id, "tag": tag} for lead in leads for tag in lead.new_tags]
    if rows.events:
        session.info["outbox"] = True  # the relay is nudged when the caller commits
    # One plan per statement for the inserts and their foreign-key checks, one per row and key:
    # planned anew at each check they took 40% of PostgreSQL's time on a group of form posts.
    planned_here = await plan_once(session)
    await insert_rows(session, [
        (table, values) for table, values in (
            (leads_t, new), (tags_t, tag_rows), (visitors_t, list(rows.new_visitors.values())),
            (touchpoints_t, rows.touchpoints), (activities_t, rows.activities), (consents_t, rows.consents),
            (outbox_t, rows.events),
        ) if values
    ])
    groups: dict[tuple[str, ...], list[BatchLead]] = {}
    for lead in leads:
        if not lead.new and not lead.virtual and lead.touched:
            groups.setdefault(tuple(sorted(lead.changed)), []).append(lead)
    stitched = {**{v: r["lead_id"] for v, r in rows.new_visitors.items()}, **rows.moved_visitors}
    if planned_here or groups or stitched:
        # Updates by key, and the caller's statements after: a plan kept since a table was small would read it all.
        await plan_each_execution(session)
    # Only the columns this batch changed are written, so a concurrent edit of another field
    # of the same lead (which takes no identity lock) is not overwritten with a stale value.
    for columns, group in groups.items():
        stmt = (
            update(leads_t)
            .where(leads_t.c.id == bindparam("b_id"))
            .values({c: bindparam(f"b_{c}") for c in (*columns, "updated_at")})
        )
        await session.execute(stmt, [
            {"b_id": lead.id, "b_updated_at": now,
             **{f"b_{c}": lead.custom if c == "custom" else lead.values[c] for c in columns}}
            for lead in group
        ])
    if rows.moved_visitors:
        await session.execute(
            update(visitors_t).where(visitors_t.c.visitor_id == bindparam("b_visitor"))
            .values(lead_id=bindparam("b_lead")),
            [{"b_visitor": v, "b_lead": lead_id} for v, lead_id in rows.moved_visitors.items()],
        )
    if stitched:
        # The anonymous page views these browsers made before become the leads' history.
        for table in (touchpoints_t, activities_t):
            await session.execute(
                update(table)
                .where(table.c.visitor_id == bindparam("b_visitor"), table.c.lead_id.is_(None))
                .values(lead_id=bindparam("b_lead")),
                [{"b_visitor": v, "b_lead": lead_id} for v, lead_id in stitched.items()],
            )


async def insert_rows(session: AsyncSession, tables: list[tuple[Table, list[dict[str, Any]]]]) -> None:
    """New rows of several tables, in the order given (parents first).

    PostgreSQL: a single statement, `WITH … INSERT … SELECT FROM json_populate_recordset(…)` for
    every table, each table's rows sent as one JSON text: one round trip, and the rows are
    serialised in one C call per table instead of being encoded value by value (foreign keys are
    checked at the end of the statement, so children may reference parents inserted beside them).
    SQLite: one executemany per table.
    """
    if not tables:
        return
    if session.get_bind().dialect.name != "postgresql":
        for table, rows in tables:
            await session.execute(insert(table), rows)
        return
    sql = _recordset_insert(tuple((table.name, tuple(rows[0])) for table, rows in tables))
    args = [orjson.dumps(rows, default=_json_default, option=_ROWS_JSON).decode() for _, rows in tables]
    await (await driver_connection(session)).execute(sql, *args)


# Naive datetimes are UTC here, as asyncpg's binary encoding took them; JSON columns keep
# non-string keys as the ORM's JSON type would write them.
_ROWS_JSON = orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS


def _json_default(value: Any) -> Any:
    """What orjson does not write itself: ids read back through asyncpg (its own UUID subclass)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} into a row")


@lru_cache(maxsize=256)
def _recordset_insert(shape: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    """The statement for `insert_rows` on PostgreSQL, by table and column names: parameter $n is
    the n-th table's rows as a JSON array of objects keyed by column name."""
    statements = []
    for n, (name, columns) in enumerate(shape, start=1):
        Base.metadata.tables[name]  # a table nurture knows, never a name from outside
        names = ", ".join(f'"{c}"' for c in columns)
        statements.append(
            f'INSERT INTO "{name}" ({names}) SELECT {names} FROM json_populate_recordset(NULL::"{name}", ${n}::json)'
        )
    *first, last = statements
    return "WITH " + ", ".join(f"i{k} AS ({sql})" for k, sql in enumerate(first)) + " " + last if first else last
