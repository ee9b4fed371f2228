"""Email templates: validated when saved, compiled once per version, rendered per recipient into subject,
preheader, HTML and plain text, with every trackable link handed to the channel's rewriter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Literal

from jinja2 import Template

from .body import compile_body
from .links import Link, RewriteLink, resolve_marked, rewrite_links
from .plaintext import tidy
from .problems import Problem, RenderError, TemplateInvalid
from .sandbox import HTML, TEXT, check, compile_jinja, describe, render_jinja
from .schema import with_defaults

Kind = Literal["marketing", "transactional"]

# `{{ unsubscribe_url }}` (filters allowed) opening an href: of an <a>, an mj-button, an mj-navbar-link…
_UNSUBSCRIBE_HREF = re.compile(r"""\bhref\s*=\s*["']?\s*\{\{-?\s*unsubscribe_url\s*(?:\||-?\}\})""")


@dataclass(frozen=True)
class EmailTemplate:
    subject: str  # Jinja text
    body: str  # MJML with Jinja
    preheader: str = ""  # Jinja text, shown by mail clients as the preview after the subject
    kind: Kind = "marketing"  # marketing emails must carry an unsubscribe link; transactional ones need not


@dataclass(frozen=True)
class Rendered:
    subject: str
    preheader: str
    html: str
    text: str
    links: tuple[Link, ...] = ()  # trackable links as rendered (before rewriting), in order


def validate(template: EmailTemplate) -> list[Problem]:
    """Everything that stops a template from being saved, each naming its field and line (empty when fine)."""
    problems: list[Problem] = []
    if template.subject.strip():
        problems += check(template.subject, "subject", TEXT)
    else:
        problems.append(Problem("subject", None, "the subject is empty"))
    if template.preheader:
        problems += check(template.preheader, "preheader", TEXT)
    problems += check(template.body, "body", HTML)
    compiled = compile_body(template.body)
    problems += compiled.problems
    if compiled.has_preview and template.preheader.strip():
        problems.append(Problem("preheader", None, "the body sets its own <mj-preview>; remove it to use the "
                                                   "preheader"))
    if template.kind == "marketing" and not _UNSUBSCRIBE_HREF.search(template.body):
        problems.append(Problem("body", None, "a marketing email needs an unsubscribe link: "
                                              'href="{{ unsubscribe_url }}"'))
    if not problems:
        try:
            compile_email(template)
        except TemplateInvalid as exc:
            problems += exc.problems
    return list(dict.fromkeys(problems))  # a check that fires twice on one line is one problem


@lru_cache(maxsize=256)
def compile_email(template: EmailTemplate) -> CompiledEmail:
    """The template ready to render many times: MJML compiled, Jinja parsed (cached per template content).
    Raises TemplateInvalid when it can't be compiled; the save-time policy (variables, unsubscribe link) is
    validate()'s job."""
    body = compile_body(template.body)
    if body.problems:
        raise TemplateInvalid(body.problems)
    try:
        return CompiledEmail(
            template,
            subject=compile_jinja(template.subject, "subject", TEXT),
            preheader=compile_jinja(template.preheader, "preheader", TEXT),
            html=compile_jinja(body.html, "body", HTML),
            text=compile_jinja(body.text, "body", TEXT),
        )
    except TemplateInvalid as exc:
        if exc.field != "body":
            raise
        # The HTML's lines are not the MJML's: name the line in the MJML source when that is at fault.
        located = check(template.body, "body", HTML)[:1] or [Problem("body", None, exc.problems[0].message)]
        raise TemplateInvalid(located) from exc


def render(template: EmailTemplate, context: Mapping[str, Any], rewrite_link: RewriteLink | None = None) -> Rendered:
    """Render one email for one recipient (the compiled template is cached)."""
    return compile_email(template).render(context, rewrite_link)


class CompiledEmail:
    """A compiled template; `render` costs two small text renders, one HTML render and a link pass."""

    def __init__(self, template: EmailTemplate, *, subject: Template, preheader: Template, html: Template,
                 text: Template) -> None:
        self.template = template
        self._subject, self._preheader, self._html, self._text = subject, preheader, html, text

    def render(self, context: Mapping[str, Any], rewrite_link: RewriteLink | None = None) -> Rendered:
        """`rewrite_link(url, tag)` replaces each trackable href (http/https, not the unsubscribe or preferences
        URL); raises RenderError (field, line) when the context doesn't fit the template."""
        values = with_defaults(context)
        subject = _one_line(render_jinja(self._subject, "subject", values))  # a newline would break the header
        preheader = _one_line(render_jinja(self._preheader, "preheader", values))
        try:
            page = self._html.render({**values, "__preheader": preheader})
        except Exception as exc:
            render_jinja(self._source, "body", values)  # raises with the line in the MJML the marketer wrote
            raise RenderError("body", None, describe(exc)) from exc
        untouched = (str(values.get("unsubscribe_url") or ""), str(values.get("preferences_url") or ""))
        page, links, rewritten = rewrite_links(page, rewrite_link, untouched)
        text = tidy(resolve_marked(render_jinja(self._text, "body", values), rewritten))
        return Rendered(subject, preheader, page, text, tuple(links))

    @cached_property
    def _source(self) -> Template:
        return compile_jinja(self.template.body, "body", HTML)


def _one_line(text: str) -> str:
    return " ".join(text.split())
