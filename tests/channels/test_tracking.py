"""What recipients do with a sent message, over real HTTP through the app: opens and clicks (people
and machines told apart), the redirect that goes only where the message linked, one-click and
page unsubscribes, double opt-in, and bounces and complaints coming back by inbound mail."""

from __future__ import annotations

import email
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from channels.ledger import SENT, SUPPRESSED
from channels.models import Bounce, CapturedMail, Suppression
from channels.sender import Sender
from channels.setup import build_sender
from channels.tokens import MessageTokens
from core import clock
from core.db import Database
from core.settings import Settings, use_settings
from leads.models import Activity, Consent, Lead
from tests.channels.test_send import add_lead, add_template, queue
from tests.conftest import make_key, stored_message
from tests.pipeline import run_events

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
BASE = "http://testserver"


@pytest.fixture(autouse=True)
def daytime(frozen_now: datetime) -> datetime:
    return frozen_now


@pytest.fixture
def settings(settings: Settings) -> Iterator[Settings]:
    """Links in mail point at the test client's server."""
    here = settings.model_copy(update={"base_url": BASE})
    use_settings(here)
    yield here
    use_settings(None)


@pytest.fixture
def sender(db: Database, settings: Settings) -> Sender:
    return build_sender(db, settings)


async def sent_mail(db: Database, sender: Sender, **queue_fields: Any) -> tuple[uuid.UUID, str]:
    """A lead, the welcome template, one message sent: its id and HTML."""
    lead_id = await add_lead(db)
    await add_template(db, topic="news")
    message_id = await queue(db, lead_id, **queue_fields)
    await sender.send_due()
    async with db.sessions() as session:
        mail = await session.scalar(select(CapturedMail).where(CapturedMail.message_id == message_id))
    assert mail is not None
    html = email.message_from_bytes(mail.raw, policy=default).get_body(("html",)).get_content()  # type: ignore[union-attr]
    return message_id, html


async def the_captured_mail(db: Database) -> CapturedMail:
    async with db.sessions() as session:
        mail = await session.scalar(select(CapturedMail))
    assert mail is not None
    return mail


async def mail_poster(db: Database) -> dict[str, str]:
    """Headers of a mail system posting raw messages to /v1/inbound/email."""
    return {"authorization": f"Bearer {await make_key(db, 'leads:write')}", "content-type": "message/rfc822"}


def paths(html: str, prefix: str) -> list[str]:
    return [m.removeprefix(BASE) for m in re.findall(rf'"({re.escape(BASE)}{prefix}[a-z0-9]+)"', html)]


async def activities(db: Database, kind: str) -> list[Activity]:
    async with db.sessions() as session:
        return list(await session.scalars(select(Activity).where(Activity.type == kind).order_by(Activity.occurred_at)))


async def test_a_person_opening_and_clicking_is_recorded_and_the_redirect_goes_where_the_mail_linked(
    client: httpx.AsyncClient, db: Database, sender: Sender
) -> None:
    message_id, html = await sent_mail(db, sender)
    [pixel] = paths(html, "/t/o/")
    clicks = paths(html, "/t/c/")
    clock.advance(timedelta(minutes=5))

    opened = await client.get(pixel, headers={"user-agent": BROWSER})
    clicked = await client.get(clicks[0], headers={"user-agent": BROWSER})

    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    assert clicked.status_code == 302 and clicked.headers["location"] == "https://example.com/ru/guide"
    [open_activity] = await activities(db, "email_opened")
    [click] = await activities(db, "email_clicked")
    assert "machine" not in open_activity.data and "machine" not in click.data
    assert click.data["url"] == "https://example.com/ru/guide" and click.data["campaign"] == "spring"
    row = await stored_message(db, message_id)
    assert row.opened_at is not None and row.clicked_at is not None


async def test_scanners_and_privacy_proxies_are_recorded_as_machines(
    client: httpx.AsyncClient, db: Database, sender: Sender
) -> None:
    message_id, html = await sent_mail(db, sender)
    [pixel] = paths(html, "/t/o/")
    link = paths(html, "/t/c/")[0]

    await client.head(pixel, headers={"user-agent": BROWSER})  # a HEAD request is a machine
    await client.get(link, headers={"user-agent": BROWSER})  # seconds after delivery: a scanner

    [open_activity] = await activities(db, "email_opened")
    [click] = await activities(db, "email_clicked")
    assert open_activity.data["machine"] == "head_request"
    assert click.data["machine"] == "clicked_within_seconds_of_delivery"
    row = await stored_message(db, message_id)
    assert row.opened_at is None and row.clicked_at is None  # statistics count people only


async def test_a_forged_or_altered_click_token_redirects_nowhere(
    client: httpx.AsyncClient, db: Database, sender: Sender, settings: Settings
) -> None:
    message_id, html = await sent_mail(db, sender)
    link = paths(html, "/t/c/")[0]
    altered = link[:-3] + ("aaa" if not link.endswith("aaa") else "bbb")
    other_key = MessageTokens(["someone-elses-key"]).make("click", message_id, 0)
    beyond = MessageTokens(settings.signing_keys()).make("click", message_id, 99)
    open_as_click = MessageTokens(settings.signing_keys()).make("open", message_id)

    answers = [await client.get(p) for p in (altered, f"/t/c/{other_key}", f"/t/c/{beyond}", f"/t/c/{open_as_click}")]

    assert [a.status_code for a in answers] == [403, 403, 404, 403]
    assert all("location" not in a.headers for a in answers)
    assert not await activities(db, "email_clicked")


