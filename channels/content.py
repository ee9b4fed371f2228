"""What a batch of messages is made of: their templates (saved ones by key, the built-in system ones
by `system:` key) and each recipient's template context (lead, campaign, sender, what the other
domains add through the registry, such as the score, and the caller's extra values). Loaded in a
few statements per batch."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.email.prepare import Mailer
from channels.models import templates_t
from channels.starters import SYSTEM
from channels.templates import EmailTemplate, Kind, compile_text
from core.db import one_of
from core.domains import template_contexts
from core.errors import Invalid, NotFound
from leads.models import leads_t

LEAD_FIELDS = ("first_name", "last_name", "email", "phone", "company", "city", "region", "country", "custom")


@dataclass(frozen=True)
class Stored:
    """A template as the sender uses it."""

    key: str
    channel: str
    kind: str
    topic: str
    subject: str
    preheader: str
    body: str


@dataclass
class Material:
    templates: dict[str, Stored]
    leads: dict[uuid.UUID, Row[Any]]
    added: dict[str, Any]  # what the other domains add when they know nothing of the lead
    added_for: dict[uuid.UUID, dict[str, Any]]  # … and for each lead
    sender: dict[str, str]
    topics: dict[uuid.UUID, str]  # message id → its template's topic

    def template(self, row: Row[Any]) -> Stored:
        if not row.template:
            raise Invalid("the message names no template", field="template")
        if (found := self.templates.get(row.template)) is None:
            raise NotFound(f"no template {row.template!r}", field="template")
        return found

    def email_template(self, row: Row[Any]) -> EmailTemplate:
        stored = self.template(row)
        kind: Kind = "marketing" if row.kind == "marketing" else "transactional"
        return EmailTemplate(subject=stored.subject, body=stored.body, preheader=stored.preheader, kind=kind)

    def text(self, row: Row[Any], context: dict[str, Any]) -> str:
        """An SMS, messenger or postal text: the template's, or the payload's own `text`."""
        if not row.template:
            return str((row.payload or {}).get("text") or "")
        return compile_text(self.template(row).body).render(context)

    def context(self, row: Row[Any]) -> dict[str, Any]:
        lead = self.leads.get(row.lead_id) if row.lead_id is not None else None
        fields: dict[str, Any] = {k: "" for k in LEAD_FIELDS}
        fields["custom"] = {}
        if lead is not None:
            fields.update({k: getattr(lead, k) or ("" if k != "custom" else {}) for k in LEAD_FIELDS})
        elif row.channel == "email":
            fields["email"] = row.recipient
        added = self.added_for.get(row.lead_id, self.added) if row.lead_id is not None else self.added
        extra = (row.payload or {}).get("context") or {}
        return {
            "lead": fields, **added, "campaign": {"name": row.campaign or ""},
            "sender": dict(self.sender), **(extra if isinstance(extra, dict) else {}),
        }

    def postal_address(self, row: Row[Any]) -> dict[str, Any]:
        """The lead's postal address as far as nurture holds it (custom fields postal_code and address)."""
        lead = self.leads.get(row.lead_id) if row.lead_id is not None else None
        if lead is None:
            return {}
        custom = lead.custom or {}
        name = " ".join(p for p in (lead.first_name, lead.last_name) if p)
        return {
            "name": name, "country": lead.country or "", "region": lead.region or "", "city": lead.city or "",
            "postal_code": str(custom.get("postal_code") or ""), "address": str(custom.get("address") or ""),
        }


async def load(session: AsyncSession, rows: Sequence[Row[Any]], mailer: Mailer) -> Material:
    keys = list({r.template for r in rows if r.template})
    templates = await stored_templates(session, keys)
    lead_ids = list({r.lead_id for r in rows if r.lead_id is not None})
    leads: dict[uuid.UUID, Row[Any]] = {}
    contexts = template_contexts()
    added: dict[str, Any] = {k: v for c in contexts for k, v in c.defaults.items()}
    added_for: dict[uuid.UUID, dict[str, Any]] = {}
    if lead_ids:
        l = leads_t.c  # noqa: E741
        found = await session.execute(select(l.id, *(l[k] for k in LEAD_FIELDS)).where(one_of(session, l.id, lead_ids)))
        leads = {r.id: r for r in found}
        for context in contexts:
            for lead_id, values in (await context.load(session, lead_ids)).items():
                added_for.setdefault(lead_id, dict(added)).update(values)
    topics = {r.id: templates[r.template].topic for r in rows if r.template in templates}
    sender = {"name": mailer.from_name, "address": mailer.from_address}
    return Material(templates, leads, added, added_for, sender, topics)


async def stored_templates(session: AsyncSession, keys: Sequence[str]) -> dict[str, Stored]:
    found = {k: Stored(k, "email", s.kind, "", s.subject, s.preheader, s.body) for k in keys if (s := SYSTEM.get(k))}
    wanted = [k for k in keys if k not in SYSTEM]
    if wanted:
        c = templates_t.c
        rows = await session.execute(
            select(c.key, c.channel, c.kind, c.topic, c.subject, c.preheader, c.body)
            .where(one_of(session, c.key, wanted), c.archived_at.is_(None))
        )
        found.update({r.key: Stored(r.key, r.channel, r.kind, r.topic or "", r.subject, r.preheader, r.body)
                      for r in rows})
    return found
