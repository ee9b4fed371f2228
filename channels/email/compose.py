"""The outgoing message as it goes on the wire: text and HTML alternatives, RFC 2047 headers, one-click
unsubscribe (RFC 8058), Feedback-ID, and the VERP envelope sender that brings a bounce back to its
message. Pure, no I/O."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from core import clock
from core.emails import plain_email
from core.errors import Invalid
from core.text import check_text

# Bodies go out as 7bit ASCII or base64, so no relay converts 8bit on the way and breaks the DKIM body hash.
MAX_HEADER_LINE = 78  # RFC 5322 2.1.1: SHOULD fit 78 characters
ENCODED_WORD_BYTES = 45  # base64 of 45 bytes is 60 characters: "=?utf-8?b?…?=" stays within 75 (RFC 2047 2)
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
# An address that needs no more checking (the lead's normalised email mostly is): dot-atoms of ASCII letters,
# digits and the common signs, a lower-case LDH domain with a letter TLD. Anything else gets the validator.
_NEWLINES = re.compile(r"\r\n|\r|\n")
_LONG_LINE = re.compile(r"[^\r\n]{999}")
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")  # a display name that needs no quotes


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
    recipient = email.to_address if plain_email(email.to_address) == email.to_address else \
        _address(email.to_address, "to_address")
    if not _ID.fullmatch(email.message_id) or len(email.message_id) > 128:
        raise Invalid(f"not usable in a Message-ID: {email.message_id!r}", field="message_id")
    envelope = bounce_address(email.bounce_token, email.bounce_domain)
    domain = sender.rpartition("@")[2]
    check_text(email.text, "text")
    headers = [
        f"From: {_mailbox(_one_line(email.from_name, 'from_name'), sender)}",
        f"To: {_mailbox(_one_line(email.to_name, 'to_name'), recipient)}",
    ]
    if email.reply_to:
        headers.append(f"Reply-To: {_address(email.reply_to, 'reply_to')}")
    headers += [
        f"Subject: {_unstructured(_one_line(email.subject, 'subject'), len('Subject: '))}",
        f"Date: {format_datetime(email.date or clock.now())}",
        f"Message-ID: <{email.message_id}@{domain}>",
        f"X-Nurture-Message: {email.message_id}",
        "MIME-Version: 1.0",
    ]
    # Written by hand: the standard library folds a long URL or Feedback-ID into RFC 2047 encoded
    # words, which no mail client reads as a link.
    headers += _unsubscribe_headers(email)
    if email.feedback is not None:
        headers.append(f"Feedback-ID: {email.feedback.header()}")
    head = "\r\n".join(headers).encode("ascii") + b"\r\n"
    if email.html is None:
        return head + _part("text/plain", email.text), envelope  # the part's own headers end the message's
    check_text(email.html, "html")
    boundary = f"=_{secrets.token_hex(12)}"
    head += f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii")
    body = (
        f"--{boundary}\r\n".encode("ascii") + _part("text/plain", email.text)
        + f"\r\n--{boundary}\r\n".encode("ascii") + _part("text/html", email.html)
        + f"\r\n--{boundary}--\r\n".encode("ascii")
    )
    return head + body, envelope


def _part(content_type: str, text: str) -> bytes:
    """A text part's own headers and body: 7bit when it is short-lined ASCII, else base64 of UTF-8 (no
    relay re-encodes either, so the DKIM body hash holds)."""
    # Line endings become CRLF (the common case, text with bare LF only, without the regex).
    normalized = _NEWLINES.sub("\r\n", text) if "\r" in text else text.replace("\n", "\r\n")
    if not normalized.endswith("\r\n"):
        normalized += "\r\n"
    if normalized.isascii() and not _LONG_LINE.search(normalized):
        head = f'Content-Type: {content_type}; charset="us-ascii"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
        return head.encode("ascii") + normalized.encode("ascii")
    encoded = base64.encodebytes(normalized.encode("utf-8")).replace(b"\n", b"\r\n")
    head = f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    return head.encode("ascii") + encoded


def _mailbox(name: str, address: str) -> str:
    if not name:
        return address
    if name.isascii():
        if _ATOMS.fullmatch(name):
            return f"{name} <{address}>"
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'
    return f"{_encoded_words(name)} <{address}>"


def _unstructured(value: str, used: int) -> str:
    """Header text: as is when it is ASCII and fits a line, else RFC 2047 encoded words folded onto lines."""
    if value.isascii() and used + len(value) <= MAX_HEADER_LINE:
        return value
    return _encoded_words(value)


def _encoded_words(value: str) -> str:
    """RFC 2047 B-encoded words of at most 75 characters each, never splitting a character, one per line."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > ENCODED_WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk:
        words.append("".join(chunk))
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words)


def bounce_address(token: str, domain: str) -> str:
    """The VERP envelope sender bounce+<token>@<domain>: a bounce names the message it is about."""
    if not _TOKEN.fullmatch(token) or len(token) > MAX_BOUNCE_TOKEN:
        raise Invalid(
            f"a bounce token is 1 to {MAX_BOUNCE_TOKEN} letters, digits, '_', '-' or '=' (base32 or hex)",
            field="bounce_token",
        )
    # The token is local-part safe (checked above): only the domain needs the validator, once per domain.
    return f"{BOUNCE_PREFIX}+{token}@" + _address(f"{BOUNCE_PREFIX}@{domain}", "bounce_domain").rpartition("@")[2]


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


@lru_cache(maxsize=4096)  # the From and bounce domains are the same for every message
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
