"""What kind of report a returned message is: a complaint, a bounce (a delivery status notification
or a failure notice written for people), an automatic reply (RFC 3834) or none of these."""

from __future__ import annotations

import re
from email.message import Message

from channels.email.bounces.complaints import is_complaint
from channels.email.bounces.message import addresses, header, readable_text, report_parts, report_type

DAEMONS = re.compile(r"^(mailer[-_]?daemon|postmaster|mail[-_]?delivery[-_]?(system|subsystem)?|mdaemon)@", re.I)
FAILURE_SUBJECT = re.compile(
    r"undeliver|not (be )?delivered|delivery (status notification|failure|failed|has failed|problem|delayed)"
    r"|failure notice|returned mail|returning message|mail delivery failed|mail failure|delayed mail"
    r"|returned to sender|non remis|unzustellbar|nicht zustellbar|недоставлен|не доставлен|не удалось доставить"
    r"|ошибка доставки|возврат\w* письм",
    re.IGNORECASE,
)
# The opening words of bounces written for people, in the common mail systems and languages.
FAILURE_TEXT = re.compile(
    r"created automatically by mail delivery software|this is the qmail-send program|could not be delivered"
    r"|delivery (to the following recipients? )?(has )?failed|the following addresses had permanent fatal errors"
    r"|wasn't able to deliver|did not reach the following recipient|undeliverable|unable to deliver"
    r"|не (может быть|удалось|было) доставлен|не доставлено|не удалось доставить",
    re.IGNORECASE,
)
AUTO_REPLY_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|autorespond"
    r"|автоответ|автоматический ответ|вне офиса|abwesenheitsnotiz|automatische antwort|réponse automatique",
    re.IGNORECASE,
)
REPORT_TYPES = ("message/delivery-status", "message/global-delivery-status")


def kind(msg: Message) -> str:
    if is_complaint(msg):
        return "complaint"
    if _is_bounce(msg):
        return "bounce"
    if _is_auto_reply(msg):
        return "auto_reply"
    return "other"


def _is_bounce(msg: Message) -> bool:
    if report_type(msg) == "delivery-status" or header(msg, "X-Failed-Recipients"):
        return True
    if any(part.get_content_type() in REPORT_TYPES for part in report_parts(msg)):
        return True
    sender = addresses(header(msg, "From"))
    if sender and re.match(r"mailer[-_]?daemon@", sender[0], re.IGNORECASE):
        return True
    from_system = bool(sender) and DAEMONS.match(sender[0]) is not None
    null_sender = header(msg, "Return-Path").strip() == "<>"
    failure_subject = FAILURE_SUBJECT.search(header(msg, "Subject")) is not None
    text = readable_text(msg)[:20_000]
    if from_system or null_sender:
        return failure_subject or FAILURE_TEXT.search(text) is not None
    # A person forwarding a bounce: its delivery status fields are quoted in the text.
    return failure_subject and re.search(r"^[> ]*Final-Recipient:", text, re.IGNORECASE | re.MULTILINE) is not None


def _is_auto_reply(msg: Message) -> bool:
    submitted = header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return True
    if any(header(msg, name) for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder")):
        return True
    if header(msg, "Precedence").strip().lower() == "auto_reply":
        return True
    return AUTO_REPLY_SUBJECT.search(header(msg, "Subject")) is not None
