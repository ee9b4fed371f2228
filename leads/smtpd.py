"""`nurture smtpd`: an SMTP server (aiosmtpd) for replies, bounces, complaints and inquiries.
Each message is stored in its own transaction and acknowledged with 250 only after commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

import core.auth  # noqa: F401  (leads.owner_id refers to the users table; it must be mapped)
from core.db import Database
from core.errors import NurtureError, RateLimited, TooLarge
from core.logging import get_logger
from core.settings import Settings
from leads.intake.email import accept_email

log = get_logger("nurture.smtpd")


class InboundMailHandler:
    """aiosmtpd handler: hands every message to `accept_email`."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        if len(raw) > self.settings.max_email_bytes:
            return "552 5.3.4 Message too big"
        mail_from = envelope.mail_from if envelope.mail_from not in (None, "<>") else ""
        try:
            async with self.db.sessions() as db_session:
                reception = await accept_email(
                    db_session, raw, mail_from, list(envelope.rcpt_tos), settings=self.settings
                )
                await db_session.commit()
        except NurtureError as exc:
            # Nothing was committed. A message we refuse for what it is will be refused again:
            # a 5xx makes the sending server stop and bounce it instead of retrying for days.
            log.warning("inbound message refused", mail_from=mail_from, size=len(raw), reason=exc.message)
            return refusal(exc)
        except Exception:
            # Nothing was committed: a 4xx makes the sending server keep the message and retry.
            log.exception("inbound message not stored", mail_from=mail_from, size=len(raw))
            return "451 4.3.0 Temporary failure storing the message, try again later"
        email = reception.email
        log.info(
            "inbound message", kind=email.kind, id=str(email.id), lead_id=str(email.lead_id or ""),
            duplicate=reception.duplicate,
        )
        return f"250 2.0.0 Ok: {email.id}"


def refusal(exc: NurtureError) -> str:
    """The SMTP reply for a message the intake refused: permanent, except when it only came too soon."""
    if isinstance(exc, RateLimited):
        return "451 4.7.1 Too many messages, try again later"
    if isinstance(exc, TooLarge):
        return "552 5.3.4 Message too big"
    # One printable ASCII line: the reason must not end the reply early or inject another one.
    reason = " ".join(exc.message.encode("ascii", "replace").decode().split())[:200]
    return f"554 5.6.0 Message refused: {reason}"


def smtp_factory(handler: InboundMailHandler, settings: Settings, hostname: str | None = None) -> SMTP:
    """One SMTP protocol instance per connection, refusing bodies over the inbound limit (552)."""
    options: dict[str, Any] = {"data_size_limit": settings.max_email_bytes, "enable_SMTPUTF8": True}
    if hostname:
        options["hostname"] = hostname
    return SMTP(handler, **options)


class RunningSmtpd:
    """A listening inbound SMTP server; `stop()` closes it."""

    def __init__(self, server: asyncio.Server) -> None:
        self.server = server

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_smtpd(
    db: Database, settings: Settings, host: str | None = None, port: int | None = None
) -> RunningSmtpd:
    """Listen on host:port (default settings.smtpd_host/smtpd_port; port 0 picks a free one)."""
    handler = InboundMailHandler(db, settings)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: smtp_factory(handler, settings),
        host=host or settings.smtpd_host,
        port=settings.smtpd_port if port is None else port,
    )
    return RunningSmtpd(server)


async def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run until Ctrl-C (the task is cancelled) or SIGTERM, then stop accepting and close the database."""
    db = Database(settings.resolved_database_url(), settings.db_pool_size)
    smtpd = await start_smtpd(db, settings, host, port)
    log.info("smtpd listening", host=host or settings.smtpd_host, port=smtpd.port)
    terminated = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows event loops
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
    try:
        await terminated.wait()
    finally:
        await smtpd.stop()
        await db.dispose()