async def test_one_click_unsubscribe_takes_effect_at_once(
    client: httpx.AsyncClient, db: Database, sender: Sender
) -> None:
    message_id, _ = await sent_mail(db, sender)
    mail = await the_captured_mail(db)
    header = email.message_from_bytes(mail.raw, policy=default)["List-Unsubscribe"]
    url = re.search(r"<(http[^>]+)>", header).group(1).removeprefix(BASE)  # type: ignore[union-attr]

    answer = await client.post(url, content=b"List-Unsubscribe=One-Click",
                               headers={"content-type": "application/x-www-form-urlencoded"})
    again = await client.post(url, content=b"List-Unsubscribe=One-Click",
                              headers={"content-type": "application/x-www-form-urlencoded"})

    assert answer.status_code == 200 and again.status_code == 200
    lead_id = (await stored_message(db, message_id)).lead_id
    next_one = await queue(db, lead_id, "e1:s2:r0")
    await sender.send_due()
    assert (await stored_message(db, next_one)).state == SUPPRESSED
    async with db.sessions() as session:
        [suppression] = list(await session.scalars(select(Suppression)))
        consent = await session.scalar(select(Consent).where(Consent.lead_id == lead_id))
    assert suppression.reason == "unsubscribed" and suppression.topic == ""
    assert consent is not None and consent.granted is False  # on the record as a withdrawal
    assert len(await activities(db, "unsubscribed")) == 2


async def test_the_preferences_page_stops_one_topic_and_can_subscribe_again(
    client: httpx.AsyncClient, db: Database, sender: Sender
) -> None:
    await add_template(db, "offers", topic="offers")
    message_id, html = await sent_mail(db, sender)
    page_url = paths(html, "/u/")[0]

    page = await client.get(page_url)
    assert page.status_code == 200 and "Настройки рассылки" in page.text and "anna@example.ru" in page.text
    assert 'value="news"' in page.text and 'value="offers"' in page.text
    scanner = await client.get(page_url)  # fetching the page changes nothing
    assert scanner.status_code == 200

    saved = await client.post(page_url, data={"action": "save", "topics": ["offers"]})
    assert saved.status_code == 200 and "Сохранено" in saved.text

    lead_id = (await stored_message(db, message_id)).lead_id
    news = await queue(db, lead_id, "k-news")
    offers = await queue(db, lead_id, "k-offers", template="offers")
    await sender.send_due()
    assert (await stored_message(db, news)).state == SUPPRESSED
    assert (await stored_message(db, offers)).state == SENT

    await client.post(page_url, data={"action": "unsubscribe_all"})
    back = await client.post(page_url, data={"action": "resubscribe"})
    assert back.status_code == 200
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Suppression)) == 0


