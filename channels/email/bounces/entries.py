"""What a bounce says about each recipient, before classification: the address, the Status field,
the server's words and the SMTP command it answered, from the RFC 3464 fields, the paragraphs
written for people, or (when it names nobody) the attached original."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from email.message import Message

from channels.email.bounces import reasons
from channels.email.bounces.fields import Fields, first, recipient_blocks
from channels.email.bounces.message import addresses, header, original_headers, report_text
from channels.email.bounces.prose import Paragraph, failed_paragraphs
from core.mail import unique

WORDS_CHARS = 4000
RCPT_TO = re.compile(r"RCPT TO:\s*<([^<>\s]+@[^<>\s]+)>", re.IGNORECASE)
DIAGNOSTIC_TYPE = re.compile(r"^\s*([A-Za-z][\w-]*)\s*;\s*")
FAILED_REPLY = re.compile(r"^\W*(?:Out:|<<<)?\s*([45]\d\d[ -].*)$", re.MULTILINE)  # in a session transcript
TRANSCRIPT = re.compile(r"transcript of session follows\W*", re.IGNORECASE)
SESSION_NOISE = re.compile(r"^\s*(?:In:|>>>|(?:Out:|<<<)?\s*[23]\d\d[ -])", re.IGNORECASE)  # commands, successes
FIELDS_START = re.compile(r"^[> ]*(?:Reporting-MTA|Final-Recipient|Original-Recipient):", re.IGNORECASE | re.M)
CONTINUED_REPLY = re.compile(r"(?<![\w.])([245]\d\d)-(?:[245]\.\d\.\d{1,3}\s)?")


@dataclass
class Entry:
    """What a bounce says about one recipient."""

    recipient: str
    status: str = ""  # the Status field, when the report has one
    diagnostic: str = ""  # the server's words about this recipient, on one line
    action: str = ""
    stage: str = ""  # the SMTP command the server answered (RCPT, MAIL, DATA, HELO, CONN)
    local_program: bool = False  # a local delivery program failed (Diagnostic-Code: x-unix)


def bounce_entries(msg: Message) -> list[Entry]:
    report = report_text(msg)
    paragraphs = _recipient_paragraphs(msg, report)
    blocks = recipient_blocks(msg)
    if blocks:
        return [_from_fields(b, paragraphs, report, single=len(blocks) == 1) for b in blocks]
    if paragraphs:
        single = len(paragraphs) == 1
        return [_from_paragraph(p, report, single) for p in paragraphs.values()]
    whom = unique(a.lower() for a in RCPT_TO.findall(report)) or _not_senders(_mentioned(report), msg)
    if whom:
        words = _one_line(_session_words(report))
        return [Entry(a, diagnostic=words, stage=reasons.smtp_stage(report, a)) for a in whom]
    # The report names nobody and says nothing: the attached original says whom it was for.
    original = original_headers(msg)
    return [Entry(a) for a in addresses(header(original, "To"))] if original is not None else []


def _from_fields(fields: Fields, paragraphs: dict[str, Paragraph], report: str, single: bool) -> Entry:
    listed = addresses(first(fields, "final-recipient")) + addresses(first(fields, "original-recipient"))
    recipient = next((a for a in listed if _plausible(a)), "")
    paragraph = paragraphs.get(recipient) or (next(iter(paragraphs.values())) if single and paragraphs else None)
    if not recipient and paragraph is not None:
        recipient = paragraph.address
    code = first(fields, "diagnostic-code")
    diagnostic_type = DIAGNOSTIC_TYPE.match(code)
    diagnostic = code[diagnostic_type.end():] if diagnostic_type else code
    context = _after_address(paragraph.text) if paragraph is not None else ""
    session = _before_fields(report) if single else ""  # one recipient: all the report is about them
    if not re.search(r"[A-Za-z]{3}", diagnostic):
        # "smtp;" or "X-Unix; 77": the words written for people say more.
        diagnostic = " ".join([diagnostic, context, _session_words(session)])
    action = first(fields, "action").split()
    return Entry(
        recipient=recipient,
        status=reasons.find_status(first(fields, "status")),
        diagnostic=_tidy(diagnostic),
        action=action[0].lower() if action else "",
        stage=reasons.smtp_stage(f"{diagnostic}\n{context}\n{session}", recipient),
        local_program=diagnostic_type is not None and diagnostic_type.group(1).lower() == "x-unix",
    )


def _from_paragraph(paragraph: Paragraph, report: str, single: bool) -> Entry:
    said = _after_address(paragraph.text)
    if single and not reasons.find_reply_code(said) and not reasons.find_status(said):
        # Gmail and others name the address, then explain it in the paragraphs below.
        said = " ".join([said, "\n".join(report.splitlines()[paragraph.end:])])
    return Entry(
        recipient=paragraph.address,
        diagnostic=_tidy(said),
        stage=reasons.smtp_stage(paragraph.text) or reasons.smtp_stage(report if single else "", paragraph.address),
        local_program=paragraph.text.lower().lstrip(" \"").startswith(("pipe to |", "|")),
    )


def _recipient_paragraphs(msg: Message, report: str) -> dict[str, Paragraph]:
    """The failed recipients' paragraphs: those Exim lists in X-Failed-Recipients, else every address
    the report opens a paragraph with but the sender's (unless nobody else is named)."""
    found = failed_paragraphs(report)
    failed = [a for a in addresses(header(msg, "X-Failed-Recipients")) if _plausible(a)]
    if failed:
        by_address = {p.address: p for p in found if p.address}
        unnamed = [p for p in found if not p.address]  # Exim's "pipe to |..." without "generated by"
        chosen = {}
        for address in failed:
            paragraph = by_address.get(address) or (unnamed.pop(0) if unnamed else Paragraph(address, 0, [address]))
            chosen[address] = replace(paragraph, address=address)
        return chosen
    named = {p.address: p for p in found if _plausible(p.address)}
    others = _not_senders(list(named), msg)
    return {a: named[a] for a in others} if others else named


