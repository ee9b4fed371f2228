"""Why a delivery failed, from the status code, the SMTP reply and the server's words: reason names,
made-up status codes and the hard/soft split follow sisimai's conventions (libsisimai.org)."""

from __future__ import annotations

import re

# Enhanced status codes (RFC 3463), by subject.detail, that name a reason on their own.
STATUS_REASONS = {
    "1.0": "userunknown", "1.1": "userunknown", "1.2": "hostunknown", "1.3": "userunknown", "1.4": "filtered",
    "1.6": "hasmoved", "1.7": "rejected", "1.8": "rejected", "1.9": "systemerror", "1.10": "notaccept",
    "2.0": "filtered", "2.1": "filtered", "2.2": "mailboxfull", "2.3": "exceedlimit", "2.4": "filtered",
    "3.0": "systemerror", "3.1": "systemfull", "3.2": "notaccept", "3.3": "systemerror", "3.4": "mesgtoobig",
    "3.5": "systemerror", "4.1": "expired", "4.2": "networkerror", "4.3": "systemerror", "4.4": "networkerror",
    "4.5": "toomanyconn", "4.6": "networkerror", "4.7": "expired", "5.3": "toomanyconn", "5.4": "systemerror",
    "5.5": "systemerror", "5.6": "securityerror", "7.1": "blocked", "7.2": "blocked", "7.13": "suspend",
    "7.16": "mesgtoobig", "7.17": "hasmoved", "7.18": "hasmoved", "7.20": "authfailure", "7.21": "authfailure",
    "7.22": "authfailure", "7.23": "authfailure", "7.24": "authfailure", "7.25": "requireptr",
    "7.26": "authfailure", "7.27": "notaccept",
}
# Codes that settle the reason whatever the words around them (the words may be boilerplate). Not
# x.1.10: RFC 7505 means a null MX by it, Microsoft an unknown recipient; the words tell which.
DECISIVE_STATUSES = {"1.1", "1.2", "1.3", "1.6", "1.7", "1.8", "2.2", "2.3", "3.1", "3.4", "7.13", "7.16",
                     "7.17", "7.18", "7.20", "7.21", "7.22", "7.23", "7.24", "7.25", "7.26", "7.27"}
# "Other or undefined" temporary codes say nothing of their own (as in sisimai's table).
UNDEFINED_STATUSES = {"4.3.0", "4.4.3", "4.5.0", "4.7.0"}
# Reply codes of the SMTP standards (RFC 5321, 3463, 4954, 5248, 7505); others are not replies.
REPLY_CODES = {
    "211", "214", "220", "221", "235", "250", "251", "252", "253", "334", "354", "421", "422", "430", "432",
    "450", "451", "452", "453", "454", "455", "458", "459", "500", "501", "502", "503", "504", "521", "523",
    "525", "530", "534", "535", "538", "550", "551", "552", "553", "554", "555", "556",
}

# sisimai's made-up codes for a reason when the message gives none: class.0.9xx.
MADE_UP_DETAIL = {
    "blocked": "971", "contenterror": "960", "exceedlimit": "923", "expired": "947", "filtered": "910",
    "hasmoved": "916", "hostunknown": "912", "mailboxfull": "922", "mailererror": "939", "mesgtoobig": "934",
    "networkerror": "944", "norelaying": "909", "notaccept": "932", "onhold": "901", "rejected": "918",
    "securityerror": "970", "spamdetected": "980", "suspend": "921", "systemerror": "930", "systemfull": "931",
    "syntaxerror": "902", "toomanyconn": "945", "userunknown": "911", "undefined": "900", "policyviolation": "972",
    "requireptr": "973", "authfailure": "970", "badreputation": "971", "virusdetected": "980",
    "notcompliantrfc": "960", "speeding": "945",
}
# The reasons whose made-up code can be temporary (4.0.9xx); the others are always 5.0.9xx.
CAN_BE_TEMPORARY = {"blocked", "contenterror", "expired", "filtered", "mailboxfull", "networkerror", "notaccept",
                    "onhold", "rejected", "securityerror", "spamdetected", "systemerror", "systemfull",
                    "toomanyconn", "undefined"}
HARD = {"userunknown", "hostunknown", "hasmoved"}


