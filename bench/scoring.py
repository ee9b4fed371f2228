"""Scoring speed, three figures in one run (one JSON line each, then a summary line):

* pure: rule evaluations/s — the default rules plus 40 more (paths, forms, UTM, properties,
  caps), matched against a mix of 200,000 activities in memory, and the same with the points
  applied to scores (decay included).
* handlers (PostgreSQL): committed `lead.activity` events (written with COPY) until every one has
  an updated score, with `nurture worker` processes: the worker side alone.
* end_to_end (PostgreSQL): behaviour events posted by a server (uvicorn, 1 process, an API key, up
  to 50 concurrent clients; `--per-request` events per request through `POST /v1/events/batch`,
  or 1 through `POST /v1/events`) until every one has an updated score (a score entry), with
  `nurture worker` processes handling them; events/s from the first post to the last score, and
  the API's own accept rate.
* rescore (PostgreSQL): `--leads` leads with `--activities` activities in all, scored afresh
  under a new rule set the way `nurture rescore` does it (batches of 500 leads, 3 at once, each
  committed).

* predictive (PostgreSQL): a seeded synthetic world (bench/_synthetic.py: profiles, hidden
  propensity, activity, outcomes for 60% of the leads) scored by the default rules, then the
  model trained; both AUCs on the same held-out leads.

Redis: NURTURE_BENCH_REDIS_URL (default redis://127.0.0.1:6379/10), flushed before and after.
Aims (issue): ≥ 200,000 evaluations/s pure, ≥ 3,000 events/s end to end, rescore of 1,000,000
activities over 100,000 leads in < 60 s; the model's AUC above the rules'.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from _harness import ROOT, lean_http, pg_connection, scratch_database, server, uv_run

AIM = {"pure_per_s": 200_000, "end_to_end_per_s": 3_000, "rescore_seconds": 60}
PATHS = ["/", "/pricing", "/pricing/pro", "/blog/how-to", "/careers", "/catalogue", "/contacts", "/cases/steel"]
TYPES = ["page_view"] * 6 + ["download", "form_submitted", "email_opened", "email_clicked", "call_answered"]


def rule_spec() -> dict[str, Any]:
    from scoring.rulesets import DEFAULT_RULES

    extra = []
    for i in range(40):
        kind = i % 4
        rule: dict[str, Any] = {"key": f"extra-{i}", "activity": ["page_view", "download", "form_submitted",
                                                                  "custom.webinar"][kind], "points": 1 + i % 7}
        if kind == 0:
            rule["path"] = f"/section-{i}/*"
        elif kind == 1:
            rule["path"] = f"/files/{i}*.pdf"
        elif kind == 2:
            rule["form"] = f"form-{i}"
        else:
            rule["properties"] = {"topic": f"t{i}"}
        if i % 3 == 0:
            rule["cap"] = {"points": 10, "per": "week"}
        extra.append(rule)
    return {**DEFAULT_RULES, "rules": [*DEFAULT_RULES["rules"], *extra]}


def activity_data(rnd: random.Random, kind: str) -> dict[str, Any]:
    if kind in ("page_view", "download"):
        return {"url": f"https://shop.example.ru{rnd.choice(PATHS)}"}
    if kind == "form_submitted":
        return {"form": rnd.choice(["demo", "form-2", "newsletter"])}
    if kind == "call_answered":
        return {"duration": rnd.randrange(10, 600)}
    return {"link_tag": "offer"}


def measure_pure(count: int) -> dict[str, Any]:
    from scoring.rules import Facts, Ruleset, RuleSetIn
    from scoring.scores import Score, Work, score_activity

    ruleset = Ruleset(1, RuleSetIn.model_validate(rule_spec()))
    rnd = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    facts = []
    for i in range(count):
        kind = rnd.choice(TYPES)
        facts.append(Facts.of(kind, start + timedelta(minutes=i), activity_data(rnd, kind), "a@corp.ru"))
    began = time.perf_counter()
    matched = sum(len(ruleset.matches(f)) for f in facts)
    match_seconds = time.perf_counter() - began
    work = Work(ruleset)
    scores = [Score(uuid.uuid4(), 1, 0.0, start, 0.0, "C", "lead", start) for _ in range(1000)]
    began = time.perf_counter()
    for i, f in enumerate(facts):
        score_activity(work, scores[i % 1000], f, None)
    score_seconds = time.perf_counter() - began
    return {
        "bench": "scoring", "part": "pure", "rules": sum(len(r) for r in ruleset.by_activity.values()),
        "activities": count, "rules_matched": matched,
        "evaluations_per_s": round(count / match_seconds), "scored_per_s": round(count / score_seconds),
    }


# --- PostgreSQL: filling a database quickly ---------------------------------------------------------


async def fill(url: str, leads: int, activities: int) -> list[uuid.UUID]:
    """Leads and their activities, written with COPY (the bench's own set-up, not what it measures)."""

    from core.ids import new_id

    rnd = random.Random(11)
    now = datetime.now(UTC)
    lead_ids = [new_id() for _ in range(leads)]
    async with pg_connection(url) as conn:
        await conn.copy_records_to_table("leads", columns=[
            "id", "email", "source_channel", "customer_status", "custom", "created_at", "updated_at",
        ], records=[(lead_id, f"lead{i}@corp{i % 500}.ru", "import", "new", "{}", now, now)
                    for i, lead_id in enumerate(lead_ids)])
        batch: list[tuple[Any, ...]] = []
        for i in range(activities):
            kind = rnd.choice(TYPES)
            at = now - timedelta(minutes=rnd.randrange(0, 60 * 24 * 120))
            batch.append((new_id(), lead_ids[i % leads], kind, json.dumps(activity_data(rnd, kind)), at))
            if len(batch) == 50_000:
                await conn.copy_records_to_table("activities", columns=["id", "lead_id", "type", "data", "occurred_at"],
                                                 records=batch)
                batch = []
        if batch:
            await conn.copy_records_to_table("activities", columns=["id", "lead_id", "type", "data", "occurred_at"],
                                             records=batch)
        await conn.execute("ANALYZE")
    return lead_ids


async def rescore_all(url: str) -> dict[str, Any]:
    from core.db import Database
    from scoring.rules import RuleSetIn
    from scoring.service import post_ruleset, rescore_here

    db = Database(url, pool_size=4)
    try:
        began = time.perf_counter()
        async with db.sessions() as session:
            row = await post_ruleset(session, RuleSetIn.model_validate(rule_spec()), chain=False)
            version = row.version
            await session.commit()
        await rescore_here(db, version)
        return {"seconds": round(time.perf_counter() - began, 1), "version": version}
    finally:
        await db.dispose()


def measure_rescore(leads: int, activities: int) -> dict[str, Any]:
    with scratch_database("postgresql") as url:
        began = time.perf_counter()
        uv_run(fill(url, leads, activities))
        filled = time.perf_counter() - began
        result = uv_run(rescore_all(url))
    return {"bench": "scoring", "part": "rescore", "leads": leads, "activities": activities,
            "fill_seconds": round(filled, 1), **result,
            "activities_per_s": round(activities / result["seconds"]) if result["seconds"] else None}


# --- PostgreSQL: end to end -------------------------------------------------------------------------


async def api_key(url: str) -> str:
    from core.auth import create_api_key
    from core.db import Database

    db = Database(url, pool_size=1)
    try:
        async with db.sessions() as session:
            _, raw = await create_api_key(session, "bench", ["leads:write"])
            await session.commit()
        return raw
    finally:
        await db.dispose()


async def entries(url: str) -> int:

    async with pg_connection(url) as conn:
        return int(await conn.fetchval("SELECT count(DISTINCT activity_id) FROM score_entries WHERE version = 0"))


async def post_events(base: str, key: str, lead_ids: list[uuid.UUID], count: int, url: str,
                      wait_seconds: float, per_request: int) -> dict[str, Any]:
    """`count` page views posted `per_request` at a time (1: POST /v1/events, more: /v1/events/batch)
    by 50 clients; then waits until each has a score entry."""
    rnd = random.Random(5)

    def event(i: int) -> dict[str, Any]:
        return {"type": "page_view", "lead_id": str(lead_ids[i % len(lead_ids)]),
                "url": f"https://shop.example.ru{rnd.choice(PATHS)}"}

    requests = []
    for start in range(0, count, per_request):
        group = [event(i) for i in range(start, min(count, start + per_request))]
        path, body = ("/v1/events", json.dumps(group[0]).encode()) if per_request == 1 else \
            ("/v1/events/batch", json.dumps({"events": group}).encode())
        head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")
        requests.append((head.encode() + body, len(group)))
    failures = 0
    clients = min(50, len(requests))
    async with lean_http(base, clients) as http:
        queue = iter(requests)

        async def client() -> None:
            nonlocal failures
            for raw, size in queue:
                failures += size if (await http.request(raw)) != 202 else 0

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        posted = time.perf_counter() - began
    done, _ = await wait_scored(url, count - failures, wait_seconds)
    total = time.perf_counter() - began
    return {"events": count, "per_request": per_request, "failed_events": failures, "scored": done,
            "complete": done >= count - failures, "accepted_per_s": round(count / posted, 1),
            "end_to_end_per_s": round(done / total, 1), "seconds": round(total, 2)}


@contextlib.contextmanager
def workers_on(url: str, count: int) -> Iterator[dict[str, str]]:
    """`count` `nurture worker` processes on the database `url` and the bench's Redis database."""
    from redis import Redis

    redis_url = os.environ.get("NURTURE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    Redis.from_url(redis_url).flushdb()
    env = {"NURTURE_DATABASE_URL": url, "NURTURE_REDIS_URL": redis_url, "NURTURE_LOG_LEVEL": "WARNING",
           "NURTURE_FORM_RATE_LIMIT": "100000000"}
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=full_env,
                              stderr=subprocess.DEVNULL) for _ in range(count)]
    try:
        yield env
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        Redis.from_url(redis_url).flushdb()


