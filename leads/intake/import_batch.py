"""One batch of import rows against the database: find the leads their emails and phones belong to,
merge each row as `record_intake` would, and write it all with set-based statements.

Imports fill empty fields only by default: a list from an old CRM or an exhibition is usually
older and less trustworthy than what the person typed into our form, so it completes a lead and
does not overwrite it. `overwrite=True` is for a file that is the newer truth (a cleaned CRM
export). A row that would change nothing on a lead that already has a touchpoint from the same
import source and campaign is skipped, so running the same file twice adds no second touchpoint,
activity or event.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Table, and_, any_, bindparam, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import JSONType, lock_keys
from core.ids import new_id
from core.outbox import OutboxEvent
from leads.intake.import_rows import ImportOptions, ImportRow, RowError
from leads.models import Activity, Channel, Lead, LeadAlias, LeadTag, Touchpoint
from leads.privacy import identity_hash
from leads.schemas import PROFILE_FIELDS

ACTIVITY = "imported"

leads_t = cast(Table, Lead.__table__)
tags_t = cast(Table, LeadTag.__table__)
aliases_t = cast(Table, LeadAlias.__table__)
touchpoints_t = cast(Table, Touchpoint.__table__)
activities_t = cast(Table, Activity.__table__)
outbox_t = cast(Table, OutboxEvent.__table__)


@dataclass(eq=False, slots=True)
class _Lead:
    """A lead as the batch sees it: loaded from the database or planned by an earlier row."""

    id: uuid.UUID
    values: dict[str, Any]
    custom: dict[str, Any]
    tags: set[str]
    created_at: datetime
    sources: set[tuple[str | None, str | None]]  # (source, campaign) of its import touchpoints
    new: bool = False
    virtual: bool = False  # dry run: a lead an earlier batch would have created
    changed: set[str] = field(default_factory=set)
    new_tags: list[str] = field(default_factory=list)
    touched: bool = False
    aliases: set[tuple[str, str]] = field(default_factory=set)  # (kind, value) of leads merged into it


class _LeadBook:
    """The batch's leads indexed the way `find_lead` looks them up (email, then merged-away email,
    then oldest by phone, then merged-away phone)."""

    def __init__(self) -> None:
        self.by_email: dict[str, _Lead] = {}
        self.by_phone: dict[str, list[_Lead]] = {}
        self.by_alias: dict[tuple[str, str], _Lead] = {}  # (kind, value) merged away → oldest survivor
        self.taken: set[str] = set()  # emails of merged or erased leads (unique, yet not findable)

    def add(self, lead: _Lead) -> None:
        if email := lead.values.get("email"):
            self.by_email[email] = lead
        if phone := lead.values.get("phone"):
            self._index_phone(lead, phone)

    def _index_phone(self, lead: _Lead, phone: str) -> None:
        same = self.by_phone.setdefault(phone, [])
        same.append(lead)
        same.sort(key=lambda x: (x.created_at, x.id))

    def add_alias(self, lead: _Lead, kind: str, value: str) -> None:
        lead.aliases.add((kind, value))
        known = self.by_alias.get((kind, value))
        if known is None or (lead.created_at, lead.id) < (known.created_at, known.id):
            self.by_alias[(kind, value)] = lead

    def find(self, email: str | None, phone: str | None) -> _Lead | None:
        if email and (lead := self.by_email.get(email) or self.by_alias.get(("email", email))):
            return lead
        if phone:
            same = self.by_phone.get(phone) or []
            for lead in (same[0] if same else None, self.by_alias.get(("phone", phone))):
                if lead is not None and (not email or lead.values.get("email") in (None, email)):
                    return lead
        return None

    def set_value(self, lead: _Lead, key: str, value: Any) -> None:
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
class BatchOutcome:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    new_identities: list[tuple[str | None, str | None]] = field(default_factory=list)


class BatchWriter:
    """Applies the batches of one import run; remembers, in a dry run, what earlier batches would
    have created."""

    def __init__(
        self, run_id: uuid.UUID, filename: str, options: ImportOptions, secrets: list[str],
        columns_by_target: dict[str, str],
    ) -> None:
        self.run_id = run_id
        self.filename = filename
        self.options = options
        self.secrets = secrets
        self.columns_by_target = columns_by_target
        # Dry run only: identities an earlier batch would have created (strings, not leads, so
        # memory stays small); a later row with one of them counts as an update.
        self.planned_emails: set[str] = set()
        self.planned_phones: set[str] = set()

    def plan(self, identities: list[tuple[str | None, str | None]]) -> None:
        """Dry run: a committed batch's new leads, as a later batch should find them."""
        for email, phone in identities:
            if email:
                self.planned_emails.add(email)
            if phone:
                self.planned_phones.add(phone)

    async def apply(self, session: AsyncSession, rows: list[ImportRow]) -> BatchOutcome:
        """Plan every row against the batch's leads as `record_intake` would, then write."""
        now = clock.now()
        emails = sorted({r.profile["email"] for r in rows if r.profile.get("email")})
        phones = sorted({r.profile["phone"] for r in rows if r.profile.get("phone")})
        if session.get_bind().dialect.name == "postgresql":
            # The lookups below run with the same statement text every batch; once PostgreSQL
            # switches to a generic plan it cannot hash the id arrays, and on a young table
            # (no statistics yet) it scans every lead per batch. Custom plans cost ~1 ms.
            await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        if not self.options.dry_run:
            await lock_keys(session, *[f"lead:{k}" for k in (*emails, *phones)])
        book = await self.load(session, emails, phones)
        erased = await self.erased(session, emails, phones)
        outcome = BatchOutcome()
        touchpoints: list[dict[str, Any]] = []
        activities: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        touched: dict[uuid.UUID, _Lead] = {}
        for row in rows:
            email, phone = row.profile.get("email"), row.profile.get("phone")
            if email and email not in book.by_email and ("email", email) not in book.by_alias and email in book.taken:
                outcome.errors.append(RowError(
                    row.line, "email", "this email belongs to a merged or erased lead",
                    self.columns_by_target.get("email"),
                ))
                continue
            lead = book.find(email, phone)
            created = lead is None
            if lead is None and (gone := [k for k in ("email", "phone") if row.profile.get(k) in erased]):
                # Like the API without a consent (409): an erased person does not come back silently.
                outcome.errors.append(RowError(
                    row.line, gone[0], "this person asked to be erased; add them back only with a new consent",
                    self.columns_by_target.get(gone[0]),
                ))
                continue
            if lead is None:
                lead = _Lead(
                    id=new_id(), values={"customer_status": "new"}, custom={}, tags=set(),
                    created_at=now, sources=set(), new=True,
                )
                book.add(lead)
            changed = self.merge(book, lead, row)
            where = (row.origin["source"], row.origin["campaign"])
            if not created and not changed and where in lead.sources:
                outcome.skipped += 1
                continue
            lead.sources.add(where)
            lead.touched = True
            touched[lead.id] = lead
            touchpoint_id, activity_id = new_id(), new_id()
            touchpoints.append({
                "id": touchpoint_id, "lead_id": lead.id, "visitor_id": None, "channel": Channel.import_.value,
                **row.origin, "referrer": None, "landing_page": None, "occurred_at": now,
            })
            activities.append({
                "id": activity_id, "lead_id": lead.id, "visitor_id": None, "type": ACTIVITY,
                "touchpoint_id": touchpoint_id, "occurred_at": now,
                "data": {"import_id": str(self.run_id), "file": self.filename, "line": row.line},
            })
            lead_event = {"lead_id": str(lead.id), "channel": Channel.import_.value, "campaign": row.origin["campaign"]}
            events.append(_event("lead.created" if created else "lead.updated", lead_event, now))
            events.append(_event("lead.activity", {
                "lead_id": str(lead.id), "activity_id": str(activity_id), "type": ACTIVITY,
                "occurred_at": now.isoformat(),
            }, now))
            if created:
                outcome.created += 1
            else:
                outcome.updated += 1
        for lead in touched.values():
            if lead.new:
                outcome.new_identities.append((lead.values.get("email"), lead.values.get("phone")))
        if not self.options.dry_run:
            await _write(session, list(touched.values()), touchpoints, activities, events, now)
        return outcome

    def merge(self, book: _LeadBook, lead: _Lead, row: ImportRow) -> bool:
        """Apply the row to the lead as `record_intake` does; True when anything changed."""
        overwrite = self.options.overwrite
        changed = False
        for key, value in row.profile.items():
            current = lead.values.get(key)
            if (key, value) in lead.aliases and current not in (None, ""):
                continue  # an address it had before a merge never replaces the current one
            if (overwrite or current in (None, "")) and current != value:
                book.set_value(lead, key, value)
                lead.changed.add(key)
                changed = True
        if row.custom:
            merged = {**lead.custom, **row.custom} if overwrite else {**row.custom, **lead.custom}
            if merged != lead.custom:
                lead.custom = merged
                lead.changed.add("custom")
                changed = True
        for tag in row.tags:
            if tag not in lead.tags:
                lead.tags.add(tag)
                lead.new_tags.append(tag)
                changed = True
        return changed

    async def load(self, session: AsyncSession, emails: list[str], phones: list[str]) -> _LeadBook:
        """The leads the batch's identities already belong to, with their tags and import sources."""
        book = _LeadBook()
        aliases = (
            await session.execute(
                select(aliases_t.c.kind, aliases_t.c.value, aliases_t.c.lead_id).where(or_(
                    and_(aliases_t.c.kind == "email", _one_of(session, aliases_t.c.value, emails)),
                    and_(aliases_t.c.kind == "phone", _one_of(session, aliases_t.c.value, phones)),
                ))
            )
        ).all()
        columns = [leads_t.c[k] for k in PROFILE_FIELDS]
        identities = [_one_of(session, leads_t.c.email, emails), _one_of(session, leads_t.c.phone, phones)]
        if aliases:
            identities.append(_one_of(session, leads_t.c.id, sorted({a.lead_id for a in aliases})))
        found = (
            await session.execute(
                select(leads_t.c.id, *columns, leads_t.c.custom, leads_t.c.created_at,
                       leads_t.c.merged_into_id, leads_t.c.erased_at)
                .where(or_(*identities))
            )
        ).all()
        live: dict[uuid.UUID, _Lead] = {}
        for row in found:
            if row.merged_into_id is not None or row.erased_at is not None:
                if row.email:
                    book.taken.add(row.email)
                continue
            live[row.id] = _Lead(
                id=row.id, values={k: getattr(row, k) for k in PROFILE_FIELDS},
                custom=dict(row.custom or {}), tags=set(), created_at=row.created_at, sources=set(),
            )
        if live:
            ids = list(live)
            for lead_id, tag in await session.execute(
                select(tags_t.c.lead_id, tags_t.c.tag).where(_one_of(session, tags_t.c.lead_id, ids))
            ):
                live[lead_id].tags.add(tag)
            for lead_id, source, campaign in await session.execute(
                select(touchpoints_t.c.lead_id, touchpoints_t.c.source, touchpoints_t.c.campaign)
                .where(_one_of(session, touchpoints_t.c.lead_id, ids), touchpoints_t.c.channel == Channel.import_.value)
                .distinct()
            ):
                live[lead_id].sources.add((source, campaign))
        for lead in sorted(live.values(), key=lambda x: (x.created_at, x.id)):
            book.add(lead)
        for kind, value, lead_id in aliases:
            if lead_id in live:
                book.add_alias(live[lead_id], kind, value)
        if self.options.dry_run:
            self.add_planned(book, emails, phones)
        return book

    async def erased(self, session: AsyncSession, emails: list[str], phones: list[str]) -> set[str]:
        """The batch's emails and phones that belonged to erased people (by keyed hash)."""
        by_hash = {
            identity_hash(secret, kind, value): value
            for kind, values in (("email", emails), ("phone", phones))
            for value in values
            for secret in self.secrets
        }
        if not by_hash:
            return set()
        hashes = list(by_hash)
        found = await session.execute(
            select(leads_t.c.erased_email_hash, leads_t.c.erased_phone_hash).where(
                or_(_one_of(session, leads_t.c.erased_email_hash, hashes),
                    _one_of(session, leads_t.c.erased_phone_hash, hashes),)
            )
        )
        return {by_hash[h] for pair in found for h in pair if h in by_hash}

    def add_planned(self, book: _LeadBook, emails: list[str], phones: list[str]) -> None:
        for email in emails:
            if email in self.planned_emails and email not in book.by_email:
                book.add(_Lead(new_id(), {"email": email}, {}, set(), clock.now(), set(), virtual=True))
        for phone in phones:
            if phone in self.planned_phones and phone not in book.by_phone:
                book.add(_Lead(new_id(), {"phone": phone}, {}, set(), clock.now(), set(), virtual=True))


