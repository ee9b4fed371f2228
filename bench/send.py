"""Email sending speed on PostgreSQL: the whole path (claim ledger rows, check suppression and pacing,
render the template for each lead with tracked links, compose, DKIM-sign, SMTP over N persistent
connections, record the outcomes) against raw aiosmtplib sending the same pre-rendered bytes over the
same N connections, both to an aiosmtpd sink in another process. Also the render-only and DKIM-only
rates on one core. Prints one JSON line.

    python bench/send.py [--messages 4000] [--connections 4] [--processes 2] [--dkim rsa|ed25519|both|none]

The full path runs in `--processes` worker processes (one per core, as deployed), which share the N
connections between them; the raw client is one process with N connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import free_port, scratch_database  # noqa: E402


def sink(port: int, ready: Any) -> None:
    """An SMTP server that accepts and discards every message (its own process, like a real relay)."""
    from aiosmtpd.controller import Controller

    class Discard:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 2.0.0 Ok: queued as X"

    controller = Controller(Discard(), hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    ready.set()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def signers(kind: str) -> list[Any]:
    from channels.email.dkim import Signer, new_key

    chosen = {"rsa": ["rsa"], "ed25519": ["ed25519"], "both": ["rsa", "ed25519"], "none": []}[kind]
    return [Signer.for_key(new_key(algorithm, f"s{number}", "shop.example.com")) for number, algorithm in
            enumerate(chosen)]


async def seed(url: str, messages: int) -> None:
    """A template and one lead per message, each with a queued message."""
    from sqlalchemy import insert

    from channels.ledger import QUEUED
    from channels.models import messages_t, templates_t
    from channels.starters import starter
    from core import clock
    from core.db import Database
    from core.ids import new_id
    from leads.models import leads_t

    db = Database(url)
    welcome = starter("welcome", "ru")
    now = clock.now()
    leads = [{"id": new_id(), "email": f"lead{n}@example.org", "first_name": f"Анна {n}", "company": "Ромашка",
              "custom": {}, "source_channel": "import", "customer_status": "new", "created_at": now,
              "updated_at": now} for n in range(messages)]
    rows = [{"id": new_id(), "idempotency_key": f"bench:{n}", "channel": "email", "kind": "marketing",
             "lead_id": lead["id"], "recipient": lead["email"], "template": "welcome", "campaign": "spring",
             "step": "1", "payload": {}, "state": QUEUED, "attempts": 0, "next_attempt_at": now, "created_at": now,
             "updated_at": now} for n, lead in enumerate(leads)]
    async with db.sessions() as session:
        await session.execute(insert(templates_t).values(
            id=new_id(), key="welcome", name="welcome", channel="email", kind="marketing", locale="ru",
            subject=welcome.subject, preheader=welcome.preheader, body=welcome.body, version=1, created_at=now,
            updated_at=now,
        ))
        for start in range(0, messages, 1000):
            await session.execute(insert(leads_t), leads[start:start + 1000])
            await session.execute(insert(messages_t), rows[start:start + 1000])
        await session.commit()
    await db.dispose()


async def full_path(url: str, port: int, connections: int, dkim: str, go: Any = None) -> tuple[int, bytes]:
    """One sender (a worker's) draining the queue; returns how many it sent and one message as sent."""
    from app.domains import install
    from channels.email.prepare import Mailer
    from channels.email.smtp import SmtpPool
    from channels.gate import Pacing
    from channels.sender import Sender
    from channels.tokens import MessageTokens
    from core.db import Database

    install()  # as a worker does: the domains' template context (the score) comes with each message
    db = Database(url)
    mailer = Mailer(from_address="news@shop.example.com", from_name="Магазин",
                    bounce_domain="bounce.shop.example.com", base_url="https://shop.example.com",
                    tokens=MessageTokens(["bench-key"]), signers=signers(dkim))
    pool = SmtpPool(f"smtp://127.0.0.1:{port}?starttls=off", connections=connections)
    # Every lead gets one message, at any hour: the cap and quiet hours would only defer (and they are
    # checked all the same).
    pacing = Pacing(cap=0, window=timedelta(days=1), quiet=None, default_zone="Europe/Moscow",
                    require_consent=False, purpose="marketing")
    sample: bytes = b""
    sent = 0

    class Keep:
        name = "email"

        async def deliver(self, delivery: Any) -> Any:
            nonlocal sample, sent
            sample = sample or delivery.raw
            outcome = await pool.deliver(delivery)
            sent += outcome.state == "sent"
            return outcome

        async def close(self) -> None:
            await pool.close()

    sender = Sender(db, {"email": Keep()}, mailer, pacing, secret="bench", batch=200)
    if go is not None:
        go.wait()

    # Two passes in flight: one claims and renders while the other waits on SMTP.
    async def drain() -> None:
        while (await sender.send_due()).claimed:
            pass

    await asyncio.gather(drain(), drain())
    await sender.close()
    await db.dispose()
    return sent, sample


def worker(url: str, port: int, connections: int, dkim: str, go: Any, results: Any) -> None:
    sent, sample = asyncio.run(full_path(url, port, connections, dkim, go))
    results.put((sent, sample))


def senders(url: str, port: int, connections: int, dkim: str, processes: int) -> tuple[float, int, bytes]:
    """Messages per second with `processes` worker processes sharing the queue (and the N connections)."""
    go, results = multiprocessing.Event(), multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(url, port, max(1, connections // processes), dkim, go,
                                                          results)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(2.0)  # let them import and connect before the clock starts
    started = time.perf_counter()
    go.set()
    done = [results.get() for _ in procs]
    seconds = time.perf_counter() - started
    for proc in procs:
        proc.join()
    sample = next((s for _, s in done if s), b"")
    sent = sum(n for n, _ in done)
    return sent / seconds, sent, sample


async def raw_smtp(port: int, connections: int, message: bytes, count: int) -> float:
    import aiosmtplib

    async def one_connection(share: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for number in range(share):
            await smtp.sendmail("bounce+x@bounce.shop.example.com", [f"lead{number}@example.org"], message)
        await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection(count // connections) for _ in range(connections)))
    return (count // connections * connections) / (time.perf_counter() - started)


def render_rate(seconds: float = 2.0) -> float:
    from channels.starters import starter
    from channels.templates import compile_email, sample_context

    compiled = compile_email(starter("welcome", "ru"))
    context = sample_context("ru")
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        compiled.render(context, lambda url, tag: f"https://shop.example.com/t/c/{uuid.uuid4().hex}")
        done += 1
    return done / (time.perf_counter() - started)


def dkim_rate(message: bytes, kind: str, seconds: float = 2.0) -> float:
    from channels.email.dkim import sign_all

    chosen = signers(kind)
    unsigned = message.split(b"\r\n", 1)[1] if message.startswith(b"DKIM-Signature") else message
    while unsigned.startswith(b"DKIM-Signature") or unsigned.startswith(b" ") or unsigned.startswith(b"\t"):
        unsigned = unsigned.split(b"\r\n", 1)[1]
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        sign_all(unsigned, chosen)
        done += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--dkim", choices=("rsa", "ed25519", "both", "none"), default="rsa")
    parser.add_argument("--processes", type=int, default=2, help="Sender processes (workers); one per core")
    args = parser.parse_args()

    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=sink, args=(port, ready), daemon=True)
    server.start()
    ready.wait(10)
    try:
        with scratch_database("postgresql") as url:
            asyncio.run(seed(url, args.messages))
            full, sent, sample = senders(url, port, args.connections, args.dkim, args.processes)
        raw = asyncio.run(raw_smtp(port, args.connections, sample, args.messages))
    finally:
        server.terminate()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(json.dumps({
        "bench": "send", "database": "postgresql", "messages": args.messages, "sent": sent,
        "connections": args.connections, "sender_processes": args.processes, "dkim": args.dkim,
        "message_bytes": len(sample),
        "full_path_per_s": round(full), "raw_aiosmtplib_per_s": round(raw), "ratio": round(full / raw, 3),
        "render_only_per_s": round(render_rate()), "dkim_only_per_s": round(dkim_rate(sample, args.dkim)),
        "cpus": os.cpu_count(),
    }), flush=True)


if __name__ == "__main__":
    main()
