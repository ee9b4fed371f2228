"""Many intakes in one transaction with set-based statements: the leads their emails, phones and
visitor ids belong to are loaded at once, each intake is applied in order as `record_intake` would
apply it, and everything is written with one statement per table.

CSV imports (`import_batch`) and grouped form posts (`form_batch`) both write through here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Select, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Base, driver_connection, lock_keys, plan_each_execution, plan_once
from core.events import EventPayload
from core.outbox import outbox_row, outbox_t
from leads.intake.interaction import Interaction, lead_changes
from leads.models import (
    Channel,
    activities_t,
    aliases_t,
    consents_t,
    leads_t,
    tags_t,
    touchpoints_t,
    visitors_t,
)
from leads.schemas import PROFILE_FIELDS


@dataclass(eq=False, slots=True)
class BatchLead:
    """A lead as the batch sees it: loaded from the database or planned by an earlier intake."""

    id: uuid.UUID
    values: dict[str, Any]
    custom: dict[str, Any]
    tags: set[str]
    created_at: datetime
    sources: set[tuple[str | None, str | None]]  # (source, campaign) of its import touchpoints
    new: bool = False
    channel: str = Channel.import_.value  # source_channel of a new lead
    virtual: bool = False  # dry run: a lead an earlier batch would have created
    changed: set[str] = field(default_factory=set)
    new_tags: list[str] = field(default_factory=list)
    touched: bool = False
    aliases: set[tuple[str, str]] = field(default_factory=set)  # (kind, value) of leads merged into it
    consents: dict[str, bool] = field(default_factory=dict)  # purpose → latest granted (when loaded)


class LeadBook:
    """The batch's leads indexed the way `find_lead` looks them up (email, then merged-away email,
    then oldest by phone, then merged-away phone, then visitor id)."""

    def __init__(self) -> None:
        self.by_email: dict[str, BatchLead] = {}
        self.by_phone: dict[str, list[BatchLead]] = {}
        self.by_alias: dict[tuple[str, str], BatchLead] = {}  # (kind, value) merged away → oldest survivor
        self.by_visitor: dict[str, BatchLead] = {}  # visitor id → its live lead
        self.known_visitors: set[str] = set()  # visitor ids already stitched to any lead
        self.taken: set[str] = set()  # emails of merged or erased leads (unique, yet not findable)

    def add(self, lead: BatchLead) -> None:
        if email := lead.values.get("email"):
            self.by_email[email] = lead
        if phone := lead.values.get("phone"):
            self._index_phone(lead, phone)

    def _index_phone(self, lead: BatchLead, phone: str) -> None:
        same = self.by_phone.setdefault(phone, [])
        same.append(lead)
        same.sort(key=lambda x: (x.created_at, x.id))

    def add_alias(self, lead: BatchLead, kind: str, value: str) -> None:
        lead.aliases.add((kind, value))
        known = self.by_alias.get((kind, value))
        if known is None or (lead.created_at, lead.id) < (known.created_at, known.id):
            self.by_alias[(kind, value)] = lead

    def find(self, email: str | None, phone: str | None, visitor_id: str | None = None) -> BatchLead | None:
        if email and (lead := self.by_email.get(email) or self.by_alias.get(("email", email))):
            return lead
        if phone:
            same = self.by_phone.get(phone) or []
            for lead in (same[0] if same else None, self.by_alias.get(("phone", phone))):
                if lead is not None and (not email or lead.values.get("email") in (None, email)):
                    return lead
        lead = self.by_visitor.get(visitor_id) if visitor_id else None
        if lead is not None and (not email or lead.values.get("email") in (None, email)):
            return lead
        return None

    def set_value(self, lead: BatchLead, key: str, value: Any) -> None:
        old = lead.values.get(key)
        lead.values[key] = value
        if key == "email":
            if old:
                self.by_email.pop(old, None)
            self.by_email[value] = lead
        elif key == "phone":
            if old and lead in self.by_phone.get(old, []):
                self.by_phone[old].remove(lead)
            self._index_phone(lead, value)


@dataclass
class BatchRows:
    """What a batch writes besides the leads themselves."""

    touchpoints: list[dict[str, Any]] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)
    consents: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    new_visitors: dict[str, dict[str, Any]] = field(default_factory=dict)  # visitor id → row
    moved_visitors: dict[str, uuid.UUID] = field(default_factory=dict)  # known visitor id → its new lead

    def add(self, interaction: Interaction, at: datetime) -> None:
        """One post's touchpoint, activity, consents and events."""
        self.touchpoints.append(interaction.touchpoint)
        self.activities.append(interaction.activity)
        self.consents += interaction.consents
        for payload in interaction.events:
            self.event(payload, at)

    def event(self, payload: EventPayload, at: datetime) -> None:
        self.events.append(outbox_row(payload, at))


