"""The plain-text part of an email, from its HTML: paragraphs and headings as blank-line-separated blocks,
links as "text (url)", hidden things (preview text, head, styles) left out."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from .links import attributes, mark_link, resolve_marked, text_link

_PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "ul", "ol", "hr", "pre"}
_LINE = {"div", "tr", "li", "center", "section", "article", "header", "footer", "dd", "dt"}
_SKIPPED = {"head", "style", "script", "title", "template"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


def html_to_text(page: str) -> str:
    """Readable plain text of an HTML email."""
    return tidy(resolve_marked(convert_marked(page), {}))


def convert_marked(page: str, silent: re.Pattern[str] | None = None) -> str:
    """The text with each link marked (label and href kept apart) for `links.resolve_marked`, untidied:
    the email's HTML is converted once, Jinja placeholders and all, and links are written out per render.
    What `silent` matches (placeholders of {% %} tags) is copied without starting a new line, so a loop
    doesn't double the line breaks of what it repeats."""
    writer = _TextWriter(silent)
    writer.feed(page)
    writer.close()
    return "".join(writer.out)


def tidy(text: str) -> str:
    """Lines trimmed, at most one blank line in a row (Jinja loops and conditions leave blank lines behind)."""
    lines = [line.strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"


class _TextWriter(HTMLParser):
    def __init__(self, silent: re.Pattern[str] | None) -> None:
        super().__init__(convert_charrefs=True)
        self._silent = silent
        self.out: list[str] = []
        self._breaks = 0  # newlines owed before the next text: 1 after a line, 2 after a paragraph
        self._hidden_depth = 0  # > 0 while inside something not shown
        self._links: list[tuple[str, int]] = []  # open <a>: href, where its label starts in `out`

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._hidden_depth:
            self._hidden_depth += tag not in _VOID
            return
        if tag in _SKIPPED or _HIDDEN.search(dict(attrs).get("style") or ""):
            self._hidden_depth = int(tag not in _VOID)
            return
        self._block(tag)
        if tag == "li":
            self._write("- ")
        elif tag == "a":
            href = attributes(self.get_starttag_text() or "").get("href", ("", (0, 0)))[0]
            self._write("")  # the line break before the link is not part of its label
            self._links.append((href, len(self.out)))
        elif tag == "img" and self._links and (alt := dict(attrs).get("alt")):
            self._write(f" {alt} ")  # an image link needs a label in text

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._hidden_depth:
            self._hidden_depth -= 1
            return
        if tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.out[start:])
            del self.out[start:]
            self.out.append(mark_link(label, href) if href.strip() else text_link(label, href))
        if tag != "br":
            self._block(tag)

    def handle_data(self, data: str) -> None:
        if self._hidden_depth:
            return
        pieces = self._silent.split(data) if self._silent else [data]  # text, silent, text, …
        for index, piece in enumerate(pieces):
            if index % 2:
                self.out.append(piece)
                continue
            text = _SPACES.sub(" ", piece)
            if text.strip():
                self._write(text.lstrip() if self._breaks else text)
            elif text and self.out and not self._breaks:
                self._write(" ")

    def _block(self, tag: str) -> None:
        if tag == "br":
            if not self._breaks:  # a <br> breaks the line even when no text follows in this block
                self.out.append("\n")
        elif tag in _PARAGRAPH:
            self._breaks = 2
        elif tag in _LINE:
            self._breaks = max(self._breaks, 1)

    def _write(self, text: str) -> None:
        if self._breaks and self.out:
            self.out.append("\n" * self._breaks)
        self._breaks = 0
        self.out.append(text)
