"""The captured outbox (NURTURE_SMTP_URL=capture://) as people look at it: the list, one message, and
its parts and headers decoded.
Takes an AsyncSession and never commits: the endpoint owns the transaction."""

from __future__ import annotations

import email
import uuid
from collections.abc import Callable
from email import policy
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from channels.models import CapturedMail
from core.errors import NotFound
from core.paging import Page, newest_first
from core.text import scrub, text_filter


async def list_captured(session: AsyncSession, to: str | None, cursor: str | None, limit: int) -> Page:
    stmt = select(CapturedMail).options(defer(CapturedMail.raw))
    if (recipient := text_filter(to, "to")) is not None:
        stmt = stmt.where(CapturedMail.recipient.in_({recipient, recipient.lower()}))
    return await newest_first(session, stmt, CapturedMail, "received_at", cursor, limit)


async def get_captured(session: AsyncSession, mail_id: uuid.UUID) -> CapturedMail:
    found = await session.get(CapturedMail, mail_id)
    if found is None:
        raise NotFound(f"no captured message {mail_id}", field="mail_id")
    return found


T = TypeVar("T")


def _or_none(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except (ValueError, LookupError, TypeError, AttributeError, UnicodeError):  # a part this package can't decode
        return None


def read_mail(raw: bytes) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """The plain-text and HTML parts (decoded) and the headers (RFC 2047 words decoded) of a captured message."""
    message = email.message_from_bytes(raw, policy=policy.default)

    def part(kind: str) -> str | None:
        found = message.get_body((kind,))  # type: ignore[attr-defined]
        return None if found is None else scrub(found.get_content())

    headers = []
    for name, value in message.raw_items():
        decoded = _or_none(lambda: str(policy.default.header_fetch_parse(name, value)))  # noqa: B023 - called now
        headers.append((scrub(name), scrub(decoded if decoded is not None else value)))
    return _or_none(lambda: part("plain")), _or_none(lambda: part("html")), headers