def measure_end_to_end(events: int, workers: int, timeout: float, per_request: int) -> dict[str, Any]:
    with scratch_database("postgresql") as url:
        lead_ids = uv_run(fill(url, 1000, 0))
        key = uv_run(api_key(url))
        with workers_on(url, workers) as env, server("app.main:create_app", env) as base:
            result = uv_run(post_events(base, key, lead_ids, events, url, timeout, per_request))
    return {"bench": "scoring", "part": "end_to_end", "workers": workers, **result}


async def committed_activities(url: str, lead_ids: list[uuid.UUID], count: int) -> None:
    """`count` page views with their lead.activity events, as intake commits them (COPY)."""

    from core.ids import new_id
    from core.outbox import outbox_row
    from leads.events import LeadActivity

    rnd = random.Random(3)
    now = datetime.now(UTC)
    activities, events = [], []
    for i in range(count):
        activity_id, lead_id = new_id(), lead_ids[i % len(lead_ids)]
        activities.append((activity_id, lead_id, "page_view",
                           json.dumps({"url": f"https://shop.example.ru{rnd.choice(PATHS)}"}), now))
        row = outbox_row(LeadActivity(lead_id=lead_id, activity_id=activity_id, type="page_view", occurred_at=now), now)
        events.append((row["id"], row["name"], json.dumps(row["payload"]), now))
    async with pg_connection(url) as conn, conn.transaction():
        await conn.copy_records_to_table("activities", columns=["id", "lead_id", "type", "data", "occurred_at"],
                                         records=activities)
        await conn.copy_records_to_table("outbox_events", columns=["id", "name", "payload", "created_at"],
                                         records=events)