def _not_senders(candidates: list[str], msg: Message) -> list[str]:
    """Candidates but the people a bounce goes back to (the original sender) and mail daemons."""
    original = original_headers(msg)
    senders = set(addresses(header(msg, "To")))
    if original is not None:
        senders |= set(addresses(header(original, "From")) + addresses(header(original, "Return-Path")))
    return [a for a in candidates if a not in senders and not a.startswith(("mailer-daemon@", "postmaster@"))]


def _mentioned(report: str) -> list[str]:
    return unique(a for a in addresses(" ".join(re.findall(r"\S+@\S+", report))) if _plausible(a))


def _plausible(address: str) -> bool:
    local, _, domain = address.rpartition("@")
    return bool(local) and "." in domain and not local.startswith(("|", "/"))


def _after_address(text: str) -> str:
    """A paragraph's words without the address that opens it ("<kim@example.com>: host ... said")."""
    return re.sub(r"^[\s\"'<]*\S+@[^\s>:]+>?:?\s*", "", text, count=1)


def _before_fields(report: str) -> str:
    """A report's text up to its machine-readable fields, which some systems print inline."""
    return FIELDS_START.split(report, maxsplit=1)[0]


def _session_words(text: str) -> str:
    """What a report says about the failed session: its transcript (Sendmail, Postfix), else the
    failed replies in it, else all of it."""
    transcript = TRANSCRIPT.split(text, maxsplit=1)
    if len(transcript) == 2:
        return "\n".join(line for line in transcript[1].splitlines() if not SESSION_NOISE.match(line))
    return "\n".join(FAILED_REPLY.findall(text)) or text


def _tidy(text: str) -> str:
    """One line, with the "550-5.7.1" that opens each line of a multi-line reply said once."""
    line = _one_line(text)
    for code in unique(CONTINUED_REPLY.findall(line)):
        opener = re.compile(rf"(?<![\w.]){code}[- ](?:[245]\.\d\.\d{{1,3}}\s)?")
        found = opener.search(line)
        if found is not None:
            line = line[: found.end()].replace(f"{code}-", f"{code} ") + opener.sub("", line[found.end():])
    return line


def _one_line(text: str) -> str:
    return " ".join(text.split())[:WORDS_CHARS]