def _one_of(session: AsyncSession, column: Any, values: list[Any]) -> Any:
    """`column IN (…)`; on PostgreSQL `= ANY(array)`, one parameter instead of thousands (the
    expanding IN costs more to compile than to run at batch size)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


def _event(name: str, payload: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"id": new_id(), "name": name, "payload": payload, "created_at": at, "relayed_at": None}


async def _write(
    session: AsyncSession,
    leads: list[_Lead],
    touchpoints: list[dict[str, Any]],
    activities: list[dict[str, Any]],
    events: list[dict[str, Any]],
    now: datetime,
) -> None:
    """Set-based writes: one multi-row INSERT per table, one executemany UPDATE per column set."""
    new = [lead for lead in leads if lead.new]
    if new:
        await _insert(session, leads_t, [
            {
                **{k: lead.values.get(k) for k in PROFILE_FIELDS},
                "id": lead.id, "customer_status": lead.values.get("customer_status") or "new",
                "custom": lead.custom, "source_channel": Channel.import_.value,
                "created_at": now, "updated_at": now,
            }
            for lead in new
        ])
    # Only the columns this import changed are written, so a concurrent edit of another field
    # of the same lead (which takes no identity lock) is not overwritten with a stale value.
    groups: dict[tuple[str, ...], list[_Lead]] = {}
    for lead in leads:
        if not lead.new and not lead.virtual and lead.touched:
            groups.setdefault(tuple(sorted(lead.changed)), []).append(lead)
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
    tag_rows = [{"lead_id": lead.id, "tag": tag} for lead in leads for tag in lead.new_tags]
    inserts = ((tags_t, tag_rows), (touchpoints_t, touchpoints), (activities_t, activities), (outbox_t, events))
    for table, rows in inserts:
        if rows:
            await _insert(session, table, rows)


async def _insert(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """Many rows in one statement. On PostgreSQL: `INSERT … SELECT FROM unnest(<one array per
    column>)`, a single execution instead of one per row (about 4x less server time than
    executemany, and no per-row parameter processing in Python)."""
    if session.get_bind().dialect.name != "postgresql":
        await session.execute(insert(table), rows)
        return
    names = list(rows[0])
    arrays, selects, params = [], [], {}
    for i, name in enumerate(names):
        column = table.c[name]
        values = [row[name] for row in rows]
        if isinstance(column.type, JSON) or column.type is JSONType:
            params[f"p{i}"] = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
            arrays.append(f"CAST(:p{i} AS TEXT[])")
            selects.append(f"CAST(c{i} AS JSONB)")
        else:
            params[f"p{i}"] = values
            arrays.append(f"CAST(:p{i} AS {column.type.compile(dialect=session.get_bind().dialect)}[])")
            selects.append(f"c{i}")
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    columns = ", ".join(f'"{n}"' for n in names)
    await session.execute(
        text(
            f'INSERT INTO "{table.name}" ({columns}) '
            f"SELECT {', '.join(selects)} FROM unnest({', '.join(arrays)}) AS t({aliases})"
        ),
        params,
    )
