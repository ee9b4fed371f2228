"""What a bounce or complaint report says: recipients, status codes and the original message, from
RFC 3464 delivery status, ARF (RFC 5965), Microsoft JMRP, Apple unsubscribe and free-text bounces."""

from __future__ import annotations

import re
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses
from typing import Any

from core.mail import part_text, unique
from leads.intake.mail.message import MAX_RECIPIENTS, header, message_id, one_line, truncate

STATUS_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
REPLY_CODE = re.compile(r"\b([245]\d\d)[\s-]")
ANGLE_RECIPIENT = re.compile(r"^[ \t]*<([^<>\s@]+@[^<>\s]+)>", re.MULTILINE)
COPY_OF_MESSAGE = re.compile(
    r"^.{0,20}(copy of the message|original message|returned message|undelivered message|message headers)",
    re.IGNORECASE | re.MULTILINE,
)
ORIGINAL_MESSAGE_ID = re.compile(r"^[>\s]*Message-ID\s*:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def bounce_details(msg: Message, text: str) -> dict[str, Any]:
    """`text` is the message's readable text, where non-standard bounces say who failed."""
    recipients: list[dict[str, Any]] = []
    reporting_mta = None
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _report_blocks(part)
            if blocks and not reporting_mta:
                reporting_mta = _after_semicolon(_first(blocks[0], "reporting-mta"))
            recipients += [_dsn_recipient(b) for b in blocks if "final-recipient" in b or "original-recipient" in b]
    source = "delivery-status"
    if not recipients:
        # Reports with a mislabelled status part, or forwarded by a person with '> ' quoting.
        source = "delivery-status in text"
        whole = "\n\n".join(part_text(p) for p in msg.walk() if not p.is_multipart())[:200_000]
        recipients = [_dsn_recipient(b) for b in _field_blocks(whole) if "final-recipient" in b]
    if not recipients:
        source = "text"
        recipients = _text_recipients(msg, text)
    return {
        "recipients": recipients[:MAX_RECIPIENTS],
        "reporting_mta": reporting_mta,
        "original_message_id": _original_message_id(msg, text),
        "source": source,
    }


def _dsn_recipient(fields: dict[str, list[str]]) -> dict[str, Any]:
    status = STATUS_CODE.search(_first(fields, "status") or "")
    return {
        "recipient": _report_address(_first(fields, "final-recipient") or _first(fields, "original-recipient")),
        "original_recipient": _report_address(_first(fields, "original-recipient")),
        "action": (_first(fields, "action") or "").lower() or None,
        "status": status.group(1) if status else None,
        "diagnostic_code": truncate(_first(fields, "diagnostic-code"), 1000),
        "remote_mta": _after_semicolon(_first(fields, "remote-mta")),
    }


def _text_recipients(msg: Message, text: str) -> list[dict[str, Any]]:
    """Non-standard bounces (qmail, exim, old sendmail): addresses and the text right after them."""
    report = text[: m.start()] if (m := COPY_OF_MESSAGE.search(text)) else text
    addresses = [a for _n, a in getaddresses([header(msg, "X-Failed-Recipients") or ""]) if "@" in a]
    addresses += ANGLE_RECIPIENT.findall(report)
    found: list[dict[str, Any]] = []
    for address in unique(a.lower() for a in addresses):
        at = report.lower().find(address)
        window = report[at: at + 600] if at >= 0 else report[:600]
        status, reply = STATUS_CODE.search(window), REPLY_CODE.search(window)
        found.append({
            "recipient": address, "original_recipient": None, "action": "failed",
            "status": status.group(1) if status else None,
            "reply_code": reply.group(1) if reply else None,
            "diagnostic_code": truncate(" ".join(window.split()), 500),
            "remote_mta": None,
        })
    return found


def complaint_details(msg: Message, from_address: str | None, text: str) -> dict[str, Any]:
    fields: dict[str, list[str]] = {}
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            blocks = _report_blocks(part)
            fields = blocks[0] if blocks else {}
            break
    original = _original_headers(msg)
    jmrp = jmrp_recipients(msg)
    if is_apple_unsubscribe(msg):
        feedback_type, report_format = "opt-out", "apple-unsubscribe"
        recipients = [from_address] if from_address else []
    elif fields:
        feedback_type, report_format = (_first(fields, "feedback-type") or "abuse").lower(), "arf"
        listed = fields.get("original-rcpt-to", []) + fields.get("removal-recipient", [])
        recipients = [a for a in map(_report_address, listed) if a]
    else:
        feedback_type, report_format = "abuse", "jmrp"
        recipients = jmrp
    if not recipients and original is not None:
        recipients = [a for _n, a in getaddresses([str(original.get("To", ""))]) if "@" in a]
    return {
        "feedback_type": feedback_type,
        "format": report_format,
        "recipients": unique(r.lower() for r in recipients if r)[:MAX_RECIPIENTS],
        "user_agent": _first(fields, "user-agent"),
        "source_ip": _first(fields, "source-ip"),
        "reported_domain": _first(fields, "reported-domain"),
        "original_mail_from": _report_address(_first(fields, "original-mail-from")),
        "arrival_date": _first(fields, "arrival-date") or _first(fields, "received-date"),
        "original_message_id": _original_message_id(msg, text),
    }


def is_apple_unsubscribe(msg: Message) -> bool:
    """Apple Mail's one-button unsubscribe, sent as an ordinary message with this header."""
    return (header(msg, "X-Apple-Unsubscribe") or "").strip().lower() == "true"


def jmrp_recipients(msg: Message) -> list[str]:
    """Microsoft's junk-mail reports attach the message with the complainer in a header of its own."""
    original = _original_headers(msg)
    if original is None:
        return []
    value = original.get("X-HmXmrOriginalRecipient")
    return [str(value).strip().lower()] if value else []


def _original_headers(msg: Message) -> Message | None:
    """The headers of the message a report is about (message/rfc822 or text/rfc822-headers part)."""
    for part in msg.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            return HeaderParser().parsestr(part_text(part))
    return None


def _original_message_id(msg: Message, text: str) -> str | None:
    original = _original_headers(msg)
    if original is not None and original.get("Message-ID"):
        return message_id(str(original.get("Message-ID")))
    match = ORIGINAL_MESSAGE_ID.search(text)
    return message_id(match.group(1)) if match else None


def _report_blocks(part: Message) -> list[dict[str, list[str]]]:
    """Field blocks of a delivery-status or feedback-report part, however the parser stored it."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = []
        for block in payload:
            if not isinstance(block, Message):
                continue
            fields: dict[str, list[str]] = {}
            for name, value in block.raw_items():
                fields.setdefault(name.lower(), []).append(one_line(str(value)) or "")
            blocks.append(fields)
        return blocks
    return _field_blocks(part_text(part))


def _field_blocks(text: str) -> list[dict[str, list[str]]]:
    """'Name: value' blocks separated by blank lines; quoting ('> ') of forwarded reports is ignored."""
    blocks: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] = {}
    last: str | None = None
    for raw_line in text.splitlines():
        line = re.sub(r"^(>[ ]?)+", "", raw_line)
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
        elif line[:1] in (" ", "\t") and last:
            current[last][-1] += " " + line.strip()
        elif match := re.match(r"([A-Za-z][A-Za-z0-9-]{0,60})\s*:\s*(.*)$", line):
            last = match.group(1).lower()
            current.setdefault(last, []).append(match.group(2).strip())
        else:
            last = None
    if current:
        blocks.append(current)
    return blocks


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _report_address(value: str | None) -> str | None:
    """'rfc822; <User@Example.com>' → 'user@example.com'."""
    address = _after_semicolon(value)
    return address.strip("<> \t").lower() or None if address else None


def _after_semicolon(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[-1].strip() or None
