"""Complaints: whether a message is one (ARF per RFC 5965, Microsoft's JMRP, Apple Mail's
one-button unsubscribe) and who complained."""

from __future__ import annotations

from email.message import Message

from channels.email.bounces.fields import report_blocks
from channels.email.bounces.message import addresses, header, original_headers, report_parts, report_type
from core.mail import unique


def is_complaint(msg: Message) -> bool:
    if report_type(msg) == "feedback-report" or _apple_unsubscribe(msg):
        return True
    if any(part.get_content_type() == "message/feedback-report" for part in report_parts(msg)):
        return True
    original = original_headers(msg)
    return original is not None and bool(header(original, "X-HmXmrOriginalRecipient"))  # Microsoft JMRP


def complainants(msg: Message) -> list[str]:
    """Who complained: the ARF report's recipients, else the attached original's To (or the
    sender of an Apple Mail unsubscribe)."""
    if _apple_unsubscribe(msg):
        return addresses(header(msg, "From"))[:1]
    for block in report_blocks(msg, ("message/feedback-report",), "feedback-type"):
        listed = block.get("original-rcpt-to", []) + block.get("removal-recipient", [])
        found = unique(a for value in listed for a in addresses(value))
        if found:
            return found
    original = original_headers(msg)
    if original is None:
        return []
    return addresses(header(original, "X-HmXmrOriginalRecipient")) or addresses(header(original, "To"))


def _apple_unsubscribe(msg: Message) -> bool:
    return header(msg, "X-Apple-Unsubscribe").strip().lower() == "true"