def merge(book: LeadBook, lead: BatchLead, profile: dict[str, Any], custom: dict[str, Any], tags: list[str],
          overwrite: bool) -> list[str]:
    """Apply one intake's values to the lead as `record_intake` does (`lead_changes`); returns the
    fields written, as `lead.updated` names them."""
    changes = lead_changes(lead.values, lead.custom, lead.tags, profile, custom, tags, overwrite, lead.aliases)
    for key, value in changes.values.items():
        book.set_value(lead, key, value)
        lead.changed.add(key)
    if changes.custom is not None:
        lead.custom = changes.custom
        lead.changed.add("custom")
    lead.tags.update(changes.tags)
    lead.new_tags += changes.tags
    return changes.changed


def stitch(book: LeadBook, rows: BatchRows, visitor_id: str, lead: BatchLead, at: datetime) -> None:
    """Tie a visitor id to a lead, as `stitch_visitor` does (a newer identity wins the browser)."""
    if book.by_visitor.get(visitor_id) is lead:
        return
    book.by_visitor[visitor_id] = lead
    if visitor_id in rows.new_visitors:
        rows.new_visitors[visitor_id]["lead_id"] = lead.id
    elif visitor_id in book.known_visitors:
        rows.moved_visitors[visitor_id] = lead.id
    else:
        rows.new_visitors[visitor_id] = {"visitor_id": visitor_id, "lead_id": lead.id, "first_seen_at": at}


async def begin_batch(session: AsyncSession, identities: list[str]) -> None:
    """Lock the batch's identities (emails, phones, visitor ids) until commit, as `record_intake`
    does for one, in one round trip (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers)."""
    await lock_keys(session, *(f"lead:{k}" for k in identities))


@dataclass(slots=True)
class _Found:
    """A lead row one of the batch's identities belongs to, with what the batch needs about it."""

    id: uuid.UUID
    profile: dict[str, Any]
    custom: dict[str, Any]
    created_at: datetime
    gone: bool  # merged into another lead, or erased
    aliases: list[tuple[str, str]]  # (kind, value) of the batch's identities merged into it
    visitors: list[str]  # the batch's visitor ids stitched to it
    tags: list[str]
    consents: list[tuple[str, bool]]  # (purpose, granted), oldest first (when asked)
    sources: list[tuple[str | None, str | None]]  # (source, campaign) of its import touchpoints (when asked)


async def load_book(
    session: AsyncSession, emails: list[str], phones: list[str], visitor_ids: list[str] | None = None,
    import_sources: bool = False, consents: bool = False,
) -> LeadBook:
    """The leads the batch's identities already belong to, with their tags (and, when asked, their
    import sources and latest consent per purpose)."""
    visitor_ids = visitor_ids or []
    book = LeadBook()
    if not (emails or phones or visitor_ids):
        return book
    find = _found_postgresql if session.get_bind().dialect.name == "postgresql" else _found_elsewhere
    live: list[BatchLead] = []
    found = await find(session, emails, phones, visitor_ids, import_sources, consents)
    for row in found:
        book.known_visitors.update(row.visitors)  # a visitor of a merged or erased lead is known, yet finds no one
        if row.gone:
            if row.profile["email"]:
                book.taken.add(row.profile["email"])
            continue
        lead = BatchLead(
            id=row.id, values=row.profile, custom=row.custom, tags=set(row.tags), created_at=row.created_at,
            sources=set(row.sources),
        )
        lead.consents = dict(row.consents)  # the latest row per purpose wins
        live.append(lead)
    by_id = {lead.id: lead for lead in live}
    for lead in sorted(live, key=lambda x: (x.created_at, x.id)):
        book.add(lead)
    for row in found:
        if (survivor := by_id.get(row.id)) is not None:
            for kind, value in row.aliases:
                book.add_alias(survivor, kind, value)
            for visitor_id in row.visitors:
                book.by_visitor[visitor_id] = survivor
    return book