async def wait_scored(url: str, count: int, wait_seconds: float) -> tuple[int, float]:
    began = time.perf_counter()
    done = 0
    while time.perf_counter() - began < wait_seconds:
        if (done := await entries(url)) >= count:
            break
        await asyncio.sleep(0.1)
    return done, time.perf_counter() - began


def measure_handlers(events: int, workers: int, timeout: float) -> dict[str, Any]:
    """The worker side alone: committed lead.activity events → updated scores."""
    with scratch_database("postgresql") as url:
        lead_ids = uv_run(fill(url, 1000, 0))
        uv_run(committed_activities(url, lead_ids, events))
        with workers_on(url, workers):
            done, seconds = uv_run(wait_scored(url, events, timeout))
    return {"bench": "scoring", "part": "handlers", "workers": workers, "events": events, "scored": done,
            "complete": done >= events, "seconds": round(seconds, 2), "per_s": round(done / seconds, 1)}


async def synthetic(url: str, leads: int) -> None:
    from _synthetic import world

    lead_rows, activity_rows = world(leads)
    async with pg_connection(url) as conn:
        await conn.copy_records_to_table("leads", columns=[
            "id", "email", "job_title", "company_size", "source_channel", "customer_status", "custom", "created_at",
            "updated_at",
        ], records=lead_rows)
        await conn.copy_records_to_table("activities", columns=["id", "lead_id", "type", "data", "occurred_at"],
                                         records=activity_rows)
        await conn.execute("ANALYZE")


