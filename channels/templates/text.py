"""SMS and messenger templates: Jinja text in the sandbox, and what an SMS costs in segments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from jinja2 import Template

from .problems import Field, Problem
from .sandbox import TEXT, check, compile_jinja, render_jinja
from .schema import with_defaults

# GSM 03.38: the basic set costs one septet a character, the extension table two (escape + character).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM_SINGLE, _GSM_PART = 160, 153  # a multipart message spends 7 septets a part on its header
_UCS2_SINGLE, _UCS2_PART = 70, 67


@dataclass(frozen=True)
class SmsInfo:
    encoding: Literal["GSM-7", "UCS-2"]
    characters: int  # what counts against the limit: septets for GSM-7, UTF-16 code units for UCS-2
    segments: int  # 0 for an empty text
    per_segment: int  # the limit that applied: 160/70 for one segment, 153/67 each when split


def sms_segments(text: str) -> SmsInfo:
    """How an SMS will be encoded and into how many segments it splits (never splitting an extension
    character's escape pair or a surrogate pair across two segments, as phones don't)."""
    if all(char in _GSM_BASIC or char in _GSM_EXTENSION for char in text):
        units = [2 if char in _GSM_EXTENSION else 1 for char in text]
        return _packed("GSM-7", units, _GSM_SINGLE, _GSM_PART)
    units = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return _packed("UCS-2", units, _UCS2_SINGLE, _UCS2_PART)


def _packed(encoding: Literal["GSM-7", "UCS-2"], units: list[int], single: int, part: int) -> SmsInfo:
    total = sum(units)
    if total <= single:
        return SmsInfo(encoding, total, 1 if total else 0, single)
    segments, used = 1, 0
    for size in units:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return SmsInfo(encoding, total, segments, part)


class CompiledText:
    """A text template (SMS, messenger) ready to render many times."""

    def __init__(self, source: str, field: Field = "text") -> None:
        self.field: Field = field
        self._template: Template = compile_jinja(source, field, TEXT)

    def render(self, context: Mapping[str, Any]) -> str:
        """The text for one recipient, trimmed; raises RenderError (field, line) when the context doesn't fit."""
        return render_jinja(self._template, self.field, with_defaults(context)).strip()


@lru_cache(maxsize=512)
def compile_text(source: str, field: Field = "text") -> CompiledText:
    """The compiled text template, cached per source; raises TemplateInvalid on a syntax error."""
    return CompiledText(source, field)


def validate_text(source: str, field: Field = "text") -> list[Problem]:
    """What stops a text template from being saved: empty, Jinja syntax, unknown variables, sandbox refusals."""
    if not source.strip():
        return [Problem(field, None, "the text is empty")]
    return check(source, field, TEXT)
