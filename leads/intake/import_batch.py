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

import uuid
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import one_of
from core.ids import new_id
from leads.intake.batch.book import BatchLead, LeadBook, merge
from leads.intake.batch.lookup import begin_batch, load_book
from leads.intake.batch.rows import BatchRows
from leads.intake.batch.writer import write_batch
from leads.intake.import_rows import ImportOptions, ImportRow, RowError
from leads.intake.interaction import lead_post
from leads.models import leads_t
from leads.privacy import identity_hash

ACTIVITY = "imported"


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
        await begin_batch(session, [] if self.options.dry_run else [*emails, *phones])
        book = await load_book(session, emails, phones, import_sources=True)
        if self.options.dry_run:
            self.add_planned(book, emails, phones)
        erased = await self.erased(session, emails, phones)
        outcome = BatchOutcome()
        rows_out = BatchRows()
        touched: dict[uuid.UUID, BatchLead] = {}
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
                lead = BatchLead(
                    id=new_id(), values={"customer_status": "new"}, custom={}, tags=set(),
                    created_at=now, sources=set(), new=True,
                )
                book.add(lead)
            changed = merge(book, lead, row.profile, row.custom, row.tags, self.options.overwrite)
            where = (row.origin.source, row.origin.campaign)
            if not created and not changed and where in lead.sources:
                outcome.skipped += 1
                continue
            lead.sources.add(where)
            lead.touched = True
            touched[lead.id] = lead
            data = {"import_id": str(self.run_id), "file": self.filename, "line": row.line}
            rows_out.add(lead_post(lead.id, created, changed, row.origin, ACTIVITY, data, now), now)
            if created:
                outcome.created += 1
            else:
                outcome.updated += 1
        for lead in touched.values():
            if lead.new:
                outcome.new_identities.append((lead.values.get("email"), lead.values.get("phone")))
        if not self.options.dry_run:
            await write_batch(session, list(touched.values()), rows_out, now)
        return outcome

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
                or_(one_of(session, leads_t.c.erased_email_hash, hashes),
                    one_of(session, leads_t.c.erased_phone_hash, hashes),)
            )
        )
        return {by_hash[h] for pair in found for h in pair if h in by_hash}

    def add_planned(self, book: LeadBook, emails: list[str], phones: list[str]) -> None:
        for email in emails:
            if email in self.planned_emails and email not in book.by_email:
                book.add(BatchLead(new_id(), {"email": email}, {}, set(), clock.now(), set(), virtual=True))
        for phone in phones:
            if phone in self.planned_phones and phone not in book.by_phone:
                book.add(BatchLead(new_id(), {"phone": phone}, {}, set(), clock.now(), set(), virtual=True))


