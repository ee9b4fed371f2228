"""An email body: MJML compiled to HTML (and its plain-text twin) once per template version, Jinja left to fill in.

MJML would mangle Jinja (`{% if score > 50 %}` comes out as `score &gt; 50`, and `{% for %}` between components
is dropped), so every Jinja tag is swapped for an opaque token first, tokens between components are wrapped in
<mj-raw> so they survive, and the tokens are swapped back in the HTML MJML produced.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser

from bs4 import BeautifulSoup
from mjml import mjml_to_html

from .plaintext import convert_marked
from .problems import Problem
from .sandbox import describe

PREHEADER = "{{ __preheader }}"  # the HTML part's own variable: the rendered preheader, as the preview text

_JINJA_TAG = re.compile(
    r"""\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\}
      | \{\#.*?\#\}
      | \{\{(?:[^}'"]|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|\}(?!\}))*\}\}
      | \{%(?:[^%'"]|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|%(?!\}))*%\}""",
    re.DOTALL | re.VERBOSE,
)
# A literal "{" that Jinja would read as (part of) a tag: before {, % or #, or right before a restored tag.
_STRAY_OPENING = re.compile(r"\{(?=[{%#]|$)")
# "&" that starts no character reference: MJML's parser would read "?a=1&notify=2" as "?a=1¬ify=2".
_BARE_AMPERSAND = re.compile(r"&(?!#[0-9]+;|#[xX][0-9a-fA-F]+;|[A-Za-z][A-Za-z0-9]*;)")
_CONTENT = {"mj-text", "mj-button", "mj-raw", "mj-table", "mj-navbar-link", "mj-social-element",
            "mj-accordion-title", "mj-accordion-text", "mj-style", "mj-title", "mj-preview"}
_HEAD_LEVEL = {"mjml", "mj-head", "mj-attributes", "mj-html-attributes", "mj-selector", "mj-class", "mj-all",
               "mj-breakpoint", "mj-font"}
_KNOWN = _CONTENT | _HEAD_LEVEL | {
    "mj-body", "mj-wrapper", "mj-section", "mj-column", "mj-group", "mj-hero", "mj-image", "mj-divider",
    "mj-spacer", "mj-social", "mj-navbar", "mj-accordion", "mj-accordion-element", "mj-carousel",
    "mj-carousel-image", "mj-html-attribute"}
# mj-button puts its css-class on the cell around the link; the link is tagged with it for tracking.
_BUTTON_LINK = re.compile(r"""(<td\b[^>]*?\bclass="([^"]*)"[^>]*>\s*<table\b[^>]*>\s*(?:<tbody>\s*)?<tr>\s*"""
                          r"""<td\b[^>]*>\s*<a\b)(?![^>]*\bdata-tag=)""")


@dataclass(frozen=True)
class CompiledBody:
    html: str = ""  # Jinja source of the HTML part
    text: str = ""  # Jinja source of the plain-text part, hrefs marked for link rewriting
    has_preview: bool = False  # the MJML sets its own <mj-preview>, so the preheader is not injected
    problems: tuple[Problem, ...] = ()


@lru_cache(maxsize=256)
def compile_body(source: str) -> CompiledBody:
    """The body's HTML and text as Jinja sources, or the problems (MJML structure, with lines of `source`)."""
    protected = _Protected(source)
    structure = _Structure(protected)
    if structure.problems:
        return CompiledBody(problems=tuple(structure.problems))
    mjml = structure.prepared()
    try:
        result = mjml_to_html(mjml)
    except Exception as exc:
        line = _failing_line(mjml, protected)
        return CompiledBody(problems=(Problem("body", line, f"MJML could not compile this: {describe(exc)}"),))
    problems = [Problem("body", None, f"MJML: {error}") for error in result.errors]
    found = Counter(int(token.group(1)) for token in protected.tokens.finditer(result.html))
    problems += [Problem("body", protected.lines[index], f"MJML dropped the Jinja tag {_short(tag)}; put it inside "
                         "an mj-text, an mj-raw or an attribute value")
                 for index, tag in enumerate(protected.tags) if not found[index] and tag != PREHEADER]
    if problems:
        return CompiledBody(problems=tuple(problems))
    html = _BARE_AMPERSAND.sub("&amp;", result.html)  # MJML writes attribute values back unescaped
    html = _BUTTON_LINK.sub(lambda cell: f'{cell.group(1)} data-tag="{cell.group(2)}"', html)
    text = convert_marked(html, protected.statements())
    return CompiledBody(protected.restore(html), protected.restore(text), structure.has_preview)


def _short(tag: str) -> str:
    return tag if len(tag) <= 40 else tag[:37] + "..."


class _Protected:
    """The source with each Jinja tag replaced by `<prefix><n>x` (letters and digits only, so nothing
    escapes or splits it), plus what's needed to put the tags back and to name original lines."""

    def __init__(self, source: str) -> None:
        prefix = "jinjatag"
        while prefix in source.lower():
            prefix += "q"
        self.prefix = prefix
        self.tokens = re.compile(re.escape(prefix) + r"(\d+)x")
        self.tags: list[str] = []
        self.lines: list[int] = []  # original line of each tag
        self.line_map = [1]  # protected line n (1-based) starts on original line line_map[n - 1]
        parts: list[str] = []
        position, line = 0, 1
        for tag in _JINJA_TAG.finditer(source):
            before = source[position:tag.start()]
            for _ in range(before.count("\n")):
                line += 1
                self.line_map.append(line)
            parts += [before, self.token(len(self.tags))]
            self.tags.append(tag.group())
            self.lines.append(line)
            line += tag.group().count("\n")
            position = tag.end()
        for _ in range(source.count("\n", position)):
            line += 1
            self.line_map.append(line)
        parts.append(source[position:])
        self.text = _BARE_AMPERSAND.sub("&amp;", "".join(parts))
        self.preheader_token = self.token(len(self.tags))
        self.tags.append(PREHEADER)
        self.lines.append(0)

    def token(self, index: int) -> str:
        return f"{self.prefix}{index}x"

    def statements(self) -> re.Pattern[str] | None:
        """Matches the tokens of {% %} and {# #} tags (the ones that print nothing themselves)."""
        indexes = [str(index) for index, tag in enumerate(self.tags) if tag.startswith(("{%", "{#"))]
        return re.compile(f"({re.escape(self.prefix)}(?:{'|'.join(indexes)})x)") if indexes else None

    def original_line(self, line: int) -> int:
        return self.line_map[min(max(line, 1), len(self.line_map)) - 1]

    def restore(self, compiled: str) -> str:
        """Jinja tags back in place of their tokens; literal text kept literal."""
        parts = self.tokens.split(compiled)  # literal, tag index, literal, …
        parts[::2] = [_STRAY_OPENING.sub("{{ '{' }}", literal) for literal in parts[::2]]
        parts[1::2] = [self.tags[int(index)] for index in parts[1::2]]
        return "".join(parts)


class _Structure(HTMLParser):
    """One pass over the protected MJML: elements unknown, unclosed or misnested; Jinja tags where MJML
    would drop them; where to add <mj-raw> wrappers and the preview text."""

    def __init__(self, protected: _Protected) -> None:
        super().__init__(convert_charrefs=False)  # data arrives as written, so offsets stay exact
        self._protected = protected
        self._line_starts = [0] + [newline.end() for newline in re.finditer("\n", protected.text)]
        self._stack: list[tuple[str, int]] = []  # open MJML elements and their original lines
        self._content: str | None = None  # inside an element whose content is HTML (mj-text…): its name
        self._wraps: list[tuple[int, int]] = []
        self._root_end = self._head_end = -1
        self._has_body = False
        self.has_preview = False
        self.problems: list[Problem] = []
        self.feed(protected.text)
        self.close()
        for name, line in self._stack:
            self._problem(line, f"<{name}> is never closed")
        if self._root_end < 0:
            self.problems = [Problem("body", 1, "the body must be MJML: an <mjml> element with an <mj-body>")]
        elif not self._has_body:
            self._problem(1, "<mjml> has no <mj-body>")

    def prepared(self) -> str:
        """The MJML to compile: Jinja tags between components wrapped in <mj-raw>, the preview text added."""
        inserts = [(start, "<mj-raw>") for start, _ in self._wraps] + [(end, "</mj-raw>") for _, end in self._wraps]
        if not self.has_preview:
            preview = f"<mj-preview>{self._protected.preheader_token}</mj-preview>"
            inserts.append((self._head_end, preview) if self._head_end >= 0
                           else (self._root_end, f"<mj-head>{preview}</mj-head>"))
        inserts.sort(key=lambda insert: insert[0])
        text, parts, position = self._protected.text, [], 0
        for offset, snippet in inserts:
            parts += [text[position:offset], snippet]
            position = offset
        parts.append(text[position:])
        return "".join(parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._opened(tag, attrs):
            self._stack.append((tag, self._line()))
            if tag in _CONTENT:
                self._content = tag

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._opened(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self._content:
            if tag != self._content:
                return
            self._content = None
        if not tag.startswith("mj"):
            return
        if tag not in (name for name, _ in self._stack):
            self._problem(self._line(), f"</{tag}> closes nothing that is open")
            return
        while (top := self._stack.pop())[0] != tag:
            self._problem(top[1], f"<{top[0]}> is not closed before </{tag}>")

    def handle_data(self, data: str) -> None:
        if self._content:
            return
        start = self._offset()
        parent = self._stack[-1][0] if self._stack else None
        for token in self._protected.tokens.finditer(data):
            if parent is not None and parent not in _HEAD_LEVEL:
                self._wraps.append((start + token.start(), start + token.end()))
            else:
                where = f"directly inside <{parent}>" if parent else "outside <mjml>"
                self._problem(self._protected.lines[int(token.group(1))],
                              f"a Jinja tag {where} would be dropped; put it inside <mj-body>")

    def _opened(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        """Checks a start tag; True when it is an MJML element to track."""
        if tag == "mj-include":  # MJML follows it even inside mj-text
            self._problem(self._line(), "<mj-include> is not available: a template can't read files")
        if self._content:
            return False
        for name, _ in attrs:
            if self._protected.tokens.search(name):
                self._problem(self._line(), f"a Jinja tag can't stand between the attributes of <{tag}>; "
                                            "use it inside an attribute value")
        if not tag.startswith("mj"):
            return False
        if tag not in _KNOWN and tag != "mj-include":
            self._problem(self._line(), f"unknown MJML element <{tag}>")
        end = self._offset() + len(self.get_starttag_text() or "")
        if tag == "mjml":
            self._root_end = end
        elif tag == "mj-head":
            self._head_end = end
        elif tag == "mj-body":
            self._has_body = True
        elif tag == "mj-preview":
            self.has_preview = True
        return True

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def _line(self) -> int:
        return self._protected.original_line(self.getpos()[0])

    def _problem(self, line: int, message: str) -> None:
        if (problem := Problem("body", line, message)) not in self.problems:
            self.problems.append(problem)


def _failing_line(mjml: str, protected: _Protected) -> int | None:
    """The line of the first top-level element of mj-body that fails to compile on its own."""
    root = BeautifulSoup(mjml, "html.parser").find("mjml")
    body = root.find("mj-body", recursive=False) if root else None
    if root is None or body is None:
        return None
    head = root.find("mj-head", recursive=False)
    for child in body.find_all(True, recursive=False):
        try:
            mjml_to_html(f"<mjml>{head or ''}<mj-body>{child}</mj-body></mjml>")
        except Exception:
            return protected.original_line(child.sourceline or 1)
    return None
