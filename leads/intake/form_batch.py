"""Form posts recorded in groups (core.groupcommit): each post still gets its 201/303 only after
the transaction holding its lead has committed, but the posts that arrive while one transaction is
being written share the next one. A batch that fails as a whole is recorded again post by post
through `submit_form`, so one bad post fails alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Database
from core.groupcommit import GroupCommit
from core.ids import new_id
from core.metrics import LEADS_CREATED
from leads.intake.batch.book import BatchLead, merge, stitch
from leads.intake.batch.lookup import load_book
from leads.intake.batch.rows import BatchRows
from leads.intake.batch.writer import write_batch
from leads.intake.interaction import lead_post, optin_request
from leads.intake.submissions import ACTIVITY, FormPost, submit_form
from leads.models import Channel

MAX_BATCH = 100
WRITERS = 2  # transactions in flight at once: one is written while the next batch gathers (SQLite: one)


class OneByOne(Exception):
    """A post the batch leaves to `submit_form` (the rare cases it does not plan itself)."""


@dataclass
class Recorded:
    lead_id: uuid.UUID
    created: bool


class FormBatcher(GroupCommit[FormPost, Recorded]):
    """Collects the posts of one process and writes them in as few transactions as the load allows."""

    def __init__(self, db: Database, max_batch: int = MAX_BATCH, writers: int = WRITERS) -> None:
        super().__init__(db, Channel.form.value, record_posts, _record_one, max_batch, writers, written=_count,
                         locks=identities, planned_once=True)

    async def record(self, post: FormPost) -> Recorded:
        """Record the post; returns once it is committed (raises what recording it alone raises)."""
        return await self.write(post)


async def _record_one(session: AsyncSession, post: FormPost) -> Recorded:
    result = await submit_form(session, post)
    return Recorded(result.lead.id, result.created)


def _count(results: list[Recorded]) -> None:
    LEADS_CREATED.labels(Channel.form.value).inc(sum(r.created for r in results))


def identities(posts: list[FormPost]) -> list[str]:
    """The lock keys of the posts' emails, phones and visitor ids (as `record_intake` locks one)."""
    return [f"lead:{key}" for key in {*_emails(posts), *_phones(posts), *_visitors(posts)}]


def _emails(posts: list[FormPost]) -> list[str]:
    return sorted({e for p in posts if (e := p.cleaned.profile.get("email"))})


def _phones(posts: list[FormPost]) -> list[str]:
    return sorted({ph for p in posts if (ph := p.cleaned.profile.get("phone"))})


def _visitors(posts: list[FormPost]) -> list[str]:
    return sorted({v for p in posts if (v := p.visit.visitor_id)})


async def record_posts(session: AsyncSession, posts: list[FormPost]) -> list[Recorded]:
    """Record the posts in order, each as `submit_form` would, with set-based writes. Never commits;
    the caller holds the locks of their `identities` (the batcher takes them with its BEGIN)."""
    now = clock.now()
    emails, phones, visitors = _emails(posts), _phones(posts), _visitors(posts)
    book = await load_book(session, emails, phones, visitors, consents=any(p.requests_optin for p in posts))
    rows = BatchRows()
    touched: dict[uuid.UUID, BatchLead] = {}
    results = []
    for post in posts:
        profile, visit = post.cleaned.profile, post.visit
        email, phone = profile.get("email"), profile.get("phone")
        lead = book.find(email, phone, visit.visitor_id)
        created = lead is None
        if lead is None:
            if email in book.taken:
                # The address of a merged or erased lead: `submit_form` knows what to do with it.
                raise OneByOne(f"{email} belongs to a merged or erased lead")
            lead = BatchLead(
                id=new_id(), values={"customer_status": "new"}, custom={}, tags=set(), created_at=now,
                sources=set(), new=True, channel=Channel.form.value,
            )
            book.add(lead)
        changed = merge(book, lead, profile, post.cleaned.custom, list(post.form.tags or []), overwrite=True)
        lead.touched = True
        touched[lead.id] = lead
        _record_interaction(rows, post, lead, created, changed, now)
        if visit.visitor_id:
            stitch(book, rows, visit.visitor_id, lead, now)
        results.append(Recorded(lead.id, created))
    await write_batch(session, list(touched.values()), rows, now)
    return results


def _record_interaction(
    rows: BatchRows, post: FormPost, lead: BatchLead, created: bool, changed: list[str], now: datetime
) -> None:
    """What one post writes besides its lead (as `submit_form` writes it), into the batch's rows."""
    rows.add(lead_post(lead.id, created, changed, post.origin, ACTIVITY, post.activity_data, now, post.consents), now)
    for consent in post.consents:
        lead.consents[consent.purpose] = consent.granted
    purpose = post.form.consent_purpose or ""
    if post.requests_optin and not lead.consents.get(purpose):
        # Not confirmed yet: ask (again); once confirmed, asking again would be spam.
        pending, asked = optin_request(
            lead.id, bool(lead.values.get("email")), purpose, post.form.consent_wording, post.form.key, post.origin,
            now,
        )
        rows.consents.append(pending)
        lead.consents[purpose] = False
        if asked is not None:
            rows.event(asked, now)


def form_batcher(state: Any) -> FormBatcher:
    """The process's batcher (one per application)."""
    if getattr(state, "form_batcher", None) is None:
        state.form_batcher = FormBatcher(state.db)
    return state.form_batcher  # type: ignore[no-any-return]
