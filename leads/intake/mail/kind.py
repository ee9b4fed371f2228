"""What kind a raw message is: an inquiry from a person, a bounce, a complaint or an automatic reply
(RFC 3834), with the signal that decided it (`classify`, pure, never raises)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any

from core.logging import get_logger
from leads.intake.mail.message import (
    all_addresses,
    body_text,
    first_address,
    header,
    local_part,
    message_id,
    message_ids,
    one_line,
)
from leads.intake.mail.reports import bounce_details, complaint_details, is_apple_unsubscribe, jmrp_recipients

log = get_logger("nurture.inbound_email")

EXCERPT_CHARS = 4000  # enough to read the request; whole threads and signatures are not needed

DAEMONS = {"mailer-daemon", "mailer_daemon", "mailerdaemon", "postmaster"}

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
    from_name, from_address = first_address(msg, "From")
    reply_name, reply_address = first_address(msg, "Reply-To")
    mail = ParsedMail(
        kind="inquiry",
        message_id=message_id(header(msg, "Message-ID")),
        in_reply_to=message_id(header(msg, "In-Reply-To")),
        references=message_ids(" ".join(filter(None, [header(msg, "References"), header(msg, "In-Reply-To")]))),
        from_address=from_address,
        from_name=from_name,
        reply_to=reply_address,
        reply_to_name=reply_name,
        to=all_addresses(msg, ("Delivered-To", "X-Original-To", "To", "Cc")),
        subject=one_line(header(msg, "Subject")),
        text=body_text(msg),
    )
    mail.kind, mail.why = _kind(msg, mail, envelope_from)
    if mail.kind == "bounce":
        mail.details = bounce_details(msg, mail.text)
    elif mail.kind == "complaint":
        mail.details = complaint_details(msg, mail.from_address, mail.text)
    elif mail.kind == "auto_reply":
        mail.details = {"auto_submitted": header(msg, "Auto-Submitted"), "precedence": header(msg, "Precedence")}
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
    if is_apple_unsubscribe(msg):
        return "complaint", "X-Apple-Unsubscribe"
    if jmrp_recipients(msg):
        return "complaint", "Microsoft JMRP report"
    if header(msg, "X-Failed-Recipients"):
        return "bounce", "X-Failed-Recipients"
    sender = local_part(mail.from_address)
    failure_subject = bool(FAILURE_SUBJECT.search(FORWARD_PREFIX.sub("", mail.subject or "")))
    null_sender = envelope_from == "" or (header(msg, "Return-Path") or "").strip() == "<>"
    if sender in DAEMONS - {"postmaster"}:
        return "bounce", "sent by MAILER-DAEMON"
    if failure_subject and (sender == "postmaster" or null_sender or DSN_IN_TEXT.search(mail.text)):
        return "bounce", "delivery failure subject"

    auto_submitted = (header(msg, "Auto-Submitted") or "").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return "auto_reply", f"Auto-Submitted: {auto_submitted}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply"):
        if header(msg, name) is not None:
            return "auto_reply", name
    precedence = (header(msg, "Precedence") or "").strip().lower()
    if precedence in {"auto_reply", "bulk", "junk"}:
        return "auto_reply", f"Precedence: {precedence}"
    if AUTO_REPLY_SUBJECT.search(mail.subject or ""):
        return "auto_reply", "automatic reply subject"
    if null_sender:
        # RFC 3834: automatic messages go out with an empty envelope sender; people never do.
        return "auto_reply", "empty envelope sender"
    return "inquiry", ""
