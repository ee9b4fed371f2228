"""The leads a batch concerns, as the batch sees them (BatchLead), indexed the way `find_lead` looks
them up (LeadBook), and what one intake does to them: its values merged, its browser stitched."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leads.intake.batch.rows import BatchRows
from leads.intake.interaction import lead_changes
from leads.models import Channel


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
