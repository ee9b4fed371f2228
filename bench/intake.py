"""Form intake over real HTTP on 127.0.0.1: nurture under uvicorn on SQLite and PostgreSQL, and a
bare FastAPI endpoint that parses the same form without a database, in the same run.

With PostgreSQL, a third reference, the floor: the bare endpoint that also keeps each post as one
row in PostgreSQL, the posts that arrive meanwhile committed together. It is the least any durable
intake does, so it tells what this machine allows: the p99 nurture could reach here at best.

Prints one JSON line per target and a summary line with the PostgreSQL/bare ratio.
Closed loop (100 clients back to back) gives throughput. Open loops at fixed offered rates (by
default a quarter, half and three quarters of what PostgreSQL sustained), the same rates for every
target in turn, give latency that includes queueing, next to the bare endpoint's at the same load.
Each figure carries the share of CPU time the hypervisor gave to other guests meanwhile (steal):
on a shared host, a latency tail with high steal is the host's, not ours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from _harness import closed_loop, lean_http, open_loop, percentile, pg_connection, scratch_database, server, uv_run

FIRST = ["Иван", "Мария", "Алексей", "Ольга", "John", "Anna", "Дмитрий", "Елена"]
LAST = ["Петров", "Смирнова", "Иванов", "Кузнецова", "Smith", "Brown"]


def form_body(i: int, run: str) -> dict[str, str]:
    rnd = random.Random(i)
    return {
        "email": f"lead{i}.{run}@example.com",
        "phone": f"+7912{rnd.randrange(10**7):07d}",
        "first_name": rnd.choice(FIRST),
        "last_name": rnd.choice(LAST),
        "company": "ООО Ромашка",
        "utm_source": rnd.choice(["yandex", "google", "vk", "telegram"]),
        "utm_medium": "cpc",
        "utm_campaign": "bench",
        "consent": "yes",
    }


BENCH_FORM = {
    "key": "bench", "name": "Bench", "success_url": "https://example.com/thanks",
    "fields": [
        {"name": "email", "label": "Email", "type": "email", "required": True, "lead_field": "email"},
        {"name": "phone", "label": "Телефон", "type": "phone", "lead_field": "phone"},
        {"name": "first_name", "label": "Имя", "lead_field": "first_name"},
        {"name": "last_name", "label": "Фамилия", "lead_field": "last_name"},
        {"name": "company", "label": "Компания", "lead_field": "company"},
    ],
    "consent": {"purpose": "marketing", "wording": "Согласен на обработку персональных данных"},
}


async def seed_form(url: str) -> None:
    from core.db import Database
    from leads.intake.forms import FormIn, create_form

    db = Database(url)
    async with db.sessions() as session:
        await create_form(session, FormIn.model_validate(BENCH_FORM))
        await session.commit()
    await db.dispose()


def steal_ticks() -> tuple[int, int] | None:
    """(steal, all) CPU ticks so far on Linux: time the hypervisor gave our cores to other guests."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def stolen_pct(before: tuple[int, int] | None) -> float | None:
    after = steal_ticks()
    if before is None or after is None or after[1] == before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)


async def closed(base: str, label: str, args: argparse.Namespace, pg_url: str | None = None) -> dict[str, Any]:
    """Throughput: `concurrency` clients back to back (on PostgreSQL, with the WAL written per lead)."""
    async with lean_http(base, args.concurrency) as http:
        send = sender(http, f"{label}{random.randrange(10**9)}")
        # Warm-up at the measured concurrency: all the clients' connections open, caches filled, so the
        # figures are the steady state's rather than a cold start's.
        await closed_loop(send, args.concurrency, 10 * args.concurrency, 10)
        send = sender(http, f"{label}{random.randrange(10**9)}")
        before, wal = steal_ticks(), await wal_position(pg_url)
        figures = await closed_loop(send, args.concurrency, args.requests, args.seconds)
        figures["steal_pct"] = stolen_pct(before)
        if pg_url is not None and figures["requests"]:
            figures["wal_bytes_per_lead"] = round((await wal_position(pg_url) - wal) / figures["requests"])
        return figures


async def wal_position(pg_url: str | None) -> int:
    """Bytes of WAL the PostgreSQL server has written so far (0 without one)."""
    if pg_url is None:
        return 0
    async with pg_connection(pg_url) as conn:
        return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'"))


async def commit_probe(pg_url: str, seconds: float) -> dict[str, Any]:
    """The machine's PostgreSQL alone, without nurture: transactions of ~100 kB (what a group of form
    posts writes) committed back to back. On a virtual disk the commit at a switch of WAL segment
    (every 16 MB) can take 50-130 ms; every post in flight then waits that long, so how often it
    happens (WAL per lead, above) and how long it lasts set the closed loop's p99 more than nurture's
    code does."""
    latencies: list[float] = []
    async with pg_connection(pg_url) as conn:
        await conn.execute("CREATE TABLE bench_commit_probe (payload text)")
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            began = time.perf_counter()
            await conn.execute("BEGIN; INSERT INTO bench_commit_probe SELECT repeat('x', 2000) "
                               "FROM generate_series(1, 50); COMMIT")
            latencies.append(time.perf_counter() - began)
        await conn.execute("DROP TABLE bench_commit_probe")
    return {
        "commits": len(latencies), "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2), "max_ms": round(max(latencies) * 1000, 1),
        "over_20ms": sum(x > 0.02 for x in latencies),
    }


