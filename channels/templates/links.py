"""The links of a rendered email: found, tagged and handed to the channel's rewriter (signed tracking redirects),
and written into the plain-text part as "text (url)"."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import NamedTuple

RewriteLink = Callable[[str, str | None], str]


class Link(NamedTuple):
    url: str  # as the template rendered it, before any rewriting
    tag: str | None  # the <a data-tag>, or the css-class of the mj-button it came from


_ANCHOR = re.compile(r"""<a\b(?:[^>"']|"[^"]*"|'[^']*')*>""", re.IGNORECASE)
_TAG_NAME = re.compile(r"<[^\s/>]*")
_ATTRIBUTE = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?""")
_REFERENCE = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_TRACKABLE = ("http://", "https://")

# A link in the text part before Jinja has run: START label SEPARATOR href END, formatted after rendering,
# when the label is known and the href may have been rewritten. Private-use characters, never in real text.
_START, _SEPARATOR, _END = "\ue000", "\ue001", "\ue002"
_MARKED = re.compile(f"{_START}([^{_START}{_SEPARATOR}{_END}]*){_SEPARATOR}([^{_START}{_SEPARATOR}{_END}]*){_END}")
_MARKS = re.compile(f"[{_START}{_SEPARATOR}{_END}]")


def attributes(start_tag: str) -> dict[str, tuple[str, tuple[int, int]]]:
    """The attributes of a start tag as written: name → (value unescaped, span of the raw value in the tag).

    Only references ending in ";" are unescaped: a raw "&notify=1" in a URL stays itself (html.unescape would
    read "&not" as "¬", which browsers don't do inside attributes)."""
    found: dict[str, tuple[str, tuple[int, int]]] = {}
    name_end = match.end() if (match := _TAG_NAME.match(start_tag)) else 0
    for attribute in _ATTRIBUTE.finditer(start_tag, name_end):
        name, raw = attribute.group(1).lower(), attribute.group(2)
        if raw is not None and name not in found:
            value = _REFERENCE.sub(lambda reference: html.unescape(reference.group()), raw.strip("\"'"))
            found[name] = (value, attribute.span(2))
    return found


def rewrite_links(page: str, rewrite: RewriteLink | None, untouched: tuple[str, ...]) -> tuple[str, list[Link],
                                                                                                 dict[str, str]]:
    """Every trackable <a href> (http/https, not starting with one of `untouched` — the unsubscribe and
    preferences URLs) as a Link; with `rewrite`, the href replaced by rewrite(url, tag).
    Returns the page, the links in order, and original → rewritten URLs (for the text part)."""
    links: list[Link] = []
    rewritten: dict[str, str] = {}
    prefixes = tuple(prefix for prefix in untouched if prefix)

    def one(anchor: re.Match[str]) -> str:
        tag_text = anchor.group()
        found = attributes(tag_text)
        if "href" not in found:
            return tag_text
        url, (value_start, value_end) = found["href"][0].strip(), found["href"][1]
        tag = found["data-tag"][0] if "data-tag" in found else None
        if not url.lower().startswith(_TRACKABLE) or (prefixes and url.startswith(prefixes)):
            return tag_text
        links.append(Link(url, tag or None))
        if rewrite is None:
            return tag_text
        new_url = rewrite(url, tag or None)
        rewritten.setdefault(url, new_url)
        return f'{tag_text[:value_start]}"{html.escape(new_url, quote=True)}"{tag_text[value_end:]}'

    return _ANCHOR.sub(one, page), links, rewritten


def text_link(label: str, href: str, shown: str | None = None) -> str:
    """A link in plain text: "label (url)", or the bare URL when there's no other label; mailto: as the address."""
    label = " ".join(label.split())
    href = href.strip()
    if not href or href.startswith("#"):
        return label
    plain = href[len("mailto:"):] if href.lower().startswith("mailto:") else href
    shown = plain if shown is None else shown
    return shown if label in ("", href, plain) else f"{label} ({shown})"


def mark_link(label: str, href: str) -> str:
    return f"{_START}{label}{_SEPARATOR}{href}{_END}"


def resolve_marked(text: str, rewritten: dict[str, str]) -> str:
    """Marked links in a rendered text part written out, with their rewritten URL where there is one."""
    def one(marked: re.Match[str]) -> str:
        label, href = marked.group(1), marked.group(2).strip()
        return text_link(label, href, rewritten.get(href))

    # Marks a Jinja condition cut in half (an {% if %} around part of a link) are dropped.
    return _MARKS.sub("", _MARKED.sub(one, text))