def _phrases(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(patterns), re.IGNORECASE)


# What mail servers write, English and Russian, by reason. The order is the order of trial: the
# narrow reasons come before the broad ones (a full mailbox before "rejected", a refused sender
# before an unknown user, DMARC and PTR before "blocked").
PHRASES: dict[str, re.Pattern[str]] = {
    "mailboxfull": _phrases(
        r"mailbox (is )?full", r"mailbox.{0,20}(over|exceeded).{0,10}(quota|size|limit)", r"over ?quota",
        r"quota (exceeded|violation)", r"(disk|storage|mailbox) quota", r"account is full", r"user is over",
        r"exceeded (his|her|their|the) (storage|quota)", r"insufficient (space|storage) (in|for) (the )?(mailbox|user)",
        r"переполнен", r"превышен\w* (лимит|размер|объ[её]м|квот)", r"нет места",
    ),
    "mesgtoobig": _phrases(
        r"message (is )?too (big|large)", r"message (size|length) exceeds", r"size limit", r"line limit exceeded",
        r"exceeds? (the )?(maximum|max)\b.{0,20}size", r"too big for (the )?system", r"письмо слишком больш",
        r"превышает (максимально )?допустимый размер",
    ),
    "exceedlimit": _phrases(r"exceeds? (the )?(per-user|per-mailbox|administrative) limit"),
    "suspend": _phrases(
        r"(account|mailbox|user|address)( \S+){0,2} (has been |is |was )?(disabled|suspended|inactive|deactivated"
        r"|locked|frozen|closed|discontinued)",
        r"disabled (recipient|user|mailbox|account)", r"not an active (user|mailbox|account)",
        r"(ящик|аккаунт|учетная запись|учётная запись|пользователь)( \S+){0,2} (заблокирован|отключ[её]н|неактив"
        r"|заморожен|удал[её]н)",
    ),
    "hasmoved": _phrases(r"has moved", r"user not local", r"no longer (on|at|with|in use|valid|active)",
                         r"not our (user|customer)", r"address has changed"),
    "norelaying": _phrases(
        r"relay(ing)? (access )?(denied|not (permitted|allowed))", r"not (permitted|allowed|configured) to relay",
        r"unable to relay", r"we do not relay", r"no relaying", r"relay prohibited", r"not a gateway",
    ),
    "authfailure": _phrases(r"\bdmarc\b", r"\bspf\b.{0,30}(fail|record|check|validat)", r"sender policy framework",
                            r"\bdkim (signature )?(fail|invalid|verif)", r"unauthenticated (e-?mail|message)",
                            r"does not have authentication information"),
    "toomanyconn": _phrases(r"too many (connections|sessions|concurrent|simultaneous|recipients|errors)",
                            r"connection (rate )?limit"),
    "speeding": _phrases(r"rate limit", r"receiving mail at a rate", r"too (fast|quickly)", r"sending rate",
                         r"too many (messages|emails|mails)", r"throttl"),
    "requireptr": _phrases(r"\bptr\b", r"reverse (dns|lookup|name)", r"\brdns\b", r"ip name (lookup|possibly)",
                           r"(cannot|can't|unable to) (resolve|find) your (host ?name|ip|address)"),
    "rejected": _phrases(
        r"sender (address )?(rejected|refused|denied|invalid|unknown|not allowed|blocked|verify failed)",
        r"(domain of )?sender (address|domain)\b.{0,80}(does not|doesn't|not) (exist|resolve)",
        r"unroutable sender", r"invalid sender", r"bad sender", r"sender verification failed",
        r"mail from .{0,80} rejected", r"(sending (to|from)|sender).{0,30} address .{0,30}(blacklisted|blocked)",
    ),
    "userunknown": _phrases(
        r"(user|recipient|mailbox|address|account)( name)? (unknown|not found|not exist)", r"no mailbox here",
        r"unknown (user|recipient|mailbox|address|local.?part|or illegal)", r"recipient ?not ?found",
        r"no such (user|mailbox|recipient|account|person)", r"invalid (recipient|mailbox|user)",
        r"(user|recipient|mailbox|account|address|addressee)( \S+){0,6} (does not|doesn't|did not) exist",
        r"(doesn't|does not) have an? .{1,40} account", r"(is )?not a valid (mailbox|user|recipient)",
        r"mailbox unavailable", r"recipient address rejected: access denied", r"recipient address rejected\s*\.?$",
        r"(?<!sender )address (rejected|invalid)\b", r"no (mailbox|account) (by|with) that name",
        r"пользовател\w* не (найден|существует)", r"нет такого (пользователя|ящика|адреса)",
        r"(адрес|ящик|получател\w*)( \S+){0,2} не (найден|существует)", r"несуществующ\w* (адрес|ящик|пользовател)",
        r"неизвестн\w* (пользовател|получател|адрес)",
    ),
    "filtered": _phrases(
        r"(refused|rejected|blocked) by (the )?recipient", r"recipient (has )?(refused|rejected|blocked)",
        r"user refuses", r"only accept(ing|s)? (mail|messages) from", r"recipient preferences",
        r"not accepting (mail|messages) from",
    ),
    "hostunknown": _phrases(
        r"host (or domain name )?(unknown|not found)(?!,? try again)", r"unknown (host|domain)",
        r"no such (host|domain)", r"domain may not exist", r"couldn't find any host", r"no mx (record|host)",
        r"domain (name )?(not found|does not exist|doesn't exist|is not valid|unknown)",
        r"unrouteable (mail )?(domain|address)", r"non-existent (host|domain)", r"\bnxdomain\b",
        r"(?<![@\w.-])([a-z0-9-]+\.)+[a-z]{2,} does not exist",
        r"домен\w*( \S+){0,2} не (найден|существует)", r"неизвестн\w* домен",
    ),
    "notaccept": _phrases(r"(does not|doesn't|not) accept(ing)? (any )?(e-?)?mail", r"null mx",
                          r"couldn't find a mail exchanger"),
    "virusdetected": _phrases(r"\bvirus", r"malware", r"infected", r"trojan", r"вирус"),
    "badreputation": _phrases(r"reputation", r"user complaints"),
    "spamdetected": _phrases(r"\bspam\b", r"junk mail", r"unsolicited", r"\bube\b", r"bulk (e-?)?mail",
                             r"content rejected", r"спам"),
    "notcompliantrfc": _phrases(
        r"(not|non)[- ](rfc[- ]?)?(compliant|conformant)", r"violates rfc", r"rfc ?5322 (compli|viol)",
        r"multiple (addresses|senders) in from", r"duplicate (from|to|subject|date|message-id) header",
    ),
    "blocked": _phrases(
        r"block ?list", r"black ?list", r"\brbl\b", r"dnsbl", r"spamhaus", r"spamcop", r"banned sending ip",
        r"\b(ip|client host|client|your host|sending host|sender ip)( address)?( \S+){0,3} (is |has been |was )?"
        r"(blocked|banned|rejected|listed|blacklisted)",
        r"blocked (for abuse|using)", r"dynamic ip", r"dial-?up", r"residential", r"smtp server of your isp",
        r"use your (isp|provider)", r"not allowed to send",
    ),
    "policyviolation": _phrases(
        r"policy (reasons|violation)", r"violat", r"(denied|rejected) (by|due to) (local )?policy", r"local policy",
        r"prohibited (file|attachment)", r"content .{0,30}potential", r"header error",
    ),
    "contenterror": _phrases(r"8-?bit data", r"invalid (mime|header)", r"headers? too (large|long)",
                             r"duplicate header", r"malformed (header|message)"),
    "securityerror": _phrases(r"authenticat\w* (is )?required", r"must (be )?authenticat", r"unauthenticated senders",
                              r"requires? authentication", r"\btls\b.{0,20}required", r"encryption required",
                              r"starttls", r"forged"),
    "systemfull": _phrases(r"insufficient (system|disk) (storage|space)", r"(system|disk|spool) (is )?full",
                           r"no space left", r"out of disk"),
    "systemerror": _phrases(r"system error", r"internal (server )?error", r"local error", r"server error",
                            r"(ldap|directory) server", r"temporary local problem", r"transaction failed",
                            r"could not load", r"too many clients", r"queue file write error"),
    "networkerror": _phrases(
        r"host not found, try again", r"name service error", r"name server", r"host name lookup failure",
        r"dns (lookup )?(error|failure|timeout)", r"temporary failure in name resolution",
        r"connection (refused|reset|timed out|lost)", r"lost connection", r"no route to host",
        r"network is unreachable", r"(unable|failed) to connect", r"(couldn't|could not|wasn't able to) (connect"
        r"|establish)", r"routing loop", r"mail loop", r"loops back", r"too many hops", r"forwarded more than",
    ),
    "mailererror": _phrases(r"pipe to \|", r"\"\|", r"procmail", r"mailer error", r"command (died|failed)",
                            r"exit (code|status)", r"delivery program"),
    "syntaxerror": _phrases(r"syntax error", r"command (not recognized|unrecognized)", r"bad sequence of commands",
                            r"improper sequence", r"command parameter not implemented", r"malformed address"),
}
# Tried last of all: queue expiry is what a report says after giving up on any other reason.
EXPIRED = _phrases(r"retry timeout exceeded", r"failing for a long time", r"delivery time expired",
                   r"message expired", r"(in|on) the queue too long", r"could not be delivered for \d+",
                   r"message timed out", r"undelivered after \d+")