def _found(
    lead_id: uuid.UUID, values: Sequence[Any], custom: Any, created_at: datetime, merged_into_id: Any, erased_at: Any
) -> _Found:
    if isinstance(custom, str):
        custom = json.loads(custom)
    return _Found(
        id=lead_id, profile=dict(zip(PROFILE_FIELDS, values, strict=True)), custom=dict(custom or {}),
        created_at=clock.as_utc(created_at), gone=merged_into_id is not None or erased_at is not None,
        aliases=[], visitors=[], tags=[], consents=[], sources=[],
    )


async def _found_postgresql(
    session: AsyncSession, emails: list[str], phones: list[str], visitor_ids: list[str],
    import_sources: bool, consents: bool,
) -> list[_Found]:
    """One statement, one round trip: a batch waits on the network, not on the database, so the
    leads, their matching aliases and visitors, tags, consents and import sources come back as
    one row per lead. It runs straight on the session's asyncpg connection."""
    driver = await driver_connection(session)
    found = []
    for lead_id, *values, custom, created_at, merged, erased, aliases, visitors, tags, consent_rows, sources in (
        await driver.fetch(_BOOK_SQL, emails, phones, visitor_ids, consents, import_sources)
    ):
        row = _found(lead_id, values, custom, created_at, merged, erased)
        row.aliases = list(map(_pair, aliases))
        row.visitors, row.tags = list(visitors), list(tags)
        row.consents = [(purpose, granted) for purpose, granted in json.loads(consent_rows or "[]")]
        row.sources = [(source, campaign) for source, campaign in json.loads(sources or "[]")]
        found.append(row)
    return found


def _pair(alias: str) -> tuple[str, str]:
    kind, _, value = alias.partition(":")
    return kind, value


def _probe(keys: str, lookup: str) -> str:
    """The rows `lookup` finds for each of the array `keys` (as k.v), one index probe per key.

    Written as `column = ANY(keys)`, a batch's hundred emails or phones were looked up by reading
    the whole table whenever the planner priced that below a hundred probes: below ~50,000 leads,
    with or without statistics (measured at 21,000 leads: 3.8-6.9 ms a batch instead of 0.3 ms).
    OFFSET 0 keeps the lookup a subquery run per key, so it stays an index probe at any size."""
    return f"SELECT f.* FROM unnest({keys}::varchar[]) AS k(v), LATERAL ({lookup} OFFSET 0) AS f"


_BOOK_SQL = f"""
SELECT l.id, {", ".join(f"l.{k}" for k in PROFILE_FIELDS)}, l.custom, l.created_at, l.merged_into_id, l.erased_at,
    ARRAY(SELECT a.kind || ':' || a.value FROM lead_aliases a WHERE a.lead_id = l.id AND (
        (a.kind = 'email' AND a.value = ANY($1::varchar[])) OR (a.kind = 'phone' AND a.value = ANY($2::varchar[])))),
    ARRAY(SELECT v.visitor_id FROM visitors v WHERE v.lead_id = l.id AND v.visitor_id = ANY($3::varchar[])),
    ARRAY(SELECT t.tag FROM lead_tags t WHERE t.lead_id = l.id),
    CASE WHEN $4 THEN (SELECT json_agg(json_build_array(c.purpose, c.granted) ORDER BY c.occurred_at, c.id)
                       FROM consents c WHERE c.lead_id = l.id)::text END,
    CASE WHEN $5 THEN (SELECT json_agg(json_build_array(s.source, s.campaign)) FROM (
        SELECT DISTINCT tp.source, tp.campaign FROM touchpoints tp
        WHERE tp.lead_id = l.id AND tp.channel = '{Channel.import_.value}') AS s)::text END
FROM (
    {_probe("$1", "SELECT id FROM leads WHERE email = k.v")}
    UNION {_probe("$2", "SELECT id FROM leads WHERE phone = k.v")}
    UNION {_probe("$1", "SELECT lead_id FROM lead_aliases WHERE kind = 'email' AND value = k.v")}
    UNION {_probe("$2", "SELECT lead_id FROM lead_aliases WHERE kind = 'phone' AND value = k.v")}
    UNION {_probe("$3", "SELECT lead_id FROM visitors WHERE visitor_id = k.v")}
) AS found(id), LATERAL (SELECT * FROM leads WHERE id = found.id OFFSET 0) AS l
"""


