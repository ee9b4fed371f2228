"""Reading mail defensively, for every part of nurture that reads mail (inbound intake, returned
mail): a part's text whatever its charset, HTML as readable text."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from email.message import Message
from html.parser import HTMLParser


def part_text(part: Message) -> str:
    """The text of a leaf part; an unknown charset or a broken transfer encoding gives UTF-8 with
    replacement characters instead of an error."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except Exception:  # compat32 messages have no get_content; unknown charset; broken encoding
        pass
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() if _known_charset(part) else None
        return payload.decode(charset or "utf-8", "replace")
    return payload if isinstance(payload, str) else ""


def _known_charset(part: Message) -> bool:
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
    """What a person reads of an HTML part: the text, a line per block, scripts and styles left out."""
    parser = _TextFromHtml()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.chunks).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def unique(values: Iterable[str]) -> list[str]:
    """The non-empty values, first occurrence kept, in order."""
    return list(dict.fromkeys(v for v in values if v))
