"""Form posts recorded in groups (group commit): each post still gets its 201/303 only after the
transaction holding its lead has committed, but the posts that arrive while one transaction is
being written share the next one.

One post alone costs a dozen statements and a commit; under load, a hundred posts cost about the
same number of set-based statements and one commit, so intake keeps up with a traffic spike
instead of queueing behind the database. With no load a batch is one post and nothing waits.

A batch that fails as a whole (a unique key won by another process, a value the database refuses)
is not retried as a whole: every post in it is then recorded on its own through `submit_form`,
so one bad post fails alone and the others are still recorded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Database
from core.ids import new_id
from core.logging import get_logger
from core.metrics import INTAKE_BATCH, INTAKE_BATCH_SECONDS, LEADS_CREATED
from leads.intake.batch import BatchLead, BatchRows, begin_batch, load_book, merge, stitch, write_batch
from leads.intake.submissions import FormPost, submit_form
from leads.models import Channel

MAX_BATCH = 100
WRITERS = 2  # transactions in flight at once: one is written while the next batch gathers
ACTIVITY = "form_submitted"

log = get_logger("nurture.forms")


class OneByOne(Exception):
    """A post the batch leaves to `submit_form` (the rare cases it does not plan itself)."""


@dataclass
class Recorded:
    lead_id: uuid.UUID
    created: bool


@dataclass
class _Waiting:
    post: FormPost
    done: asyncio.Future[Recorded] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class FormBatcher:
    """Collects the posts of one process and writes them in as few transactions as the load allows."""

    def __init__(self, db: Database, max_batch: int = MAX_BATCH, writers: int = WRITERS) -> None:
        self.db = db
        self.max_batch = max_batch
        self.writers = writers
        self.queue: list[_Waiting] = []
        self.running: set[asyncio.Task[None]] = set()

    async def record(self, post: FormPost) -> Recorded:
        """Record the post; returns once it is committed (raises what recording it alone raises)."""
        waiting = _Waiting(post)
        self.queue.append(waiting)
        if len(self.running) < self.writers:
            writer = asyncio.create_task(self._write_queue())
            self.running.add(writer)
            writer.add_done_callback(self.running.discard)
        # A client that hangs up does not take the others' transaction down with it.
        return await asyncio.shield(waiting.done)

    async def close(self) -> None:
        """Wait for the posts already accepted (on shutdown)."""
        await asyncio.gather(*self.running, return_exceptions=True)

    async def _write_queue(self) -> None:
        while self.queue:
            batch, self.queue = self.queue[: self.max_batch], self.queue[self.max_batch:]
            try:
                await self._write_batch(batch)
            except Exception as exc:  # noqa: BLE001 - each post then succeeds or fails on its own
                if len(batch) > 1:
                    log.info("form batch failed; recording its posts one by one", posts=len(batch), error=repr(exc))
                for waiting in batch:
                    await self._write_alone(waiting)

    async def _write_batch(self, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        async with self.db.sessions() as session:
            results = await record_posts(session, [w.post for w in batch])
            await session.commit()
        INTAKE_BATCH.labels(Channel.form.value).observe(len(batch))
        INTAKE_BATCH_SECONDS.labels(Channel.form.value).observe(time.perf_counter() - started)
        for waiting, result in zip(batch, results, strict=True):
            if result.created:
                LEADS_CREATED.labels(Channel.form.value).inc()
            _settle(waiting, result)

    async def _write_alone(self, waiting: _Waiting) -> None:
        for attempt in range(2):
            try:
                async with self.db.sessions() as session:
                    result = await submit_form(session, waiting.post)
                    await session.commit()
                _settle(waiting, Recorded(result.lead.id, result.created))
                return
            except IntegrityError as exc:
                if attempt:  # a concurrent post created the same person first; the retry finds them
                    _settle(waiting, exc)
            except Exception as exc:  # noqa: BLE001 - handed to the request that waits for it
                _settle(waiting, exc)
                return


def _settle(waiting: _Waiting, outcome: Recorded | BaseException) -> None:
    if waiting.done.done():
        return
    if isinstance(outcome, BaseException):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)


async def record_posts(session: AsyncSession, posts: list[FormPost]) -> list[Recorded]:
    """Record the posts in order, each as `submit_form` would, with set-based writes. Never commits."""
    now = clock.now()
    emails = sorted({e for p in posts if (e := p.cleaned.profile.get("email"))})
    phones = sorted({ph for p in posts if (ph := p.cleaned.profile.get("phone"))})
    visitors = sorted({v for p in posts if (v := p.visit.visitor_id)})
    await begin_batch(session, [*emails, *phones, *visitors])
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
        merge(book, lead, profile, post.cleaned.custom, list(post.form.tags or []), overwrite=True)
        lead.touched = True
        touched[lead.id] = lead
        _record_interaction(rows, post, lead, created, now)
        if visit.visitor_id:
            stitch(book, rows, visit.visitor_id, lead, now)
        results.append(Recorded(lead.id, created))
    await write_batch(session, list(touched.values()), rows, now)
    return results


def _record_interaction(rows: BatchRows, post: FormPost, lead: BatchLead, created: bool, now: Any) -> None:
    """The touchpoint, activity, consent and outbox events of one post, as `record_intake` writes them."""
    origin, form = post.origin, post.form
    touchpoint_id, activity_id = new_id(), new_id()
    rows.touchpoints.append({
        "id": touchpoint_id, "lead_id": lead.id, "visitor_id": origin.visitor_id, "channel": origin.channel,
        "source": origin.source, "medium": origin.medium, "campaign": origin.campaign, "content": origin.content,
        "term": origin.term, "referrer": origin.referrer, "landing_page": origin.landing_page, "occurred_at": now,
    })
    rows.activities.append({
        "id": activity_id, "lead_id": lead.id, "visitor_id": origin.visitor_id, "type": ACTIVITY,
        "touchpoint_id": touchpoint_id, "data": post.activity_data, "occurred_at": now,
    })
    purpose = form.consent_purpose or ""
    pending_id = None
    if post.grants_consent:
        rows.consents.append(_consent(lead, purpose, True, form.consent_wording, origin.ip, now))
        lead.consents[purpose] = True
    elif post.requests_optin and not lead.consents.get(purpose):
        # Not confirmed yet: ask (again); once confirmed, asking again would be spam.
        pending = _consent(lead, purpose, False, form.consent_wording, origin.ip, now)
        rows.consents.append(pending)
        lead.consents[purpose] = False
        pending_id = pending["id"]
    lead_event = {"lead_id": str(lead.id), "channel": origin.channel, "campaign": origin.campaign}
    rows.event("lead.created" if created else "lead.updated", lead_event, now)
    rows.event("lead.activity", {
        "lead_id": str(lead.id), "activity_id": str(activity_id), "type": ACTIVITY, "occurred_at": now.isoformat(),
    }, now)
    if pending_id is not None and lead.values.get("email"):
        rows.event("lead.optin_requested", {
            "lead_id": str(lead.id), "purpose": purpose, "form": form.key, "consent_id": str(pending_id),
        }, now)


def _consent(
    lead: BatchLead, purpose: str, granted: bool, wording: str | None, ip: str | None, now: Any
) -> dict[str, Any]:
    return {
        "id": new_id(), "lead_id": lead.id, "purpose": purpose, "granted": granted, "source": Channel.form.value,
        "wording": wording, "ip": ip, "occurred_at": now,
    }


def form_batcher(state: Any) -> FormBatcher:
    """The process's batcher (one per application)."""
    if getattr(state, "form_batcher", None) is None:
        state.form_batcher = FormBatcher(state.db)
    return state.form_batcher  # type: ignore[no-any-return]
