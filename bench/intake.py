"""Form intake over real HTTP on 127.0.0.1: nurture under uvicorn on SQLite and PostgreSQL, and a
bare FastAPI endpoint that parses the same form without a database, in the same run.

Prints one JSON line per target and a summary line with the PostgreSQL/bare ratio.
Closed loop (100 clients back to back) gives throughput; an open loop at a fixed offered rate
(default: half of what PostgreSQL sustained) gives latency that includes queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from typing import Any
from urllib.parse import urlencode

from _harness import closed_loop, lean_http, open_loop, scratch_database, server, uv_run

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


async def load(base: str, label: str, args: argparse.Namespace, rate: float | None) -> dict[str, Any]:
    run = f"{label}{random.randrange(10**6)}"
    path = "/v1/forms/bench/submit"

    async with lean_http(base, args.concurrency) as http:

        async def send(i: int) -> bool:
            return await http.request(http.form_post(path, urlencode(form_body(i, run)).encode())) == 201

        # warm-up: connections, caches, JIT-free Python paths
        await closed_loop(send, min(args.concurrency, 20), 200, 10)
        run = f"{label}{random.randrange(10**6)}"
        throughput = await closed_loop(send, args.concurrency, args.requests, args.seconds)
        result: dict[str, Any] = {"bench": "intake", "target": label, "concurrency": args.concurrency,
                                  "leads_per_s": throughput["per_s"], "closed_loop": throughput}
        rate = rate or round(throughput["per_s"] / 2)
        if rate > 0:
            run = f"{label}{random.randrange(10**6)}"
            result["open_loop"] = await open_loop(send, rate, args.latency_seconds, args.concurrency)
        return result


def measure(label: str, env: dict[str, str], factory: str, args: argparse.Namespace,
            rate: float | None) -> dict[str, Any]:
    with server(factory, env, workers=args.workers) as base:
        result = uv_run(load(base, label, args, rate))
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=12000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency-seconds", type=float, default=8)
    parser.add_argument("--rate", type=float, default=0, help="open-loop rate (default: half of PG's)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()

    results: dict[str, dict[str, Any]] = {}
    results["bare"] = measure("bare", {}, "_bare_app:create_bare_app", args, None)
    for kind in args.databases.split(","):
        with scratch_database(kind) as url:
            asyncio.run(seed_form(url))
            env = {"NURTURE_DATABASE_URL": url, "NURTURE_FORM_RATE_LIMIT": "100000000",
                   "NURTURE_LOG_LEVEL": "WARNING", "NURTURE_SECRET_KEYS": "bench"}
            results[kind] = measure(kind, env, "app.main:create_app", args, args.rate or None)
    bare = results["bare"]["leads_per_s"]
    summary = {"bench": "intake", "summary": True, "bare_per_s": bare}
    for kind in args.databases.split(","):
        r = results[kind]
        summary[f"{kind}_per_s"] = r["leads_per_s"]
        summary[f"{kind}_closed_loop_p50_ms"] = r["closed_loop"]["p50_ms"]
        summary[f"{kind}_closed_loop_p99_ms"] = r["closed_loop"]["p99_ms"]
        summary[f"{kind}_vs_bare"] = round(r["leads_per_s"] / bare, 3) if bare else None
        summary[f"{kind}_open_loop_p50_ms"] = r["open_loop"]["p50_ms"]
        summary[f"{kind}_open_loop_p99_ms"] = r["open_loop"]["p99_ms"]
        summary[f"{kind}_open_loop_rate"] = r["open_loop"]["offered_per_s"]
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
