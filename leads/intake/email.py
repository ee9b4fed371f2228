"""Inbound email: tell inquiries from bounces, complaints and auto-replies (`classify`, pure), then
store each message once and turn inquiries into leads (`receive_email`, in the caller's transaction).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import lock_keys
from core.errors import Invalid
from core.logging import get_logger
from core.outbox import emit
from core.settings import Settings
from core.text import scrub
from leads.models import Channel, InboundEmail
from leads.schemas import clean_profile, normalize_email
from leads.service import Origin, find_lead, record_intake

log = get_logger("nurture.inbound_email")

EXCERPT_CHARS = 4000  # enough to read the request; whole threads and signatures are not needed
MAX_RECIPIENTS = 100
MESSAGE_ID_CHARS = 500  # the column is indexed; PostgreSQL refuses index entries over ~2.7 kB

EVENTS = {"bounce": "email.bounced", "complaint": "email.complained", "auto_reply": "email.auto_replied"}

DAEMONS = {"mailer-daemon", "mailer_daemon", "mailerdaemon", "postmaster"}
NO_REPLY = DAEMONS | {"noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply"}

FAILURE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery status notification|delivery (failure|failed|has failed|problem)"
    r"|failure notice|returned mail|returning message|mail delivery failed|mail failure"
    r"|could not be delivered|returned to sender|delayed mail|delivery delayed|message .{0,80}delayed"
    r"|non remis|unzustellbar|недоставлен|не доставлен|не удалось доставить|ошибка доставки"
    r"|возврат(ное)? письм",
    re.IGNORECASE,
)
AUTO_REPLY_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|autorespond"
    r"|автоответ|автоматический ответ|вне офиса|abwesenheitsnotiz|automatische antwort"
    r"|réponse automatique|^\s*(on vacation|vacation reply|в отпуске|отсутствую|нет на месте)",
    re.IGNORECASE,
)
FORWARD_PREFIX = re.compile(r"^\s*((fwd?|fw|re|пересл|отв)\s*:\s*)+", re.IGNORECASE)
DSN_IN_TEXT = re.compile(r"^[>\s]*Final-Recipient\s*:", re.IGNORECASE | re.MULTILINE)
MESSAGE_ID = re.compile(r"<[^<>\s]{1,900}>")
STATUS_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
REPLY_CODE = re.compile(r"\b([245]\d\d)[\s-]")
ANGLE_RECIPIENT = re.compile(r"^[ \t]*<([^<>\s@]+@[^<>\s]+)>", re.MULTILINE)
COPY_OF_MESSAGE = re.compile(
    r"^.{0,20}(copy of the message|original message|returned message|undelivered message|message headers)",
    re.IGNORECASE | re.MULTILINE,
)
ORIGINAL_MESSAGE_ID = re.compile(r"^[>\s]*Message-ID\s*:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass
class ParsedMail:
    """What a raw message is and who it is from, as far as the message says."""

    kind: str  # inquiry | bounce | complaint | auto_reply
    why: str = ""  # the signal that decided the kind, for people reading the record
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    from_address: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    reply_to_name: str | None = None
    to: list[str] = field(default_factory=list)
    subject: str | None = None
    text: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def classify(raw: bytes, *, envelope_from: str | None = None) -> ParsedMail:
    """Parse `raw` (RFC 5322 bytes) and decide its kind. Never raises: garbage is an inquiry
    without a usable sender, which is stored but never becomes a lead."""
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        return _classify(msg, envelope_from)
    except Exception as exc:  # the stdlib parser is lenient, but header access can still trip
        log.warning("unparseable inbound email", error=type(exc).__name__)
        return ParsedMail(kind="inquiry", why="unparseable", details={"unparseable": type(exc).__name__})


def _classify(msg: Message, envelope_from: str | None) -> ParsedMail:
    from_name, from_address = _first_address(msg, "From")
    reply_name, reply_address = _first_address(msg, "Reply-To")
    mail = ParsedMail(
        kind="inquiry",
        message_id=_message_id(_header(msg, "Message-ID")),
        in_reply_to=_message_id(_header(msg, "In-Reply-To")),
        references=_message_ids(" ".join(filter(None, [_header(msg, "References"), _header(msg, "In-Reply-To")]))),
        from_address=from_address,
        from_name=from_name,
        reply_to=reply_address,
        reply_to_name=reply_name,
        to=_all_addresses(msg, ("Delivered-To", "X-Original-To", "To", "Cc")),
        subject=_one_line(_header(msg, "Subject")),
        text=_body_text(msg),
    )
    mail.kind, mail.why = _kind(msg, mail, envelope_from)
    if mail.kind == "bounce":
        mail.details = _bounce_details(msg, mail)
    elif mail.kind == "complaint":
        mail.details = _complaint_details(msg, mail)
    elif mail.kind == "auto_reply":
        mail.details = {"auto_submitted": _header(msg, "Auto-Submitted"), "precedence": _header(msg, "Precedence")}
    mail.details["why"] = mail.why
    mail.text = mail.text[:EXCERPT_CHARS]
    return mail


def _kind(msg: Message, mail: ParsedMail, envelope_from: str | None) -> tuple[str, str]:
    content_type = msg.get_content_type()
    report_type = str(msg.get_param("report-type") or "").lower()
    if content_type == "multipart/report" and report_type == "feedback-report":
        return "complaint", "multipart/report; report-type=feedback-report"
    if content_type == "multipart/report" and report_type == "delivery-status":
        return "bounce", "multipart/report; report-type=delivery-status"
    part_types = {part.get_content_type() for part in msg.walk()}
    if "message/feedback-report" in part_types:
        return "complaint", "message/feedback-report part"
    if part_types & {"message/delivery-status", "message/global-delivery-status"}:
        return "bounce", "message/delivery-status part"
    if (_header(msg, "X-Apple-Unsubscribe") or "").strip().lower() == "true":
        return "complaint", "X-Apple-Unsubscribe"  # Apple Mail's one-button unsubscribe
    if _jmrp_recipients(msg):
        return "complaint", "Microsoft JMRP report"
    if _header(msg, "X-Failed-Recipients"):
        return "bounce", "X-Failed-Recipients"
    sender = _local_part(mail.from_address)
    failure_subject = bool(FAILURE_SUBJECT.search(FORWARD_PREFIX.sub("", mail.subject or "")))
    null_sender = envelope_from == "" or (_header(msg, "Return-Path") or "").strip() == "<>"
    if sender in DAEMONS - {"postmaster"}:
        return "bounce", "sent by MAILER-DAEMON"
    if failure_subject and (sender == "postmaster" or null_sender or DSN_IN_TEXT.search(mail.text)):
        return "bounce", "delivery failure subject"

    auto_submitted = (_header(msg, "Auto-Submitted") or "").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return "auto_reply", f"Auto-Submitted: {auto_submitted}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply"):
        if _header(msg, name) is not None:
            return "auto_reply", name
    precedence = (_header(msg, "Precedence") or "").strip().lower()
    if precedence in {"auto_reply", "bulk", "junk"}:
        return "auto_reply", f"Precedence: {precedence}"
    if AUTO_REPLY_SUBJECT.search(mail.subject or ""):
        return "auto_reply", "automatic reply subject"
    if null_sender:
        # RFC 3834: automatic messages go out with an empty envelope sender; people never do.
        return "auto_reply", "empty envelope sender"
    return "inquiry", ""


# --- bounces and complaints: record what the report says ------------------------------------


def _bounce_details(msg: Message, mail: ParsedMail) -> dict[str, Any]:
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
        text = "\n\n".join(_part_text(p) for p in msg.walk() if not p.is_multipart())[:200_000]
        recipients = [_dsn_recipient(b) for b in _field_blocks(text) if "final-recipient" in b]
    if not recipients:
        source = "text"
        recipients = _text_recipients(msg, mail.text)
    return {
        "recipients": recipients[:MAX_RECIPIENTS],
        "reporting_mta": reporting_mta,
        "original_message_id": _original_message_id(msg, mail.text),
        "source": source,
    }


def _dsn_recipient(fields: dict[str, list[str]]) -> dict[str, Any]:
    status = STATUS_CODE.search(_first(fields, "status") or "")
    return {
        "recipient": _report_address(_first(fields, "final-recipient") or _first(fields, "original-recipient")),
        "original_recipient": _report_address(_first(fields, "original-recipient")),
        "action": (_first(fields, "action") or "").lower() or None,
        "status": status.group(1) if status else None,
        "diagnostic_code": _truncate(_first(fields, "diagnostic-code"), 1000),
        "remote_mta": _after_semicolon(_first(fields, "remote-mta")),
    }


def _text_recipients(msg: Message, text: str) -> list[dict[str, Any]]:
    """Non-standard bounces (qmail, exim, old sendmail): addresses and the text right after them."""
    report = text[: m.start()] if (m := COPY_OF_MESSAGE.search(text)) else text
    addresses = [a for _n, a in getaddresses([_header(msg, "X-Failed-Recipients") or ""]) if "@" in a]
    addresses += ANGLE_RECIPIENT.findall(report)
    found: list[dict[str, Any]] = []
    for address in _unique(a.lower() for a in addresses):
        at = report.lower().find(address)
        window = report[at: at + 600] if at >= 0 else report[:600]
        status, reply = STATUS_CODE.search(window), REPLY_CODE.search(window)
        found.append({
            "recipient": address, "original_recipient": None, "action": "failed",
            "status": status.group(1) if status else None,
            "reply_code": reply.group(1) if reply else None,
            "diagnostic_code": _truncate(" ".join(window.split()), 500),
            "remote_mta": None,
        })
    return found


def _complaint_details(msg: Message, mail: ParsedMail) -> dict[str, Any]:
    fields: dict[str, list[str]] = {}
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            blocks = _report_blocks(part)
            fields = blocks[0] if blocks else {}
            break
    original = _original_headers(msg)
    jmrp = _jmrp_recipients(msg)
    if (_header(msg, "X-Apple-Unsubscribe") or "").strip().lower() == "true":
        feedback_type, report_format = "opt-out", "apple-unsubscribe"
        recipients = [mail.from_address] if mail.from_address else []
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
        "recipients": list(_unique(r.lower() for r in recipients if r))[:MAX_RECIPIENTS],
        "user_agent": _first(fields, "user-agent"),
        "source_ip": _first(fields, "source-ip"),
        "reported_domain": _first(fields, "reported-domain"),
        "original_mail_from": _report_address(_first(fields, "original-mail-from")),
        "arrival_date": _first(fields, "arrival-date") or _first(fields, "received-date"),
        "original_message_id": _original_message_id(msg, mail.text),
    }


def _jmrp_recipients(msg: Message) -> list[str]:
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
            return HeaderParser().parsestr(_part_text(part))
    return None


def _original_message_id(msg: Message, text: str) -> str | None:
    original = _original_headers(msg)
    if original is not None and original.get("Message-ID"):
        return _message_id(str(original.get("Message-ID")))
    match = ORIGINAL_MESSAGE_ID.search(text)
    return _message_id(match.group(1)) if match else None


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
                fields.setdefault(name.lower(), []).append(_one_line(str(value)) or "")
            blocks.append(fields)
        return blocks
    return _field_blocks(_part_text(part))


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


# --- headers, addresses and text ------------------------------------------------------------


def _header(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header the policy cannot parse: fall back to the raw text
        value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    return None if value is None else scrub(str(value))


def _first_address(msg: Message, name: str) -> tuple[str | None, str | None]:
    pairs = _address_pairs(msg, (name,))
    if not pairs:
        return None, None
    display, address = pairs[0]
    return (_one_line(display) or None), (address.strip().lower() or None)


def _all_addresses(msg: Message, names: Sequence[str]) -> list[str]:
    return list(_unique(a.strip().lower() for _d, a in _address_pairs(msg, names) if "@" in a))


def _address_pairs(msg: Message, names: Sequence[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name in names:
        try:
            headers = msg.get_all(name) or []
            for header in headers:
                for address in getattr(header, "addresses", ()):
                    pairs.append((scrub(address.display_name), scrub(address.addr_spec)))
                if not hasattr(header, "addresses"):
                    pairs += [(scrub(d), scrub(a)) for d, a in getaddresses([str(header)])]
        except Exception:
            raw = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
            pairs += [(scrub(d), scrub(a)) for d, a in getaddresses([str(v) for v in raw])]
    return pairs[:MAX_RECIPIENTS]


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    match = MESSAGE_ID.search(value)
    if match:
        return match.group(0)[:MESSAGE_ID_CHARS]
    bare = value.strip()
    return f"<{bare}>"[:MESSAGE_ID_CHARS] if bare and " " not in bare else None


def _message_ids(value: str) -> list[str]:
    return list(_unique(m[:MESSAGE_ID_CHARS] for m in MESSAGE_ID.findall(value)))[:50]


def _local_part(address: str | None) -> str:
    return (address or "").split("@", 1)[0].strip().lower()


def _body_text(msg: Message) -> str:
    """The readable text: the plain part, or text taken out of the HTML part."""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))  # type: ignore[attr-defined]
    except Exception:
        part = None
    if part is None:
        return ""
    text = _part_text(part)
    if part.get_content_type() == "text/html":
        text = html_to_text(text)
    return scrub(text.strip())


def _part_text(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except Exception:  # unknown charset or a broken transfer encoding
        pass
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() if _known_charset(part) else None
        return payload.decode(charset or "utf-8", "replace")
    return payload if isinstance(payload, str) else ""


def _known_charset(part: Message) -> bool:
    import codecs

    try:
        codecs.lookup(part.get_content_charset() or "utf-8")
    except LookupError:
        return False
    return True


class _TextFromHtml(HTMLParser):
    SKIP = {"script", "style", "head", "title"}
    BREAKS = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BREAKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BREAKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextFromHtml()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.chunks).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _one_line(value: str | None) -> str | None:
    return " ".join(value.split()) or None if value else None


def _truncate(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else value


def _unique(values: Iterable[str]) -> Iterable[str]:
    seen: set[str] = set()
    for value in values:
        if value and value not in seen:
            seen.add(value)
            yield value


# --- receiving: store once, act on the kind --------------------------------------------------


@dataclass
class Reception:
    email: InboundEmail
    duplicate: bool  # the same Message-ID arrived before; nothing new was written


async def receive_email(
    session: AsyncSession,
    raw: bytes,
    mail_from: str | None = None,
    rcpt_to: str | Sequence[str] | None = None,
    *,
    settings: Settings,
) -> InboundEmail:
    """Store one inbound message and act on it (see `accept_email`). Never commits."""
    return (await accept_email(session, raw, mail_from, rcpt_to, settings=settings)).email


async def accept_email(
    session: AsyncSession,
    raw: bytes,
    mail_from: str | None = None,
    rcpt_to: str | Sequence[str] | None = None,
    *,
    settings: Settings,
) -> Reception:
    """Store the message once per Message-ID; an inquiry becomes or updates a lead, a bounce,
    complaint or auto-reply becomes an outbox event for the email channel. Never commits."""
    parsed = classify(raw, envelope_from=mail_from)
    if parsed.message_id:
        # A redelivered message (SMTP retry, mail system re-post) must not act twice.
        await lock_keys(session, f"inbound-email:{parsed.message_id}")
        first = await session.scalar(select(InboundEmail).where(InboundEmail.message_id == parsed.message_id))
        if first is not None:
            return Reception(first, duplicate=True)

    envelope_rcpts = [rcpt_to] if isinstance(rcpt_to, str) else list(rcpt_to or [])
    recipients = list(_unique(scrub(r).strip().strip("<>").lower() for r in envelope_rcpts)) + parsed.to
    details = _jsonable_text({**parsed.details, "envelope_from": mail_from, "envelope_to": envelope_rcpts})
    row = InboundEmail(
        kind=parsed.kind,
        message_id=parsed.message_id,
        in_reply_to=parsed.in_reply_to,
        mail_from=_truncate(parsed.from_address or (scrub(mail_from) if mail_from else None), 320),
        rcpt_to=_truncate(recipients[0] if recipients else None, 320),
        subject=_truncate(parsed.subject, 998),
        details=details,
        size=len(raw),
        received_at=clock.now(),
    )
    session.add(row)
    await session.flush()
    if parsed.kind == "inquiry":
        await _record_inquiry(session, row, parsed, recipients, settings)
    else:
        await _report_automatic(session, row, parsed)
    await session.flush()
    return Reception(row, duplicate=False)


async def _record_inquiry(
    session: AsyncSession, row: InboundEmail, parsed: ParsedMail, recipients: list[str], settings: Settings
) -> None:
    # Website contact forms mail "From: noreply@site" with the visitor in Reply-To.
    address, name = parsed.from_address, parsed.from_name
    if parsed.reply_to and parsed.reply_to != parsed.from_address:
        address, name = parsed.reply_to, parsed.reply_to_name
    reason = _unusable_sender(address, settings)
    if reason:
        row.details = {**row.details, "not_a_lead": reason}
        return
    campaign = _plus_campaign(recipients) or await _thread_campaign(session, parsed.references)
    first_name, last_name = split_name(name, address or "")
    profile = clean_profile({"email": address}, None)
    with contextlib.suppress(Invalid):  # an odd display name is no reason to lose the inquiry
        profile.update(clean_profile({"first_name": first_name, "last_name": last_name}, None))
    result = await record_intake(
        session, profile, Origin(channel=Channel.email, source="email", campaign=campaign),
        "email_received",
        {
            "subject": _truncate(parsed.subject, 500), "excerpt": parsed.text, "message_id": parsed.message_id,
            "inbound_email_id": str(row.id), "to": row.rcpt_to,
        },
        overwrite=False,  # a display name must not replace what the lead typed into a form
    )
    row.lead_id = result.lead.id
    row.details = {**row.details, "campaign": campaign}


def _unusable_sender(address: str | None, settings: Settings) -> str | None:
    if not address:
        return "no sender address"
    try:
        normalized = normalize_email(address)
    except Invalid:
        return "sender address is not valid"
    local = _local_part(normalized).split("+", 1)[0]
    if local in NO_REPLY:
        return "sender is an automatic mailbox"
    own = str(getattr(settings, "bounce_address", "") or "").strip().lower()
    if own and (normalized == own or _same_mailbox(normalized, own)):
        return "sender is our own bounce address"
    return None


def _same_mailbox(address: str, other: str) -> bool:
    """bounces+token@d and bounces@d are one mailbox (VERP tags the local part)."""
    local, _, domain = address.partition("@")
    other_local, _, other_domain = other.partition("@")
    return domain == other_domain and local.split("+", 1)[0] == other_local.split("+", 1)[0]


def _plus_campaign(recipients: list[str]) -> str | None:
    """sales+spring-sale@example.com → "spring-sale"."""
    for address in recipients:
        local = address.split("@", 1)[0]
        if "+" in local:
            tag = local.split("+", 1)[1].strip()
            if tag:
                return tag[:200]
    return None


async def _thread_campaign(session: AsyncSession, references: list[str]) -> str | None:
    """A reply keeps the campaign of the message it answers."""
    if not references:
        return None
    earlier = await session.scalars(
        select(InboundEmail)
        .where(InboundEmail.message_id.in_(references), InboundEmail.kind == "inquiry")
        .order_by(InboundEmail.received_at.desc())
    )
    for email in earlier:
        campaign = (email.details or {}).get("campaign")
        if isinstance(campaign, str) and campaign:
            return campaign
    return None


PATRONYMIC = re.compile(r"(ович|евич|ич|овна|евна|ична|инична|кызы|оглы)$", re.IGNORECASE)


def split_name(display: str | None, address: str) -> tuple[str | None, str | None]:
    """"Иван Петров" → (Иван, Петров); "Петров Иван Сергеевич" (Russian order) → (Иван, Петров);
    "Petrov, Ivan" → (Ivan, Petrov). A display name that is just an address gives nothing."""
    if not display or "@" in display or display.strip().lower() == address:
        return None, None
    display = display.strip().strip("'\"").strip()
    if "," in display:
        last, _, first = display.partition(",")
        return (first.strip()[:200] or None), (last.strip()[:200] or None)
    words = display.split()
    if len(words) == 3 and PATRONYMIC.search(words[2]):
        return words[1][:200], words[0][:200]
    if not words:
        return None, None
    return words[0][:200], (" ".join(words[1:])[:200] or None)


async def _report_automatic(session: AsyncSession, row: InboundEmail, parsed: ParsedMail) -> None:
    """Bounces, complaints and auto-replies never become leads; the email channel acts on them."""
    if parsed.kind == "auto_reply" and parsed.from_address:
        # An out-of-office from a known lead is worth noting on that lead, not a new lead.
        try:
            lead = await find_lead(session, email=normalize_email(parsed.from_address))
        except Invalid:
            lead = None
        row.lead_id = lead.id if lead is not None else None
    await emit(
        session,
        EVENTS[parsed.kind],
        {
            **row.details, "inbound_email_id": row.id, "message_id": row.message_id, "lead_id": row.lead_id,
            "mail_from": row.mail_from, "rcpt_to": row.rcpt_to, "subject": row.subject,
        },
    )


def _jsonable_text(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {str(k): _jsonable_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable_text(v) for v in value]
    return value
