"""Reading a returned message defensively: decoded headers, addresses, the readable text of the
report itself (not of the original message it carries) and the original's headers."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from core.mail import html_to_text, part_text

ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:@]+@[A-Za-z0-9.\-\[\]]+[A-Za-z0-9\]]")
REPORT_CHARS = 200_000  # reports are short; a longer text part is an attached original
ORIGINAL_TYPES = {"message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers"}
MACHINE_TYPES = {"message/delivery-status", "message/global-delivery-status", "message/feedback-report"}

# Where the copy of the original message starts inside a one-part bounce (Exim, qmail, Sendmail,
# Postfix without MIME, Exchange, mail.ru/Yandex); the report is the text above it.
ORIGINAL_STARTS = re.compile(
    r"^[ \t>|]*-{2,}[ \t]*(this is a copy of|below this line is a copy|enclosed (is|are) a copy"
    r"|(the )?(original|returned|undelivered|unsent|your) message|message text follows"
    r"|original message follows|исходное сообщение|оригинальное сообщение|текст сообщения)"
    r"|^[ \t]*(original message follows|original message headers:|-+ ?original message ?-+|message headers follow)"
    r"|^(return-path|received|dkim-signature):[ \t]",
    re.IGNORECASE | re.MULTILINE,
)


def parse(raw: bytes) -> Message:
    # compat32 is the lenient policy: broken headers stay readable instead of raising on access.
    return message_from_bytes(raw, policy=policy.compat32)


def header(msg: Message, name: str) -> str:
    """One header, RFC 2047 words decoded, on one line; "" when absent."""
    value = next((raw for key, raw in msg.raw_items() if key.lower() == name.lower()), None)
    if value is None:
        return ""
    text = unescaped(str(value))
    with contextlib.suppress(Exception):  # an encoded word naming an unknown charset, or broken base64
        text = str(make_header(decode_header(text)))
    return " ".join(text.split())


def unescaped(value: str) -> str:
    """Raw 8-bit header text (SMTPUTF8 mail) as UTF-8 rather than as replacement characters."""
    try:
        return value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # already decoded text
        return value


def addresses(value: str) -> list[str]:
    """Lower-cased addresses in a header value or a report field ('rfc822; <Kim@Example.com>')."""
    found = [a.strip("<>").lower() for _name, a in getaddresses([value]) if "@" in a]
    return found or [a.lower() for a in ADDRESS.findall(value)]


def report_parts(msg: Message) -> Iterator[Message]:
    """The report's parts, an attached original included but never what is inside it."""
    yield msg
    if msg.is_multipart() and msg.get_content_type() not in ORIGINAL_TYPES:
        for part in msg.get_payload():
            if isinstance(part, Message):
                yield from report_parts(part)


def report_text(msg: Message) -> str:
    """What the reporting system wrote for people, with the copy of the original cut off."""
    text = readable_text(msg)
    start = ORIGINAL_STARTS.search(text)
    return text[: start.start()] if start else text


def readable_text(msg: Message) -> str:
    """All the text of the report's own parts (HTML only when there is no plain text)."""
    plain, html = [], []
    for part in report_parts(msg):
        if part.is_multipart() and isinstance(part.get_payload(), list):
            continue
        content_type = part.get_content_type()
        if content_type in ORIGINAL_TYPES or content_type in MACHINE_TYPES:
            continue
        if content_type == "text/html":
            html.append(html_to_text(part_text(part)))
        elif part.get_content_maintype() == "text" or part is msg:
            plain.append(part_text(part))
    return "\n\n".join(plain or html).replace("\r\n", "\n")[:REPORT_CHARS]


def report_type(msg: Message) -> str:
    """The report-type of a multipart/report (delivery-status, feedback-report), else ""."""
    if msg.get_content_type() != "multipart/report":
        return ""
    return str(msg.get_param("report-type") or "").strip().lower()


def original_headers(msg: Message) -> Message | None:
    """The headers of the message the report is about, from a message/rfc822 or headers-only part."""
    for part in report_parts(msg):
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            return HeaderParser().parsestr(part_text(part).lstrip())
    return None