async def test_double_opt_in_mails_a_confirmation_and_the_post_confirms(
    client: httpx.AsyncClient, db: Database, sender: Sender, admin_headers: dict[str, str]
) -> None:
    form = {
        "key": "newsletter", "name": "Рассылка", "fields": [{"name": "email", "label": "Email", "type": "email"}],
        "consent": {"purpose": "marketing_email", "wording": "Согласен получать письма", "required": True},
        "double_opt_in": True,
    }
    assert (await client.post("/v1/forms", json=form, headers=admin_headers)).status_code == 201, "form"
    posted = await client.post("/v1/forms/newsletter/submit", json={"email": "olga@example.ru", "consent": "yes"})
    assert posted.status_code == 201, posted.text
    await run_events(db)
    await run_events(db)  # a redelivered event queues nothing new
    await sender.send_due()

    async with db.sessions() as session:
        [mail] = list(await session.scalars(select(CapturedMail)))
    msg = email.message_from_bytes(mail.raw, policy=default)
    assert mail.recipient == "olga@example.ru" and msg["Subject"] == "Подтвердите подписку"
    assert msg["List-Unsubscribe-Post"] is None  # transactional
    confirm = re.search(r"http://testserver(/optin/[a-z0-9]+)", msg.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert confirm is not None

    shown = await client.get(confirm.group(1))
    assert shown.status_code == 200 and "Подтвердить подписку" in shown.text
    async with db.sessions() as session:
        latest = await session.scalar(select(Consent.granted).order_by(Consent.occurred_at.desc()).limit(1))
    assert latest is False  # a link scanner's GET confirms nothing

    done = await client.post(confirm.group(1))
    twice = await client.post(confirm.group(1))
    assert done.status_code == 200 and "подтверждена" in done.text
    assert "уже" in twice.text
    async with db.sessions() as session:
        granted = list(await session.scalars(select(Consent).where(Consent.granted.is_(True))))
    assert len(granted) == 1 and granted[0].wording == "Согласен получать письма"


def dsn(to: str, recipient: str, status: str, diagnostic: str) -> bytes:
    report = EmailMessage()
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.net>"
    report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = f"<{uuid.uuid4()}@mx.example.net>"
    report.set_content("This is the mail system. I'm sorry to have to inform you that your message could not be "
                       "delivered.")
    report.make_mixed()
    raw = report.as_bytes().replace(b"multipart/mixed", b"multipart/report; report-type=delivery-status")
    boundary = report.get_boundary()
    assert boundary is not None
    part = (f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; {recipient}\r\nAction: failed\r\n"
            f"Status: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n\r\n--{boundary}--").encode()
    return raw.replace(f"--{boundary}--".encode(), part)


async def test_a_hard_bounce_to_the_return_path_suppresses_the_address_and_tells_the_lead(
    client: httpx.AsyncClient, db: Database, sender: Sender
) -> None:
    message_id, _ = await sent_mail(db, sender)
    mail = await the_captured_mail(db)
    key = await mail_poster(db)
    raw = dsn(mail.envelope_from, "anna@example.ru", "5.1.1", "550 5.1.1 <anna@example.ru>: Recipient address rejected")

    posted = await client.post("/v1/inbound/email", content=raw, headers=key, params={"rcpt_to": mail.envelope_from})
    assert posted.status_code == 201, posted.text
    await run_events(db)

    async with db.sessions() as session:
        [bounce] = list(await session.scalars(select(Bounce)))
        [suppression] = list(await session.scalars(select(Suppression)))
    assert bounce.message_id == message_id and bounce.hard and bounce.status == "5.1.1"
    assert suppression.reason == "hard_bounce" and suppression.address == "anna@example.ru"
    [activity] = await activities(db, "email_bounced")
    assert activity.data["message_id"] == str(message_id) and activity.data["hard"] is True
    receipt = await queue(db, (await stored_message(db, message_id)).lead_id, "receipt", kind="transactional")
    await sender.send_due()
    assert (await stored_message(db, receipt)).state == SUPPRESSED  # a dead address gets nothing at all


async def test_repeated_soft_bounces_count_as_hard(
    client: httpx.AsyncClient, db: Database, sender: Sender, settings: Settings
) -> None:
    await sent_mail(db, sender)
    key = await mail_poster(db)
    for day in range(settings.soft_bounce_limit):
        raw = dsn("bounce@example.com", "anna@example.ru", "5.2.2", f"552 5.2.2 Mailbox full (day {day})")
        assert (await client.post("/v1/inbound/email", content=raw, headers=key)).status_code == 201
        await run_events(db)
        async with db.sessions() as session:
            suppressed = await session.scalar(select(Suppression.reason))
        assert suppressed == (None if day < settings.soft_bounce_limit - 1 else "soft_bounces")
        clock.advance(timedelta(days=1))


async def test_a_complaint_suppresses_even_when_it_hides_the_address(
    client: httpx.AsyncClient, db: Database, sender: Sender
) -> None:
    message_id, _ = await sent_mail(db, sender)
    mail = await the_captured_mail(db)
    arf = (
        "From: feedback@mail.example.net\r\nTo: " + mail.envelope_from + "\r\nSubject: complaint\r\n"
        "Message-ID: <arf-1@mail.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="x"\r\n\r\n'
        "--x\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--x\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: test/1\r\n"
        "Version: 1\r\n\r\n--x\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: hello\r\n\r\n--x--\r\n"
    ).encode()
    key = await mail_poster(db)

    assert (await client.post("/v1/inbound/email", content=arf, headers=key,
                              params={"rcpt_to": mail.envelope_from})).status_code == 201
    await run_events(db)

    async with db.sessions() as session:
        [suppression] = list(await session.scalars(select(Suppression)))
    assert suppression.reason == "complaint" and suppression.address == "anna@example.ru"
    assert (await activities(db, "email_complained"))[0].data["message_id"] == str(message_id)


async def test_erasing_the_lead_removes_the_address_but_keeps_it_suppressed(
    client: httpx.AsyncClient, db: Database, sender: Sender, admin_headers: dict[str, str]
) -> None:
    message_id, html = await sent_mail(db, sender)
    await client.post(paths(html, "/u/")[0], data={"action": "unsubscribe_all"})
    lead_id = (await stored_message(db, message_id)).lead_id

    assert (await client.delete(f"/v1/leads/{lead_id}", headers=admin_headers)).status_code in (200, 204)
    await run_events(db)

    row = await stored_message(db, message_id)
    async with db.sessions() as session:
        suppression = await session.scalar(select(Suppression))
        kept = await session.scalar(select(func.count()).select_from(CapturedMail))
    assert row.recipient == "erased" and row.links is None and kept == 0
    assert suppression is not None and suppression.address.startswith("hash:")
    again = await add_lead(db, email="anna@example.ru")  # the same person, signed up again by someone else
    retry = await queue(db, again, "after-erasure")
    await sender.send_due()
    assert (await stored_message(db, retry)).state == SUPPRESSED
    async with db.sessions() as session:
        assert await session.scalar(select(Lead.email).where(Lead.id == lead_id)) is None