# Reasons that, said before the recipient was named (MAIL FROM, HELO), are about the sender instead.
ABOUT_RECIPIENT = {"userunknown", "hostunknown", "filtered"}

STATUS_AFTER_HASH = re.compile(r"#([245]\.\d\.\d{1,3})\b")
STATUS_AFTER_REPLY = re.compile(r"(?<![\w.])[245]\d\d[ -]#?([245]\.\d\.\d{1,3})(?![\d.]*\d)")
STATUS_ANYWHERE = re.compile(r"(?<![\w.])([245]\.\d\.\d{1,3})(?![.]?\d)")
REPLY_WITH_STATUS = re.compile(r"(?<![\w.])([245]\d\d)[ -]#?[245]\.\d\.\d{1,3}")
REPLY_ALONE = re.compile(r"(?:^|(?<=[\s:;'\"(\[<>]))([245][0-5]\d)(?=[ -]|$|[;:,'\"\])])")

# The SMTP stage the remote server answered at, as Postfix, Exim, Sendmail and qmail write it.
STAGES = [
    re.compile(r"in reply to (?:the )?(rcpt to|mail from|end of data|data|ehlo|helo|\w+) command", re.I),
    re.compile(r"after (rcpt to|mail from|end of data|data|ehlo|helo|initial connection)", re.I),
    re.compile(r"(does not like recipient|most progress was rcpt|sender was rejected|my name was rejected"
               r"|failed after i sent the message|refused to talk to me|while performing the helo)", re.I),
]
SENDMAIL_SENT = re.compile(r"^>>> (rcpt to|mail from|data|ehlo|helo)", re.I | re.M)
SENDMAIL_ERROR = re.compile(r"^<<< [45]\d\d.*$", re.M)
STAGE_NAMES = {
    "rcpt to": "RCPT", "does not like recipient": "RCPT", "most progress was rcpt": "RCPT",
    "mail from": "MAIL", "sender was rejected": "MAIL", "end of data": "DATA", "data": "DATA",
    "failed after i sent the message": "DATA", "ehlo": "HELO", "helo": "HELO", "my name was rejected": "HELO",
    "while performing the helo": "HELO", "initial connection": "CONN", "refused to talk to me": "CONN",
}
TEMPORARY = _phrases(r"temporar", r"persistent", r"deferred", r"retry timeout",
                     r"will (continue|keep) (trying|retrying)")


