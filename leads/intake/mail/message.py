"""What a parsed message says, read defensively: headers, addresses, Message-IDs, readable text and
the sender's name split into first and last."""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.message import Message
from email.utils import getaddresses

from core.mail import html_to_text, part_text, unique
from core.text import scrub

MAX_RECIPIENTS = 100
MESSAGE_ID_CHARS = 500  # the column is indexed; PostgreSQL refuses index entries over ~2.7 kB

MESSAGE_ID = re.compile(r"<[^<>\s]{1,900}>")
PATRONYMIC = re.compile(r"(ович|евич|ич|овна|евна|ична|инична|кызы|оглы)$", re.IGNORECASE)


def header(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header the policy cannot parse: fall back to the raw text
        value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    return None if value is None else scrub(str(value))


def first_address(msg: Message, name: str) -> tuple[str | None, str | None]:
    pairs = _address_pairs(msg, (name,))
    if not pairs:
        return None, None
    display, address = pairs[0]
    return (one_line(display) or None), (address.strip().lower() or None)


def all_addresses(msg: Message, names: Sequence[str]) -> list[str]:
    return unique(a.strip().lower() for _d, a in _address_pairs(msg, names) if "@" in a)


def _address_pairs(msg: Message, names: Sequence[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name in names:
        try:
            headers = msg.get_all(name) or []
            for value in headers:
                for address in getattr(value, "addresses", ()):
                    pairs.append((scrub(address.display_name), scrub(address.addr_spec)))
                if not hasattr(value, "addresses"):
                    pairs += [(scrub(d), scrub(a)) for d, a in getaddresses([str(value)])]
        except Exception:
            raw = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
            pairs += [(scrub(d), scrub(a)) for d, a in getaddresses([str(v) for v in raw])]
    return pairs[:MAX_RECIPIENTS]


def message_id(value: str | None) -> str | None:
    if not value:
        return None
    match = MESSAGE_ID.search(value)
    if match:
        return match.group(0)[:MESSAGE_ID_CHARS]
    bare = value.strip()
    return f"<{bare}>"[:MESSAGE_ID_CHARS] if bare and " " not in bare else None


def message_ids(value: str) -> list[str]:
    return unique(m[:MESSAGE_ID_CHARS] for m in MESSAGE_ID.findall(value))[:50]


def local_part(address: str | None) -> str:
    return (address or "").split("@", 1)[0].strip().lower()


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


def body_text(msg: Message) -> str:
    """The readable text: the plain part, or text taken out of the HTML part."""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))  # type: ignore[attr-defined]
    except Exception:
        part = None
    if part is None:
        return ""
    text = part_text(part)
    if part.get_content_type() == "text/html":
        text = html_to_text(text)
    return scrub(text.strip())


def one_line(value: str | None) -> str | None:
    return " ".join(value.split()) or None if value else None


def truncate(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else value