async def _found_elsewhere(
    session: AsyncSession, emails: list[str], phones: list[str], visitor_ids: list[str],
    import_sources: bool, consents: bool,
) -> list[_Found]:
    """The same look-up as a few plain statements (SQLite: no network between us and the file)."""
    reads = _reads()

    async def rows(name: str, **params: Any) -> Sequence[Any]:
        return (await session.execute(reads[name], params)).all()

    aliases = await rows("aliases", emails=emails, phones=phones) if emails or phones else []
    visitors = await rows("visitors", visitors=visitor_ids) if visitor_ids else []
    ids = sorted({lead_id for *_, lead_id in aliases} | {lead_id for _, lead_id in visitors})
    found: dict[uuid.UUID, _Found] = {}
    for lead_id, *values, custom, created_at, merged, erased in await rows(
        "leads", emails=emails, phones=phones, ids=ids
    ):
        found[lead_id] = _found(lead_id, values, custom, created_at, merged, erased)
    if not found:
        return []
    every = list(found)
    for kind, value, lead_id in aliases:
        found[lead_id].aliases.append((kind, value))
    for visitor_id, lead_id in visitors:
        found[lead_id].visitors.append(visitor_id)
    for lead_id, tag in await rows("tags", ids=every):
        found[lead_id].tags.append(tag)
    if import_sources:
        for lead_id, source, campaign in await rows("import_sources", ids=every):
            found[lead_id].sources.append((source, campaign))
    if consents:
        for lead_id, purpose, granted in await rows("consents", ids=every):
            found[lead_id].consents.append((purpose, granted))
    return list(found.values())


@lru_cache(maxsize=1)
def _reads() -> dict[str, Select[Any]]:
    """The look-ups of `_found_elsewhere`, built once."""
    a, lt, tp, c = aliases_t.c, leads_t.c, touchpoints_t.c, consents_t.c

    def one_of(column: Any, name: str) -> Any:
        return column.in_(bindparam(name, expanding=True))

    return {
        "aliases": select(a.kind, a.value, a.lead_id).where(or_(
            and_(a.kind == "email", one_of(a.value, "emails")), and_(a.kind == "phone", one_of(a.value, "phones")),
        )),
        "visitors": select(visitors_t.c.visitor_id, visitors_t.c.lead_id).where(one_of(visitors_t.c.visitor_id,
                                                                                      "visitors")),
        "leads": select(lt.id, *(lt[k] for k in PROFILE_FIELDS), lt.custom, lt.created_at, lt.merged_into_id,
                        lt.erased_at)
        .where(or_(one_of(lt.email, "emails"), one_of(lt.phone, "phones"), one_of(lt.id, "ids"))),
        "tags": select(tags_t.c.lead_id, tags_t.c.tag).where(one_of(tags_t.c.lead_id, "ids")),
        "import_sources": select(tp.lead_id, tp.source, tp.campaign)
        .where(one_of(tp.lead_id, "ids"), tp.channel == Channel.import_.value).distinct(),
        "consents": select(c.lead_id, c.purpose, c.granted).where(one_of(c.lead_id, "ids"))
        .order_by(c.occurred_at, c.id),
    }


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