async def score_and_train(url: str) -> dict[str, Any]:
    from core.db import Database
    from scoring.predict import train
    from scoring.rules import RuleSetIn
    from scoring.rulesets import DEFAULT_RULES, live_ruleset
    from scoring.service import post_ruleset, rescore_here

    db = Database(url, pool_size=4)
    try:
        async with db.sessions() as session:
            row = await post_ruleset(session, RuleSetIn.model_validate(DEFAULT_RULES), chain=False)
            await session.commit()
        await rescore_here(db, row.version)
        began = time.perf_counter()
        async with db.sessions() as session:
            trained = await train(session, await live_ruleset(session))
            await session.commit()
        return {**trained.__dict__, "train_seconds": round(time.perf_counter() - began, 2)}
    finally:
        await db.dispose()


def measure_predictive(leads: int) -> dict[str, Any]:
    with scratch_database("postgresql") as url:
        uv_run(synthetic(url, leads))
        result = uv_run(score_and_train(url))
    return {"bench": "scoring", "part": "predictive", "leads": leads, **result,
            "model_beats_rules": result["rules_auc"] is not None and result["auc"] > result["rules_auc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pure", type=int, default=200_000, help="activities evaluated in memory")
    parser.add_argument("--events", type=int, default=10_000, help="events posted end to end")
    parser.add_argument("--per-request", type=int, default=100,
                        help="events per request end to end (1: POST /v1/events; more: /v1/events/batch)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes end to end")
    parser.add_argument("--leads", type=int, default=100_000, help="leads to rescore")
    parser.add_argument("--activities", type=int, default=1_000_000, help="activities to rescore")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the scores")
    parser.add_argument("--synthetic", type=int, default=6000, help="synthetic leads for the predictive part")
    parser.add_argument("--only", choices=["pure", "handlers", "end_to_end", "rescore", "predictive"],
                        help="one part only")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    if args.only in (None, "pure"):
        results["pure"] = measure_pure(args.pure)
        print(json.dumps(results["pure"]), flush=True)
    if args.only in (None, "handlers"):
        results["handlers"] = measure_handlers(args.events, args.workers, args.timeout)
        print(json.dumps(results["handlers"]), flush=True)
    if args.only in (None, "end_to_end"):
        results["end_to_end"] = measure_end_to_end(args.events, args.workers, args.timeout, args.per_request)
        print(json.dumps(results["end_to_end"]), flush=True)
    if args.only in (None, "rescore"):
        results["rescore"] = measure_rescore(args.leads, args.activities)
        print(json.dumps(results["rescore"]), flush=True)
    if args.only in (None, "predictive"):
        results["predictive"] = measure_predictive(args.synthetic)
        print(json.dumps(results["predictive"]), flush=True)
    summary: dict[str, Any] = {"bench": "scoring", "summary": True, "aim": AIM}
    if "pure" in results:
        summary["pure_per_s"] = results["pure"]["evaluations_per_s"]
    if "handlers" in results:
        summary["handlers_per_s"] = results["handlers"]["per_s"]
    if "end_to_end" in results:
        summary["end_to_end_per_s"] = results["end_to_end"]["end_to_end_per_s"]
        summary["api_accepted_per_s"] = results["end_to_end"]["accepted_per_s"]
    if "rescore" in results:
        summary["rescore_seconds"] = results["rescore"]["seconds"]
    if "predictive" in results:
        summary["model_auc"] = results["predictive"]["auc"]
        summary["rules_auc"] = results["predictive"]["rules_auc"]
    print(json.dumps(summary), flush=True)
    if "end_to_end" in results and not results["end_to_end"]["complete"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