def find_status(text: str) -> str:
    """The enhanced status code a server wrote ("550 5.1.1 ...", "(#5.1.1)"), failures before successes."""
    for pattern in (STATUS_AFTER_HASH, STATUS_AFTER_REPLY, STATUS_ANYWHERE):
        codes = pattern.findall(text)
        failures = [c for c in codes if c[0] in "45"]
        if failures or codes:
            return (failures or codes)[0]
    return ""


def find_reply_code(text: str, status_class: str = "") -> str:
    """The three-digit SMTP reply, of the same class as the status when one is known."""
    codes = [c for c in REPLY_WITH_STATUS.findall(text) + REPLY_ALONE.findall(text) if c in REPLY_CODES]
    if status_class:
        codes = [c for c in codes if c[0] == status_class]
    failures = [c for c in codes if c[0] in "45"]
    return (failures or codes or [""])[0]


def smtp_stage(text: str, address: str = "") -> str:
    """RCPT, MAIL, DATA, HELO or CONN: where the remote server said no, "" when the text doesn't say.
    In a Sendmail transcript it is the last command sent before the error about `address`."""
    for pattern in STAGES:
        match = pattern.search(text)
        if match:
            return STAGE_NAMES.get(match.group(1).lower(), match.group(1).upper())
    errors = [m for m in SENDMAIL_ERROR.finditer(text) if address.lower() in m.group(0).lower()]
    sent = [m for m in SENDMAIL_SENT.finditer(text) if not errors or m.start() < errors[0].start()]
    return STAGE_NAMES.get(sent[-1].group(1).lower(), "") if sent else ""


