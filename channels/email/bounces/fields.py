"""Machine-readable report fields ("Name: value" blocks): RFC 3464 delivery status and RFC 5965
feedback reports, from their own MIME part or, when a mail system mislabelled or quoted the
report, from the text."""

from __future__ import annotations

import re
from email.message import Message
from email.parser import HeaderParser

from channels.email.bounces.message import part_text, readable_text, report_parts, unescaped

Fields = dict[str, list[str]]

FIELD_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,60}:[ \t]")
QUOTING = re.compile(r"^(>[ \t]?)+", re.MULTILINE)
RECIPIENT_FIELDS = ("final-recipient", "original-recipient")


def report_blocks(msg: Message, content_types: tuple[str, ...], marker: str) -> list[Fields]:
    """The field blocks of the report parts of `content_types`; failing those, blocks in the text
    that hold a `marker` field (a report pasted into a text part or forwarded with '> ')."""
    blocks: list[Fields] = []
    for part in report_parts(msg):
        if part.get_content_type() in content_types:
            payload = part.get_payload()
            if isinstance(payload, list):
                for block in payload:
                    if isinstance(block, Message):
                        blocks += _split(_fields(block))
                        # message/global-delivery-status is parsed as one message: its later blocks are the body.
                        if not block.is_multipart():
                            blocks += text_blocks(part_text(block))
            else:
                blocks += text_blocks(part_text(part))
    if not any(marker in block for block in blocks):
        blocks = [b for b in text_blocks(readable_text(msg)) if marker in b]
    return blocks


def recipient_blocks(msg: Message) -> list[Fields]:
    """One block per recipient of a delivery status notification."""
    blocks = report_blocks(msg, ("message/delivery-status", "message/global-delivery-status"), "final-recipient")
    return [b for b in blocks if any(name in b for name in RECIPIENT_FIELDS)]


def text_blocks(text: str) -> list[Fields]:
    blocks: list[Fields] = []
    for paragraph in re.split(r"\n[ \t]*\n", QUOTING.sub("", text.replace("\r\n", "\n"))):
        lines = paragraph.split("\n")
        first = next((i for i, line in enumerate(lines) if FIELD_LINE.match(line)), None)
        if first is not None:
            blocks += _split(_fields(HeaderParser().parsestr("\n".join(lines[first:]))))
    return blocks


def first(fields: Fields, name: str) -> str:
    values = fields.get(name)
    return values[0] if values else ""


def _fields(block: Message) -> Fields:
    fields: Fields = {}
    for name, value in block.raw_items():
        fields.setdefault(name.lower(), []).append(" ".join(unescaped(str(value)).split()))
    return fields


def _split(fields: Fields) -> list[Fields]:
    """Some systems run several recipients' fields together without the blank line between them."""
    if all(len(fields.get(name, [])) <= 1 for name in RECIPIENT_FIELDS):
        return [fields]
    count = max(len(fields.get(name, [])) for name in RECIPIENT_FIELDS)
    per_recipient: list[Fields] = [{} for _ in range(count)]
    for name, values in fields.items():
        if len(values) == count:
            for block, value in zip(per_recipient, values, strict=True):
                block[name] = [value]
        else:
            for block in per_recipient:
                block[name] = values[:1]
    return per_recipient
