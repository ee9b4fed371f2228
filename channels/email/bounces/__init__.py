"""Reading what comes back after a send: bounces (RFC 3464 and the common non-standard formats),
complaints (ARF, RFC 5965) and automatic replies (RFC 3834), recipient by recipient, with a status,
an SMTP reply code, a reason and whether to stop mailing the address. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from channels.email.bounces import complaints, kinds, reasons
from channels.email.bounces.entries import Entry, bounce_entries
from channels.email.bounces.message import addresses, header, parse

DIAGNOSTIC_CHARS = 1000
MAX_RECIPIENTS = 500


@dataclass
class Recipient:
    recipient: str  # lower-cased address; "" when a complaint hides who complained
    status: str = ""  # enhanced status code ("5.1.1"), sisimai's made-up one ("5.0.911") when none was given
    reply_code: str = ""  # three-digit SMTP reply, "" when none was given
    reason: str = "undefined"  # sisimai's reason name: userunknown, mailboxfull, feedback, vacation, ...
    hard: bool = False  # the address itself is undeliverable: stop sending to it
    diagnostic: str = ""  # the server's words, on one line
    action: str = ""  # failed, delayed, delivered, ...


@dataclass
class Report:
    kind: str  # bounce | complaint | auto_reply | other
    recipients: list[Recipient] = field(default_factory=list)


def classify(raw: bytes) -> Report:
    """What a raw message (RFC 5322 bytes) reports, recipient by recipient. Never raises on bad mail."""
    msg = parse(raw)
    kind = kinds.kind(msg)
    if kind == "complaint":
        # A report that hides who complained is still a complaint: its one recipient is "".
        complainants = complaints.complainants(msg)[:MAX_RECIPIENTS] or [""]
        return Report(kind, [Recipient(a, reason="feedback") for a in complainants])
    if kind == "auto_reply":
        return Report(kind, [Recipient(a, reason="vacation") for a in addresses(header(msg, "From"))[:1]])
    if kind == "bounce":
        return Report(kind, [_classified(entry) for entry in bounce_entries(msg)[:MAX_RECIPIENTS]])
    return Report(kind)


def _classified(entry: Entry) -> Recipient:
    status = reasons.preferred_status(entry.status, reasons.find_status(entry.diagnostic))
    reason = reasons.reason_for(status, entry.diagnostic, entry.stage, entry.action, entry.local_program)
    reply_code = reasons.find_reply_code(entry.diagnostic, status[:1])
    if not status:
        temporary = reasons.is_temporary(reply_code, entry.diagnostic, entry.action)
        # Refused at MAIL FROM, the recipient was never examined: its own status is on hold.
        status = reasons.made_up_status("onhold" if entry.stage == "MAIL" else reason, temporary)
        reply_code = reply_code if reply_code[:1] == status[:1] else ""
    return Recipient(
        recipient=entry.recipient, status=status, reply_code=reply_code, reason=reason,
        hard=reasons.is_hard(reason, status, reply_code), diagnostic=entry.diagnostic[:DIAGNOSTIC_CHARS],
        action=entry.action or {"2": "delivered", "4": "delayed", "5": "failed"}.get(status[:1], ""),
    )