def preferred_status(reported: str, written: str) -> str:
    """The Status field against the code in the server's text: the text is closer to the failure,
    unless it only says "x.0.0" or it contradicts the field's class."""
    if not reported or not written:
        return reported or written
    if reported[0] != written[0] or written.endswith(".0.0"):
        return reported
    return written


def reason_for(status: str, text: str, stage: str = "", action: str = "", local_program: bool = False) -> str:
    """The reason name for one recipient: `text` is the server's words, `stage` the SMTP command it
    answered, `local_program` a local delivery program's failure (Diagnostic-Code: x-unix)."""
    if status.startswith("2.") or action in ("delivered", "relayed", "expanded"):
        return "delivered"
    said = " ".join(text.split())
    if local_program:
        return "mailboxfull" if PHRASES["mailboxfull"].search(said) else "mailererror"
    detail = status.split(".", 1)[1] if status.count(".") == 2 else ""
    coded = "" if status in UNDEFINED_STATUSES else STATUS_REASONS.get(detail, "")
    if detail.startswith("1.") and stage == "MAIL":
        return "rejected"  # an address problem reported at MAIL FROM is the sender's
    if detail in DECISIVE_STATUSES:
        return coded
    for reason in PHRASES:
        if _says(reason, said, stage):
            # "User unknown" only after DATA is a filter's refusal: the address was accepted at RCPT.
            return "filtered" if reason == "userunknown" and stage == "DATA" else reason
    if stage == "MAIL":
        return "rejected"  # the envelope sender was refused before the recipient was even named
    if stage in ("CONN", "HELO"):
        return "blocked"  # refused before any address: the sending host itself
    if coded:
        return coded
    if detail.startswith("6."):
        return "contenterror"
    if detail.startswith("7."):
        return "securityerror"
    if EXPIRED.search(said) or action == "delayed":
        return "expired"
    if find_reply_code(said)[:2] == "50":
        return "syntaxerror"
    return "onhold" if said else "undefined"


def _says(reason: str, said: str, stage: str) -> bool:
    if stage in ("MAIL", "CONN", "HELO") and reason in ABOUT_RECIPIENT:
        return False  # "does not exist" before RCPT is about the sender or the connecting host
    return PHRASES[reason].search(said) is not None


def is_temporary(reply_code: str, text: str, action: str) -> bool:
    """For a failure the message gives no status code for: is it a temporary one?"""
    if reply_code:
        return reply_code[0] == "4"
    return bool(TEMPORARY.search(text)) or action == "delayed"


def made_up_status(reason: str, temporary: bool) -> str:
    """sisimai's code for a reason when the message has none ("5.0.911" for an unknown user)."""
    if reason in ("delivered", "feedback", "vacation", ""):
        return ""
    if reason == "expired":
        temporary = True  # an expiry is the end of temporary failures
    category = "4" if temporary and reason in CAN_BE_TEMPORARY else "5"
    return f"{category}.0.{MADE_UP_DETAIL.get(reason, '900')}"


def is_hard(reason: str, status: str, reply_code: str) -> bool:
    """Stop sending: the address itself is gone (a domain not accepting mail only when permanent)."""
    if reason in HARD:
        return True
    return reason == "notaccept" and (status or reply_code or "5")[0] == "5"
