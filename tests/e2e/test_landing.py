"""A real browser on the demo landing page: fill the form, land on the thank-you page, and the
lead exists with the utm source of the landing URL (headless Chromium against uvicorn)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from core.db import Database
from core.settings import Settings
from leads.models import Activity, Lead, Touchpoint
from migrations import upgrade

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.e2e


def _require_browser() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing; CI must install chromium for the browser test")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); set CI=true to make this a failure")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The app on 127.0.0.1:<free port>, on a migrated and demo-seeded SQLite file."""
    from app.demo import seed_demo
    from app.main import create_app

    url = f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}"

    async def prepare() -> None:
        db = Database(url)
        await upgrade(db.engine)
        async with db.sessions() as session:
            assert await seed_demo(session)
            await session.commit()
        await db.dispose()

    asyncio.run(prepare())
    port = _free_port()
    settings = Settings(
        data_dir=tmp_path, database_url=url, base_url=f"http://127.0.0.1:{port}",
        secret_keys="e2e-key", log_json=False,
    )
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:  # waiting for start-up, not timing behaviour
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _query(url: str, fn: Any) -> Any:
    async def run() -> Any:
        db = Database(url)
        try:
            async with db.sessions() as session:
                return await fn(session)
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_visitor_fills_the_landing_form_and_becomes_a_lead_with_the_landing_utm(served: tuple[str, str]) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    base, url = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(locale="ru-RU")
            with page.expect_response(lambda r: r.url.endswith("/v1/events")) as beacon:
                page.goto(f"{base}/demo/landing?utm_source=e2e-radio&utm_medium=audio&utm_campaign=spring")
            assert beacon.value.status == 202
            assert "Оставьте заявку" in page.content()
            page.fill("#name", "Евгения")
            page.fill("#email", "Evgenia.E2E@example.ru")
            page.fill("#phone", "8 (916) 555-44-33")
            page.fill("#company", "ООО «Тест»")
            page.check("#consent")
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/demo/thanks")
            assert "Спасибо за заявку" in page.text_content("h1")  # type: ignore[operator]
        finally:
            browser.close()

    async def load(session: Any) -> tuple[Any, ...]:
        lead = await session.scalar(select(Lead).where(Lead.email == "evgenia.e2e@example.ru"))
        assert lead is not None
        touch = await session.scalar(
            select(Touchpoint).where(Touchpoint.lead_id == lead.id, Touchpoint.channel == "form"))
        types = list(await session.scalars(select(Activity.type).where(Activity.lead_id == lead.id)))
        return lead, touch, types

    lead, touch, types = _query(url, load)
    assert (lead.first_name, lead.phone, lead.company) == ("Евгения", "+79165554433", "ООО «Тест»")
    assert (touch.source, touch.medium, touch.campaign) == ("e2e-radio", "audio", "spring")
    assert touch.visitor_id  # the tracker's visitor id came along with the plain HTML post
    # The anonymous page view made before the form now belongs to the lead.
    assert "page_view" in types and "form_submitted" in types


def _serve_site(html: str) -> tuple[str, Any]:
    """A stand-in for the customer's website: another origin on loopback serving one page."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = html.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def test_embedded_form_on_another_site_shows_field_errors_then_thanks(served: tuple[str, str]) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    base, url = served
    html = (
        "<!doctype html><html lang='ru'><head><meta charset='utf-8'><title>Магазин</title></head><body>"
        f"<div id='nurture-form-demo-contact'></div><script src='{base}/v1/forms/demo-contact/embed.js'></script>"
        "</body></html>"
    )
    shop, site_server = _serve_site(html)
    site = f"{shop}/landing?utm_source=partner"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(site)
            page.fill("#nurture-demo-contact-name", "Алексей")
            page.fill("#nurture-demo-contact-email", "не-почта@")
            page.check("#nurture-demo-contact-consent")
            page.click("#nurture-form-demo-contact button[type=submit]")
            page.locator(".nurture-field-email .nurture-error").filter(has_text="email").wait_for()
            page.fill("#nurture-demo-contact-email", "alexey@example.ru")
            page.click("#nurture-form-demo-contact button[type=submit]")
            page.wait_for_url(f"{base}/demo/thanks")
        finally:
            browser.close()
            site_server.shutdown()

    async def load(session: Any) -> Any:
        lead = await session.scalar(select(Lead).where(Lead.email == "alexey@example.ru"))
        assert lead is not None
        return await session.scalar(select(Touchpoint).where(Touchpoint.lead_id == lead.id))

    touch = _query(url, load)
    assert (touch.source, touch.landing_page) == ("partner", site)
