"""Message templates for the channels, a pure library: email (MJML + Jinja), SMS and messenger (Jinja text),
all rendered in a Jinja2 sandbox against one context schema.

Email: `validate(template)` when it is saved, `compile_email(template).render(context, rewrite_link)` per
recipient (compiled once per template content), `render(...)` as a shortcut. Text: `validate_text`,
`compile_text(source).render(context)`, `sms_segments(text)`.
"""

from .email import CompiledEmail, EmailTemplate, Kind, Rendered, compile_email, render, validate
from .links import Link, RewriteLink
from .plaintext import html_to_text
from .problems import Field, Problem, RenderError, TemplateInvalid
from .schema import CONTEXT_SCHEMA, sample_context
from .text import CompiledText, SmsInfo, compile_text, sms_segments, validate_text

__all__ = [
    "CONTEXT_SCHEMA",
    "CompiledEmail",
    "CompiledText",
    "EmailTemplate",
    "Field",
    "Kind",
    "Link",
    "Problem",
    "RenderError",
    "Rendered",
    "RewriteLink",
    "SmsInfo",
    "TemplateInvalid",
    "compile_email",
    "compile_text",
    "html_to_text",
    "render",
    "sample_context",
    "sms_segments",
    "validate",
    "validate_text",
]
