"""Form posts written in groups (one transaction for the posts that arrive together) record
exactly what the same posts record one by one, and one bad post never costs the others theirs."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from core import clock
from core.db import Database, driver_connection, locked_transaction, plan_each_execution
from core.groupcommit import GroupCommit
from core.outbox import OutboxEvent
from leads.intake.batch.lookup import _BOOK_SQL, load_book
from leads.intake.form_batch import FormBatcher, identities, record_posts
from leads.intake.forms import FormIn, LiveForms, create_form
from leads.intake.interaction import Origin
from leads.intake.submissions import FormPost, check_post, submit_form, visit_from
from leads.merge import merge_leads
from leads.models import Activity, Consent, Lead, LeadTag, Touchpoint, Visitor
from leads.service import record_intake
from tests.conftest import empty_tables

OPEN_FORM = {
    "key": "open", "name": "Заявка", "default_campaign": "site", "tags": ["site-form"],
    "fields": [
        {"name": "first_name", "label": "Имя"},
        {"name": "email", "label": "Эл. почта", "type": "email"},
        {"name": "phone", "label": "Телефон", "type": "phone"},
        {"name": "comment", "label": "Комментарий", "type": "textarea"},
    ],
    "consent": {"purpose": "marketing_email", "wording": "Согласен на рассылку", "required": False},
}
OPTIN_FORM = {**OPEN_FORM, "key": "optin", "double_opt_in": True, "tags": []}

# Every case record_intake knows, in one group: a new person, a known one by email and by phone,
# the same new person twice, an address merged into another lead, a browser with anonymous page
# views, a browser that belonged to someone else, a double opt-in asked twice.
POSTS: list[tuple[str, dict[str, str]]] = [
    ("open", {"first_name": "Анна", "email": "anna@example.ru", "_vid": "visitor-anonymous-1", "consent": "on",
              "utm_source": "yandex", "utm_medium": "cpc"}),
    ("open", {"first_name": "Борис Новый", "email": "boris@example.ru", "comment": "перезвоните"}),
    ("open", {"first_name": "Только телефон", "phone": "+7 912 000-00-01"}),
    ("open", {"first_name": "Анна Петровна", "email": "anna@example.ru", "phone": "+79123334455"}),
    ("open", {"first_name": "Вера", "email": "vera.old@example.ru"}),
    ("open", {"first_name": "Глеб", "email": "gleb@example.ru", "_vid": "visitor-of-boris-1"}),
    ("optin", {"first_name": "Дарья", "email": "darya@example.ru", "consent": "on"}),
    ("optin", {"first_name": "Дарья", "email": "darya@example.ru", "consent": "on"}),
]


async def _prepare(db: Database) -> None:
    """Leads and browsers the posts run into."""
    async with db.sessions() as session:
        for form in (OPEN_FORM, OPTIN_FORM):
            await create_form(session, FormIn.model_validate(form))
        await record_intake(
            session, {"email": "boris@example.ru", "phone": "+79120000001", "first_name": "Борис"},
            Origin(channel="api", visitor_id="visitor-of-boris-1"), "created", tags=["vip"],
        )
        vera = await record_intake(session, {"email": "vera@example.ru"}, Origin(channel="api"), "created")
        old = await record_intake(session, {"email": "vera.old@example.ru"}, Origin(channel="api"), "created")
        await merge_leads(session, vera.lead.id, old.lead.id)
        session.add(Touchpoint(visitor_id="visitor-anonymous-1", channel="event", source="google"))
        session.add(Activity(visitor_id="visitor-anonymous-1", type="page_view", data={"path": "/prices"}))
        await session.commit()


async def _posts(db: Database) -> list[FormPost]:
    forms = LiveForms()
    posts = []
    for key, values in POSTS:
        form = await forms.get(db, key)
        visit = visit_from(values, "https://example.ru/landing", None, "198.51.100.4")
        posts.append(await check_post(db, form, values, visit, "RU"))
    return posts


async def _state(db: Database) -> dict[str, Any]:
    """What a marketer sees, without ids and times."""
    async with db.sessions() as session:
        leads = list(await session.scalars(select(Lead).where(Lead.merged_into_id.is_(None))))
        name: dict[Any, str | None] = {lead.id: lead.email or lead.phone for lead in leads}
        tags = Counter((name.get(t.lead_id), t.tag) for t in await session.scalars(select(LeadTag)))
        touchpoints = Counter(
            (name.get(t.lead_id), t.channel, t.source, t.campaign, t.landing_page)
            for t in await session.scalars(select(Touchpoint))
        )
        activities = Counter(  # what the visitor sent (the setup's merge record holds ids)
            (name.get(a.lead_id), a.type, str(a.data) if a.type == "form_submitted" else "")
            for a in await session.scalars(select(Activity))
        )
        consents = Counter(
            (name.get(c.lead_id), c.purpose, c.granted, c.wording, c.ip) for c in await session.scalars(select(Consent))
        )
        visitors = {v.visitor_id: name.get(v.lead_id) for v in await session.scalars(select(Visitor))}
        events = Counter(  # each event's keys and facts (a lead.updated names the fields it wrote)
            (e.name, name.get(_uuid(e.payload.get("lead_id"))), tuple(sorted(e.payload)),
             tuple((k, str(e.payload[k])) for k in ("channel", "campaign", "type", "changed", "purpose", "form")
                   if k in e.payload))
            for e in await session.scalars(select(OutboxEvent))
        )
    return {
        "leads": sorted(
            (lead.email or "", lead.phone or "", lead.first_name or "", lead.source_channel, lead.customer_status)
            for lead in leads
        ),
        "tags": tags, "touchpoints": touchpoints, "activities": activities, "consents": consents,
        "visitors": visitors, "events": events,
    }


def _uuid(value: Any) -> Any:
    import uuid

    return uuid.UUID(value) if isinstance(value, str) else value


async def test_posts_written_in_one_group_record_what_they_record_one_by_one(db: Database) -> None:
    with clock.frozen(clock.now()):
        await _prepare(db)
        for post in await _posts(db):
            async with db.sessions() as session:
                await submit_form(session, post)
                await session.commit()
        alone = await _state(db)

        await empty_tables(db)
        await _prepare(db)
        async with db.sessions() as session:
            results = await record_posts(session, await _posts(db))
            await session.commit()
        grouped = await _state(db)

    assert grouped == alone
    # and what that is, in the words of the cases above
    assert [r.created for r in results] == [True, False, False, False, False, True, True, False]
    assert results[0].lead_id == results[3].lead_id  # the same person twice in one group
    assert results[1].lead_id == results[2].lead_id  # Борис by email, then by his phone
    leads = {row[0]: row for row in grouped["leads"]}
    assert leads["anna@example.ru"][1:3] == ("+79123334455", "Анна Петровна")
    assert "vera.old@example.ru" not in leads and leads["vera@example.ru"][2] == "Вера"
    assert grouped["visitors"] == {
        "visitor-anonymous-1": "anna@example.ru", "visitor-of-boris-1": "gleb@example.ru",
    }
    assert grouped["touchpoints"][("anna@example.ru", "event", "google", None, None)] == 1  # page views claimed
    assert grouped["consents"][("darya@example.ru", "marketing_email", False, "Согласен на рассылку",
                                "198.51.100.4")] == 2
    optin = ("lead.optin_requested", "darya@example.ru", ("consent_id", "form", "lead_id", "purpose"),
             (("purpose", "marketing_email"), ("form", "optin")))
    assert grouped["events"][optin] == 2
    updated = {(who, facts) for (event, who, _, facts) in grouped["events"] if event == "lead.updated"}
    assert ("anna@example.ru", (("channel", "form"), ("campaign", "site"), ("changed", "['first_name', 'phone']"))) \
        in updated


async def test_one_bad_post_fails_alone_and_the_others_in_its_group_are_recorded(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import leads.intake.form_batch as form_batch

    await _prepare(db)
    posts = await _posts(db)
    real_submit = form_batch.submit_form

    async def submit_refusing_boris(session: Any, post: FormPost) -> Any:
        if post.cleaned.profile.get("email") == "boris@example.ru":
            raise RuntimeError("the database refused this row")
        return await real_submit(session, post)

    async def failing_group(session: Any, group: list[FormPost]) -> Any:
        raise RuntimeError("the group's transaction failed")

    monkeypatch.setattr(form_batch, "record_posts", failing_group)
    monkeypatch.setattr(form_batch, "submit_form", submit_refusing_boris)
    batcher = FormBatcher(db, writers=1)
    outcomes = await asyncio.gather(*(batcher.record(p) for p in posts[:3]), return_exceptions=True)
    assert isinstance(outcomes[1], RuntimeError)
    assert not isinstance(outcomes[0], BaseException) and not isinstance(outcomes[2], BaseException)
    async with db.sessions() as session:
        anna = await session.scalar(select(Lead).where(Lead.email == "anna@example.ru"))
        boris = await session.scalar(select(Lead).where(Lead.email == "boris@example.ru"))
    assert anna is not None and anna.id == outcomes[0].lead_id  # type: ignore[union-attr]
    assert boris is not None and boris.first_name == "Только телефон"  # the phone-only post found him


async def test_concurrent_posts_over_http_share_transactions_and_each_gets_its_own_lead(
    client: httpx.AsyncClient, db: Database
) -> None:
    from prometheus_client import REGISTRY

    def transactions() -> float:
        return REGISTRY.get_sample_value("nurture_intake_batch_posts_count", {"channel": "form"}) or 0.0

    await _prepare(db)
    emails = [f"guest{i}@example.ru" for i in range(60)]
    before = transactions()
    answers = await asyncio.gather(*(
        client.post("/v1/forms/open/submit", json={"email": e, "first_name": "Гость"}) for e in emails
    ))
    assert [a.status_code for a in answers] == [201] * len(emails)
    async with db.sessions() as session:
        stored = dict((await session.execute(select(Lead.email, Lead.id).where(Lead.email.in_(emails)))).all())
    assert {a.json()["lead_id"] for a in answers} == {str(stored[e]) for e in emails}
    assert [str(stored[e]) for e in emails] == [a.json()["lead_id"] for a in answers]
    assert transactions() - before < len(emails) / 2  # posts that arrive together are written together


async def test_a_group_waits_for_another_process_writing_the_same_phone_and_then_finds_that_lead(
    db: Database, database_url: str
) -> None:
    """Phones are not unique in the table, so only the identity lock keeps two processes from
    both creating the person who left a phone number."""
    if db.sqlite:
        pytest.skip("PostgreSQL: the advisory locks of two processes (SQLite has one writer at a time)")
    await _prepare(db)
    values = {"first_name": "Звонок", "phone": "+7 916 123-45-67"}
    post = await check_post(db, await LiveForms().get(db, "open"), values, visit_from(values, None, None, None), "RU")
    other_process = Database(database_url)
    batcher = FormBatcher(other_process)
    try:
        async with db.sessions() as session, locked_transaction(session, identities([post])):
            group = asyncio.create_task(batcher.record(post))
            await asyncio.wait_for(_someone_waits_for_a_lock(db), timeout=30)
            first = await record_intake(session, post.cleaned.profile, Origin(channel="call"), "call_answered")
        recorded = await asyncio.wait_for(group, timeout=30)
    finally:
        await batcher.close()
        await other_process.dispose()
    assert recorded.lead_id == first.lead.id and not recorded.created
    async with db.sessions() as session:
        assert len(list(await session.scalars(select(Lead).where(Lead.phone == "+79161234567")))) == 1


async def _someone_waits_for_a_lock(db: Database) -> None:
    while True:
        async with db.engine.connect() as conn:
            if await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")):
                return


async def test_a_client_that_hangs_up_mid_group_leaves_the_group_and_its_own_post_written(db: Database) -> None:
    release, writing = asyncio.Event(), asyncio.Event()
    written: list[list[str]] = []

    async def many(session: Any, items: list[str]) -> list[str]:
        writing.set()
        await release.wait()
        written.append(items)
        return [f"ok {item}" for item in items]

    async def one(session: Any, item: str) -> str:
        raise AssertionError("the group is written as a group")

    group: GroupCommit[str, str] = GroupCommit(db, "test", many, one)
    gone = asyncio.create_task(group.write("anna"))
    stays = asyncio.create_task(group.write("boris"))
    await asyncio.wait_for(writing.wait(), 10)
    gone.cancel()  # the browser closed the tab while the group was being written
    release.set()
    assert await stays == "ok boris"
    await group.close()
    assert written == [["anna", "boris"]] and gone.cancelled()


@pytest.mark.parametrize("kind", ["form", "event"], ids=["same kind", "another kind"])
async def test_the_next_group_is_written_beside_the_first_on_postgresql_and_after_it_on_sqlite(
    db: Database, kind: str
) -> None:
    """The next group of the same kind, or of another kind (page views beside form posts)."""
    release = asyncio.Event()
    entered = {"anna": asyncio.Event(), "boris": asyncio.Event()}

    async def many(session: Any, items: list[str]) -> list[str]:
        for item in items:
            entered[item].set()
        await release.wait()
        return [f"ok {item}" for item in items]

    forms: GroupCommit[str, str] = GroupCommit(db, "form", many, _never_alone)
    other = forms if kind == "form" else GroupCommit(db, kind, many, _never_alone)
    first = asyncio.create_task(forms.write("anna"))
    await asyncio.wait_for(entered["anna"].wait(), 10)
    second = asyncio.create_task(other.write("boris"))
    if db.sqlite:
        for _ in range(50):  # turns enough for a second writer to reach its group
            await asyncio.sleep(0)
        # SQLite writes one transaction at a time: boris waits for anna's here, in turn, not in
        # SQLite's busy handler
        assert not entered["boris"].is_set()
    else:
        await asyncio.wait_for(entered["boris"].wait(), 10)  # a second transaction beside the first
    release.set()
    assert (await first, await second) == ("ok anna", "ok boris")
    await asyncio.gather(forms.close(), other.close())


async def test_an_item_that_comes_as_the_last_writer_finishes_is_still_written(db: Database) -> None:
    async def many(session: Any, items: list[str]) -> list[str]:
        return [f"ok {item}" for item in items]

    group: GroupCommit[str, str] = GroupCommit(db, "test", many, _never_alone, writers=1)

    async def one_then_another() -> str:
        assert await group.write("anna") == "ok anna"
        # Woken by its result, this caller runs before the finished writer's task is done and at once
        # sends its next item: a writer must take it, though no further item ever comes.
        return await group.write("boris")

    assert await asyncio.wait_for(one_then_another(), 10) == "ok boris"
    await group.close()


async def _never_alone(session: Any, item: str) -> str:
    raise AssertionError("each group is written as a group")


async def test_a_group_looks_its_people_up_by_index_however_small_the_tables(db: Database) -> None:
    """A batch's emails, phones and browsers are looked up one index probe each, by a plan
    made for the values or by one kept since the tables were empty. Written as `email = ANY(…) OR
    phone = ANY(…)`, the planner read all of `leads` instead whenever it had fewer than ~50,000
    rows: at 21,000 leads that was 4-7 ms of the database's time per group."""
    if db.sqlite:
        pytest.skip("PostgreSQL's planner (SQLite searches each IN list through its index)")
    emails = [f"new{i}@example.ru" for i in range(999)] + ["known7@example.ru"]  # as many as an import batch
    phones = [f"+7916{i:07d}" for i in range(1000)]
    visitors = [f"visitor-{i}" for i in range(1000)]
    arrays = ", ".join("'{" + ",".join(values) + "}'" for values in (emails, phones, visitors))

    async def plans(driver: Any) -> list[str]:
        made_now = "\n".join(row[0] for row in await driver.fetch("EXPLAIN " + _BOOK_SQL, emails, phones, visitors,
                                                                   True, False))
        kept = "\n".join(row[0] for row in await driver.fetch(f"EXPLAIN EXECUTE book({arrays}, true, false)"))
        return [made_now, kept]

    async with db.sessions() as session:
        driver = await driver_connection(session)
        await driver.execute("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan")
        await driver.execute(f"PREPARE book(varchar[], varchar[], varchar[], boolean, boolean) AS {_BOOK_SQL}")
        try:
            await plans(driver)  # the kept plan is made now, while the tables are empty
            await driver.execute(
                "INSERT INTO leads (id, email, phone, customer_status, custom, source_channel, created_at, updated_at) "
                "SELECT gen_random_uuid(), 'known' || i || '@example.ru', '+7912' || lpad(i::text, 7, '0'), 'new', "
                "'{}', 'form', now(), now() FROM generate_series(1, 5000) AS i"
            )
            await driver.execute("INSERT INTO visitors (visitor_id, lead_id, first_seen_at) "
                                 "SELECT 'visitor-' || id, id, now() FROM leads")
            kept_since_empty = await plans(driver)
            await driver.execute("SET LOCAL plan_cache_mode = force_custom_plan; ANALYZE leads; ANALYZE visitors")
            for plan in [*kept_since_empty, *await plans(driver)]:
                assert "Seq Scan on leads" not in plan and "Seq Scan on visitors" not in plan, plan
            book = await load_book(session, emails, phones, visitors)
            assert book.find("known7@example.ru", None) is not None
            assert book.find("new1@example.ru", phones[0]) is None
        finally:
            await driver.execute("ROLLBACK; DEALLOCATE book")


async def test_a_planned_once_transaction_keeps_plans_until_told_and_leaves_the_connection_as_it_was(
    db: Database,
) -> None:
    if db.sqlite:
        pytest.skip("PostgreSQL's plan cache")

    async def mode(session: Any) -> str:
        return str(await (await driver_connection(session)).fetchval("SHOW plan_cache_mode"))

    async with db.sessions() as session:
        async with locked_transaction(session, ["lead:a@example.ru"], planned_once=True):
            assert await mode(session) == "force_generic_plan"  # foreign-key checks and the group's statements
            await plan_each_execution(session)
            assert await mode(session) == "force_custom_plan"  # the updates that follow are planned for their values
        async with locked_transaction(session, ["lead:a@example.ru"]):
            assert await mode(session) == "force_custom_plan"
            # Nor compiled: an import batch's look-up, priced above JIT's thresholds, spent 565 ms compiling.
            assert await (await driver_connection(session)).fetchval("SHOW jit") == "off"
