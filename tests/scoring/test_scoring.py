"""Scoring as a marketer and a sales rep see it: points for what a lead does, halving every
half-life exactly, capped per rule, nothing for a machine's clicks, a fit grade from the profile,
stages that move (and do not flap), an explanation of every point, and new rules rolled out
without leaving anyone half-rescored."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from channels.engagement import machine_reason
from core import clock
from core.db import Database
from core.outbox import OutboxEvent, emit
from leads.events import LeadActivity
from leads.models import Activity, Lead
from scoring.rules import Facts, Ruleset, RuleSetIn, decayed
from scoring.rulesets import DEFAULT_RULES
from scoring.scores import Score
from tests.pipeline import run_events
from worker.registry import load_registry
from worker.sweeper import sweep

DAY = timedelta(days=1)


# --- the arithmetic ----------------------------------------------------------------------------


def test_behaviour_points_halve_every_half_life_exactly() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    half_life = timedelta(days=30)
    assert decayed(100, start, start + 30 * DAY, half_life) == pytest.approx(50)
    assert decayed(100, start, start + 90 * DAY, half_life) == pytest.approx(12.5)
    assert decayed(100, start, start + 15 * DAY, half_life) == pytest.approx(100 / 2 ** 0.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200 * 24), st.integers(-30, 30).filter(bool)), min_size=1, max_size=12))
def test_the_score_is_the_same_whatever_order_activities_arrive_in(events: list[tuple[int, int]]) -> None:
    ruleset = Ruleset(1, RuleSetIn.model_validate({"rules": [], "half_life_days": 30}))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + 300 * DAY
    expected = sum(points * 0.5 ** (((end - start) - hours * timedelta(hours=1)) / timedelta(days=30))
                   for hours, points in events)
    for order in itertools.islice(itertools.permutations(events), 6):
        score = Score(uuid.uuid4(), 1, 0.0, start, 0.0, "D", "subscriber", start)
        for hours, points in order:
            score.add(points, start + hours * timedelta(hours=1), ruleset)
        assert score.value(end, ruleset) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_rules_match_on_path_form_duration_utm_and_properties() -> None:
    ruleset = Ruleset(1, RuleSetIn.model_validate({"rules": [
        {"key": "pricing", "activity": "page_view", "path": "/pricing*", "points": 10},
        {"key": "demo-form", "activity": "form_submitted", "form": "demo", "points": 30},
        {"key": "long-call", "activity": "call_answered", "min_duration": 60, "points": 20},
        {"key": "webinar", "activity": "custom.webinar", "properties": {"attended": True}, "points": 15},
        {"key": "yandex", "activity": "page_view", "utm_source": "yandex", "points": 2},
        {"key": "competitor", "activity": "page_view", "email_domains": ["rival.ru"], "points": -40},
    ]}))
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def keys(type_: str, data: dict[str, Any], email: str = "a@corp.ru", utm: dict[str, str] | None = None) -> set[str]:
        return {rule.key for rule in ruleset.matches(Facts.of(type_, at, data, email, utm))}

    assert keys("page_view", {"url": "https://shop.ru/pricing/pro?x=1"}) == {"pricing"}
    assert keys("page_view", {"url": "https://shop.ru/blog/pricing"}) == set()
    assert keys("page_view", {"url": "https://shop.ru/"}, utm={"source": "yandex"}) == {"yandex"}
    assert keys("page_view", {"url": "https://shop.ru/pricing"}, email="spy@rival.ru") == {"pricing", "competitor"}
    assert keys("form_submitted", {"form": "demo"}) == {"demo-form"}
    assert keys("form_submitted", {"form": "newsletter"}) == set()
    assert keys("call_answered", {"duration": 75}) == {"long-call"}
    assert keys("call_answered", {"duration": 59}) == set()
    assert keys("custom.webinar", {"properties": {"attended": True}}) == {"webinar"}
    assert keys("custom.webinar", {"properties": {"attended": False}}) == set()


def test_machine_engagement_is_told_from_a_persons() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    person = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0 Safari/537.36")
    assert machine_reason(user_agent=person, at=now, delivered_at=now - timedelta(minutes=5)) is None
    assert machine_reason(user_agent=person, method="HEAD") == "head_request"
    assert machine_reason(user_agent="Mozilla/5.0", ip="17.58.100.3") == "apple_privacy_proxy"
    assert (machine_reason(user_agent="Barracuda Sentinel (EE)") or "").startswith("scanner")
    assert machine_reason(user_agent=person, at=now, delivered_at=now - timedelta(seconds=3)) == \
        "clicked_within_seconds_of_delivery"
    clicks = [("https://a.ru/1", now - timedelta(seconds=1)), ("https://a.ru/2", now - timedelta(seconds=2))]
    assert machine_reason(user_agent=person, at=now, recent_clicks=clicks, url="https://a.ru/3") == "every_link_at_once"
    gmail = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    assert machine_reason(user_agent=gmail) is None  # Gmail fetches images when a person opens the mail


# --- through the API and the worker's handlers ---------------------------------------------------


async def post_lead(client: Any, headers: dict[str, str], **fields: Any) -> str:
    response = await client.post("/v1/leads", headers=headers, json=fields)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def page_views(client: Any, headers: dict[str, str], lead_id: str, path: str, count: int,
                     kind: str = "page_view") -> None:
    for _ in range(count):
        response = await client.post("/v1/events", headers=headers, json={
            "type": kind, "lead_id": lead_id, "url": f"https://shop.example.ru{path}",
        })
        assert response.status_code == 202, response.text


async def explanation(client: Any, headers: dict[str, str], lead_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/leads/{lead_id}/score", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_what_a_lead_does_scores_with_caps_and_an_explanation(
    client: Any, admin_headers: dict[str, str], db: Database, frozen_now: datetime
) -> None:
    lead_id = await post_lead(client, admin_headers, email="ivan@gmail.com", first_name="Иван")
    await page_views(client, admin_headers, lead_id, "/blog/post", 30)  # 1 point each, at most 20 a day
    await run_events(db)
    today = await explanation(client, admin_headers, lead_id)
    assert today["score"] == pytest.approx(20)
    assert today["stage"] == "lead" and today["grade"] == "D"  # free mail, no title: a poor fit
    given = [c for c in today["contributions"] if c["rule"] == "page"]
    assert len(given) == 30 and sum(c["points"] for c in given) == 20
    assert sum(1 for c in given if c["note"] and c["note"].startswith("capped")) == 10
    assert given[0]["label"] == "Просмотр страницы / Page view"

    clock.advance(30 * DAY)  # a month later: the 20 points are worth 10, and the cap has room again
    await page_views(client, admin_headers, lead_id, "/blog/other", 5)
    await run_events(db)
    later = await explanation(client, admin_headers, lead_id)
    assert later["score"] == pytest.approx(15)
    assert later["contributions"][-1]["points_now"] == pytest.approx(0.5)  # a first-day view, decayed
    assert [h["score"] for h in later["history"]][-1] == pytest.approx(15)


async def test_a_well_fitting_engaged_lead_becomes_an_mql_once_and_falls_back_only_past_the_band(
    client: Any, admin_headers: dict[str, str], db: Database, frozen_now: datetime
) -> None:
    lead_id = await post_lead(client, admin_headers, email="olga@stroy-invest.ru", job_title="Финансовый директор",
                              company_size="201-500")
    await page_views(client, admin_headers, lead_id, "/pricing", 3)  # 30 (pricing) + 3 (page views)
    await page_views(client, admin_headers, lead_id, "/price-list.pdf", 2, kind="download")  # + 16 = 49
    await run_events(db)
    near = await explanation(client, admin_headers, lead_id)
    assert (near["stage"], near["grade"], near["score"]) == ("lead", "A", 49)
    await page_views(client, admin_headers, lead_id, "/catalogue.pdf", 1, kind="download")  # + 8 = 57
    await run_events(db)
    now = await explanation(client, admin_headers, lead_id)
    assert (now["stage"], now["score"]) == ("mql", 57)
    assert await events_named(db, "lead.qualified") == 1

    registry = load_registry()
    clock.advance(10 * DAY)  # 57 → 45.2: under 50 but inside the 10-point band: still an MQL
    assert sum((await sweep(db, 3600, registry)).work.values()) == 0
    assert (await explanation(client, admin_headers, lead_id))["stage"] == "mql"
    clock.advance(10 * DAY)  # 57 → 35.9: below 40, the sweep sends it back to lead
    assert (await sweep(db, 3600, registry)).work == {"scoring.faded_mqls": 1}
    await run_events(db)
    back = await explanation(client, admin_headers, lead_id)
    assert back["stage"] == "lead" and [c["to"] for c in back["stage_changes"]] == ["lead", "mql", "lead"]
    assert await events_named(db, "lead.qualified") == 1 and await events_named(db, "lead.stage_changed") == 3


async def events_named(db: Database, name: str) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).where(OutboxEvent.name == name)) or 0)


async def test_machine_clicks_are_recorded_but_score_nothing(
    client: Any, admin_headers: dict[str, str], db: Database, frozen_now: datetime
) -> None:
    lead_id = await post_lead(client, admin_headers, email="petr@factory.ru")
    async with db.sessions() as session:  # as the email channel records them
        for machine in (None, "scanner: Barracuda", None):
            data = {"url": "https://shop.ru/offer", "link_tag": "offer", **({"machine": machine} if machine else {})}
            click = Activity(lead_id=uuid.UUID(lead_id), type="email_clicked", data=data, occurred_at=clock.now())
            session.add(click)
            await session.flush()
            await emit(session, LeadActivity(lead_id=lead_id, activity_id=click.id, type="email_clicked",
                                             occurred_at=click.occurred_at))
        await session.commit()
    await run_events(db)
    clicks = [c for c in (await explanation(client, admin_headers, lead_id))["contributions"] if c["rule"] == "click"]
    assert sorted(c["points"] for c in clicks) == [0, 5, 5]
    assert [c["note"] for c in clicks if c["points"] == 0] == ["machine: scanner: Barracuda"]


async def test_a_stage_set_by_sales_holds_whatever_the_score_does(
    client: Any, admin_headers: dict[str, str], db: Database, frozen_now: datetime
) -> None:
    lead_id = await post_lead(client, admin_headers, email="anna@corp-trade.ru")
    await run_events(db)
    response = await client.post(f"/v1/leads/{lead_id}/stage", headers=admin_headers,
                                 json={"stage": "sql", "reason": "accepted by sales"})
    assert response.status_code == 200 and response.json()["stage"] == "sql"
    await page_views(client, admin_headers, lead_id, "/careers", 3)
    await run_events(db)
    assert (await explanation(client, admin_headers, lead_id))["stage"] == "sql"
    bad = await client.post(f"/v1/leads/{lead_id}/stage", headers=admin_headers, json={"stage": "hot"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "stage"


@pytest.mark.parametrize(("rule", "field"), [
    ({"key": "x", "activity": "page_visit", "points": 5}, "rules.0.activity"),
    ({"key": "x", "activity": "page_view", "path": "/pricing[", "points": 5}, "rules.0.path"),
    ({"key": "x", "activity": "page_view", "points": "ten"}, "rules.0.points"),
    ({"key": "x", "activity": "page_view", "points": 0}, "rules.0.points"),
    ({"key": "x", "activity": "page_view", "points": 5, "cap": {"points": 5, "per": "year"}}, "rules.0.cap.per"),
])
async def test_a_bad_rule_is_refused_with_its_field_and_nothing_changes(
    client: Any, admin_headers: dict[str, str], rule: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/scoring/rulesets", headers=admin_headers, json={"rules": [rule]})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    versions = await client.get("/v1/scoring/rulesets", headers=admin_headers)
    assert versions.json() == []


async def test_new_rules_are_rolled_out_while_the_old_ones_stay_live(
    client: Any, admin_headers: dict[str, str], db: Database, frozen_now: datetime
) -> None:
    leads = [await post_lead(client, admin_headers, email=f"buyer{i}@corp{i}.ru") for i in range(3)]
    for lead_id in leads:
        await page_views(client, admin_headers, lead_id, "/pricing", 1)  # default rules: 10 + 1
    await run_events(db)
    assert [(await explanation(client, admin_headers, i))["score"] for i in leads] == [11, 11, 11]

    rules = {"name": "Только цены", "rules": [{"key": "pricing", "activity": "page_view", "path": "/pricing*",
                                               "points": 40}]}
    posted = await client.post("/v1/scoring/rulesets", headers=admin_headers, json=rules)
    assert posted.status_code == 202 and posted.json()["state"] == "building"
    assert posted.json()["leads_total"] == 3
    still = await explanation(client, admin_headers, leads[0])  # nothing rescored yet: the old rules answer
    assert (still["ruleset_version"], still["score"]) == (0, 11)

    await run_events(db)
    live = (await client.get("/v1/scoring/rulesets/live", headers=admin_headers)).json()
    assert (live["version"], live["state"], live["leads_done"]) == (1, "live", 3)
    after = [await explanation(client, admin_headers, i) for i in leads]
    assert [(e["ruleset_version"], e["score"]) for e in after] == [(1, 40)] * 3
    await page_views(client, admin_headers, leads[0], "/pricing/pro", 1)
    await run_events(db)
    assert (await explanation(client, admin_headers, leads[0]))["score"] == 80


async def test_the_default_rules_are_valid_and_readable(client: Any, admin_headers: dict[str, str]) -> None:
    response = await client.get("/v1/scoring/rulesets/live", headers=admin_headers)
    assert response.status_code == 200
    assert response.json()["version"] == 0
    assert {rule["key"] for rule in response.json()["spec"]["rules"]} == {r["key"] for r in DEFAULT_RULES["rules"]}


async def test_two_leads_merged_are_scored_from_their_shared_timeline(
    client: Any, admin_headers: dict[str, str], db: Database, frozen_now: datetime
) -> None:
    first = await post_lead(client, admin_headers, email="maria@corp-one.ru")
    second = await post_lead(client, admin_headers, phone="+79161234567")
    await page_views(client, admin_headers, first, "/pricing", 1)  # 11
    await page_views(client, admin_headers, second, "/price-list.pdf", 2, kind="download")  # 16
    await run_events(db)
    merged = await client.post(f"/v1/leads/{first}/merge", headers=admin_headers, json={"other_id": second})
    assert merged.status_code == 200, merged.text
    await run_events(db)
    survivor = await explanation(client, admin_headers, first)
    assert survivor["score"] == 27 and len(survivor["contributions"]) == 4


async def nurture(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_nurture_rescore_rolls_out_rules_from_a_file_and_refuses_a_bad_one(
    tmp_path: Any, database_url: str, client: Any, admin_headers: dict[str, str], db: Database
) -> None:
    env = {**os.environ, "NURTURE_DATABASE_URL": database_url, "NURTURE_DATA_DIR": str(tmp_path)}
    good = tmp_path / "rules.json"
    good.write_text(json.dumps({"rules": [{"key": "form", "activity": "form_submitted", "points": 25}]}), "utf-8")
    code, out, err = await nurture("rescore", "--rules", str(good), env=env)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["version"] == 1
    live = (await client.get("/v1/scoring/rulesets/live", headers=admin_headers)).json()
    assert (live["version"], live["spec"]["rules"][0]["points"]) == (1, 25)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"key": "form", "activity": "form_sent", "points": 25}]}), "utf-8")
    code, out, err = await nurture("rescore", "--rules", str(bad), env=env)
    assert code == 2 and "rules.0.activity" in err and "form_sent" in err and "Traceback" not in err


async def test_a_long_history_is_rescored_exactly(
    client: Any, admin_headers: dict[str, str], db: Database, frozen_now: datetime
) -> None:
    lead_id = await post_lead(client, admin_headers, email="long.history@corp.ru")
    async with db.sessions() as session:  # 600 page views over 60 days, as years of tracking leave
        for i in range(600):
            session.add(Activity(lead_id=uuid.UUID(lead_id), type="page_view", data={"url": "https://a.ru/blog"},
                                 occurred_at=clock.now() - timedelta(hours=i * 2.4)))
        await session.commit()
    rules = {"half_life_days": 10, "rules": [{"key": "view", "activity": "page_view", "points": 1,
                                              "cap": {"points": 3, "per": "day"}}]}
    assert (await client.post("/v1/scoring/rulesets", headers=admin_headers, json=rules)).status_code == 202
    await run_events(db)
    explained = await explanation(client, admin_headers, lead_id)
    # 10 views a day, the first 3 of each UTC day scored, each halving every 10 days since
    times = sorted(clock.now() - timedelta(hours=i * 2.4) for i in range(600))
    scored = [t for day, group in itertools.groupby(times, key=lambda t: t.date()) for t in list(group)[:3]]
    expected = sum(0.5 ** ((clock.now() - t) / timedelta(days=10)) for t in scored)
    assert explained["ruleset_version"] == 1
    assert explained["score"] == pytest.approx(expected, abs=0.01)
    assert len(explained["contributions"]) == 200 and explained["history"][-1]["score"] == explained["score"]


async def test_the_predictive_score_learns_from_known_outcomes(
    client: Any, admin_headers: dict[str, str], db: Database, frozen_now: datetime, tmp_path: Any, database_url: str
) -> None:
    env = {**os.environ, "NURTURE_DATABASE_URL": database_url, "NURTURE_DATA_DIR": str(tmp_path)}
    code, _, err = await nurture("train-model", env=env)
    assert code == 2 and "known outcome" in err  # nothing to learn from yet

    rnd = random.Random(3)
    leads = []
    async with db.sessions() as session:  # buyers looked at prices and downloaded; the others read the blog
        for i in range(80):
            lead = Lead(email=f"p{i}@corp{i}.ru", source_channel="api")
            session.add(lead)
            await session.flush()
            buyer = i % 2 == 0
            for _ in range(rnd.randrange(3, 8)):
                url = "https://a.ru/pricing" if buyer and rnd.random() < 0.7 else "https://a.ru/blog"
                session.add(Activity(lead_id=lead.id, type="page_view", data={"url": url},
                                     occurred_at=clock.now() - timedelta(days=rnd.randrange(2, 40))))
            if i < 60:  # the outcome is known for 60 of them
                session.add(Activity(lead_id=lead.id, type="deal_won" if buyer else "deal_lost", data={},
                                     occurred_at=clock.now() - timedelta(days=1)))
            leads.append((lead.id, buyer))
        await session.commit()
    code, out, err = await nurture("train-model", env=env)
    assert code == 0, err
    trained = json.loads(out)
    assert trained["version"] == 1 and (trained["won"], trained["lost"]) == (30, 30) and trained["auc"] >= 0.8
    unknown = [(lead_id, buyer) for lead_id, buyer in leads[60:]]
    probability = {buyer: [] for buyer in (True, False)}  # type: dict[bool, list[float]]
    for lead_id, buyer in unknown:
        explained = await explanation(client, admin_headers, str(lead_id))
        probability[buyer].append(explained["prediction"]["probability"])
    assert sum(probability[True]) / 10 > sum(probability[False]) / 10 + 0.3
    top = (await explanation(client, admin_headers, str(unknown[0][0])))["prediction"]["reasons"]
    assert top and top[0]["feature"] in {"pricing_views_90d", "page_view_90d", "page_view_30d", "rules_score"}