async def opened(base: str, label: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """Latency at a fixed offered rate, at most `concurrency` requests in flight."""
    async with lean_http(base, args.concurrency) as http:
        await closed_loop(sender(http, f"w{label}{random.randrange(10**9)}"), 10, 100, 5)
        before = steal_ticks()
        figures = await open_loop(sender(http, f"{label}{random.randrange(10**9)}"), rate, args.latency_seconds,
                                  args.concurrency)
        figures["steal_pct"] = stolen_pct(before)
        return figures


def sender(http: Any, run: str) -> Callable[[int], Awaitable[bool]]:
    async def send(i: int) -> bool:
        body = urlencode(form_body(i, run)).encode()
        return await http.request(http.form_post("/v1/forms/bench/submit", body)) == 201

    return send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency-seconds", type=float, default=6)
    parser.add_argument("--loads", default="0.25,0.5,0.75",
                        help="open-loop rates as fractions of the first database's closed-loop throughput")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--probe-seconds", type=float, default=4,
                        help="how long to time plain PostgreSQL commits (the machine's disk, without nurture)")
    args = parser.parse_args()
    kinds = args.databases.split(",")
    env = {"NURTURE_FORM_RATE_LIMIT": "100000000", "NURTURE_LOG_LEVEL": "WARNING", "NURTURE_SECRET_KEYS": "bench"}

    with contextlib.ExitStack() as stack:
        bases = {"bare": stack.enter_context(server("_bare_app:create_bare_app", {}, workers=args.workers))}
        if "postgresql" in kinds:
            floor_url = stack.enter_context(scratch_database("postgresql"))
            bases["floor"] = stack.enter_context(server("_bare_app:create_floor_app",
                                                        {"NURTURE_DATABASE_URL": floor_url}, workers=args.workers))
        pg_url = None
        for kind in kinds:
            url = stack.enter_context(scratch_database(kind))
            pg_url = url if kind == "postgresql" else pg_url
            asyncio.run(seed_form(url))
            bases[kind] = stack.enter_context(server("app.main:create_app", {**env, "NURTURE_DATABASE_URL": url},
                                                     workers=args.workers))
        results: dict[str, dict[str, Any]] = {}
        for label, base in bases.items():
            wal_of = pg_url if label in ("postgresql", "floor") else None
            results[label] = {"bench": "intake", "target": label, "concurrency": args.concurrency,
                              "closed_loop": uv_run(closed(base, label, args, wal_of)), "open_loop": {}}
            results[label]["leads_per_s"] = results[label]["closed_loop"]["per_s"]
        if pg_url is not None:
            results["postgresql"]["commit_probe"] = uv_run(commit_probe(pg_url, args.probe_seconds))
        reference = results["postgresql" if "postgresql" in kinds else kinds[0]]["leads_per_s"]
        rates = [round(reference * float(f)) for f in args.loads.split(",")]
        for rate in rates:  # the targets in turn at each rate, so a drift of the machine hits them alike
            for label, base in bases.items():
                results[label]["open_loop"][str(rate)] = uv_run(opened(base, label, rate, args))
    for result in results.values():
        print(json.dumps(result), flush=True)
    print(json.dumps(summary(results, kinds, rates)), flush=True)


def summary(results: dict[str, dict[str, Any]], kinds: list[str], rates: list[int]) -> dict[str, Any]:
    """Throughput against the bare endpoint, and latency at the same offered rates as it."""
    bare = results["bare"]
    out: dict[str, Any] = {"bench": "intake", "summary": True, "bare_per_s": bare["leads_per_s"],
                           "bare_closed_loop_p99_ms": bare["closed_loop"]["p99_ms"]}
    for label in ["bare", *(["floor"] if "floor" in results else []), *kinds]:
        r = results[label]
        if label != "bare":
            out[f"{label}_per_s"] = r["leads_per_s"]
            out[f"{label}_vs_bare"] = round(r["leads_per_s"] / bare["leads_per_s"], 3) if bare["leads_per_s"] else None
            out[f"{label}_closed_loop_p50_ms"] = r["closed_loop"]["p50_ms"]
            out[f"{label}_closed_loop_p99_ms"] = r["closed_loop"]["p99_ms"]
            if "wal_bytes_per_lead" in r["closed_loop"]:
                out[f"{label}_wal_bytes_per_lead"] = r["closed_loop"]["wal_bytes_per_lead"]
            if "commit_probe" in r:
                out[f"{label}_plain_commit_max_ms"] = r["commit_probe"]["max_ms"]
            if label != "floor" and "floor" in results and results["floor"]["closed_loop"]["p99_ms"]:
                # The tail against the least durable intake's on the same machine in the same run.
                out[f"{label}_closed_loop_p99_vs_floor"] = round(
                    r["closed_loop"]["p99_ms"] / results["floor"]["closed_loop"]["p99_ms"], 2)
        out[f"{label}_p99_ms_at"] = {rate: r["open_loop"][str(rate)]["p99_ms"] for rate in rates}
        out[f"{label}_p50_ms_at"] = {rate: r["open_loop"][str(rate)]["p50_ms"] for rate in rates}
        within = [rate for rate in rates if r["open_loop"][str(rate)]["p99_ms"] < 50]
        out[f"{label}_p99_under_50ms_up_to_per_s"] = max(within) if within else None
    out["steal_pct_max"] = max(
        (f["steal_pct"] for r in results.values() for f in [r["closed_loop"], *r["open_loop"].values()]
         if f.get("steal_pct") is not None), default=None,
    )
    return out


if __name__ == "__main__":
    main()
