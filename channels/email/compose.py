"""The outgoing message as it goes on the wire: text and HTML alternatives, RFC 2047 headers, one-click
unsubscribe (RFC 8058), Feedback-ID, and the VERP envelope sender that brings a bounce back to its
message. Pure, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from email_validator import EmailNotValidError, validate_email

from core import clock
from core.errors import Invalid
from core.text import check_text

# 7bit: bodies go out as quoted-printable or base64, so no relay converts 8bit on the way and
# breaks the DKIM body hash.
WIRE = policy.SMTP.clone(cte_type="7bit")
BOUNCE_PREFIX = "bounce"
MAX_BOUNCE_TOKEN = 64 - len(BOUNCE_PREFIX) - 1  # a local part is at most 64 octets (RFC 5321 4.5.3.1.1)
FEEDBACK_SENDER_ID = "nurture"  # the last, mandatory field of Gmail's Feedback-ID
MAX_URL = 900  # a header line stays under 998 octets (RFC 5322 2.1.1)

# Local-part-safe without quoting; base32 or hex survive even a receiver that changes the case.
_TOKEN = re.compile(r"[A-Za-z0-9_=-]+")
_ID = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_FEEDBACK_FIELD = re.compile(r"[A-Za-z0-9._-]{1,200}")
_URL = re.compile(r"https?://[!-~]+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Feedback:
    """Gmail Postmaster Tools' Feedback-ID (a:b:c:SenderId): complaint rates per campaign, step and sender."""

    campaign: str
    step: str
    sender: str  # who the mail is from in our words (an account or brand id)

    def header(self) -> str:
        for name, value in (("campaign", self.campaign), ("step", self.step), ("sender", self.sender)):
            if not _FEEDBACK_FIELD.fullmatch(value):
                message = f"letters, digits, '.', '_' or '-' only, at most 200: {value!r}"
                raise Invalid(message, field=f"feedback.{name}")
        return f"{self.campaign}:{self.step}:{self.sender}:{FEEDBACK_SENDER_ID}"


@dataclass(frozen=True)
class OutgoingEmail:
    message_id: str  # ours (the delivery's id): Message-ID <id@from-domain> and X-Nurture-Message
    from_address: str
    to_address: str
    subject: str
    text: str
    bounce_token: str  # signed by the caller; the envelope sender is bounce+<token>@<bounce_domain>
    bounce_domain: str
    html: str | None = None
    from_name: str = ""
    to_name: str = ""
    reply_to: str | None = None
    # Marketing mail must offer one-click unsubscribe (List-Unsubscribe-Post); transactional mail
    # gets List-Unsubscribe only when a link is given.
    marketing: bool = True
    unsubscribe_url: str | None = None  # https://…/u/<token>
    unsubscribe_mailto: str | None = None  # unsubscribe+<token>@<domain>
    feedback: Feedback | None = None
    date: datetime | None = None  # default: core.clock.now()


def compose(email: OutgoingEmail) -> tuple[bytes, str]:
    """The message (CRLF line endings, ready for DKIM signing and DATA) and the envelope sender (MAIL FROM)."""
    sender = _address(email.from_address, "from_address")
    recipient = _address(email.to_address, "to_address")
    if not _ID.fullmatch(email.message_id) or len(email.message_id) > 128:
        raise Invalid(f"not usable in a Message-ID: {email.message_id!r}", field="message_id")
    envelope = bounce_address(email.bounce_token, email.bounce_domain)

    msg = EmailMessage(policy=WIRE)
    msg["From"] = Address(_one_line(email.from_name, "from_name"), addr_spec=sender)
    msg["To"] = Address(_one_line(email.to_name, "to_name"), addr_spec=recipient)
    if email.reply_to:
        msg["Reply-To"] = _address(email.reply_to, "reply_to")
    msg["Subject"] = _one_line(email.subject, "subject")
    msg["Date"] = format_datetime(email.date or clock.now())
    msg["Message-ID"] = f"<{email.message_id}@{sender.rpartition('@')[2]}>"
    msg["X-Nurture-Message"] = email.message_id
    check_text(email.text, "text")
    msg.set_content(email.text)
    if email.html is not None:
        check_text(email.html, "html")
        msg.add_alternative(email.html, subtype="html")

    # Written by hand: the standard library folds a long URL or Feedback-ID into RFC 2047 encoded
    # words, which no mail client reads as a link.
    raw_headers = _unsubscribe_headers(email)
    if email.feedback is not None:
        raw_headers.append(f"Feedback-ID: {email.feedback.header()}")
    message = msg.as_bytes()
    if raw_headers:
        end = message.index(b"\r\n\r\n") + 2
        message = message[:end] + "".join(f"{line}\r\n" for line in raw_headers).encode("ascii") + message[end:]
    return message, envelope


def bounce_address(token: str, domain: str) -> str:
    """The VERP envelope sender bounce+<token>@<domain>: a bounce names the message it is about."""
    if not _TOKEN.fullmatch(token) or len(token) > MAX_BOUNCE_TOKEN:
        raise Invalid(
            f"a bounce token is 1 to {MAX_BOUNCE_TOKEN} letters, digits, '_', '-' or '=' (base32 or hex)",
            field="bounce_token",
        )
    return _address(f"{BOUNCE_PREFIX}+{token}@{domain}", "bounce_domain")


def parse_bounce_address(address: str, domain: str | None = None) -> str | None:
    """The token of bounce+<token>@<domain> (angle brackets allowed), or None for any other address.
    With `domain`, only an address at that domain counts. The caller checks the token's signature."""
    local, at, host = address.strip().removeprefix("<").removesuffix(">").rpartition("@")
    prefix, plus, token = local.partition("+")
    if not at or not plus or prefix.lower() != BOUNCE_PREFIX:
        return None
    if not _TOKEN.fullmatch(token) or len(token) > MAX_BOUNCE_TOKEN:
        return None
    if domain is not None and host.rstrip(".").lower() != domain.rstrip(".").lower():
        return None
    return token


def _unsubscribe_headers(email: OutgoingEmail) -> list[str]:
    links = []
    if email.unsubscribe_url is not None:
        # Plain http is allowed for local installs; RFC 8058 wants https in production (NURTURE_BASE_URL).
        if not _URL.fullmatch(email.unsubscribe_url) or len(email.unsubscribe_url) > MAX_URL or any(
            c in email.unsubscribe_url for c in "<>,"
        ):
            raise Invalid(f"not a usable unsubscribe link: {email.unsubscribe_url!r}", field="unsubscribe_url")
        links.append(f"<{email.unsubscribe_url}>")
    if email.unsubscribe_mailto is not None:
        links.append(f"<mailto:{_address(email.unsubscribe_mailto, 'unsubscribe_mailto')}>")
    if email.marketing and email.unsubscribe_url is None:
        raise Invalid("marketing mail needs a one-click unsubscribe link (RFC 8058)", field="unsubscribe_url")
    if not links:
        return []
    lines = ["List-Unsubscribe: " + ",\r\n ".join(links)]
    if email.marketing:
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    return lines


def _address(value: str, field: str) -> str:
    """An address as it can go out without SMTPUTF8: ASCII, an IDN domain in its xn-- form."""
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise Invalid(f"not a valid email address: {exc}", field=field) from None
    if checked.ascii_email is None:
        raise Invalid(f"a non-ASCII mailbox name needs SMTPUTF8, which we do not send: {value!r}", field=field)
    return checked.ascii_email


def _one_line(value: str, field: str) -> str:
    """Header text from templates and lead data: line breaks would be a header injection, so they become spaces."""
    check_text(value, field)
    return _SPACE.sub(" ", value).strip()
