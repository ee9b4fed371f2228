"""What can be wrong with a template: a problem names the field and line, so the API answers 422 precisely."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from core.errors import Invalid

Field = Literal["subject", "preheader", "body", "text"]


@dataclass(frozen=True)
class Problem:
    field: Field
    line: int | None  # 1-based, in the source the marketer wrote; None when it concerns the whole field
    message: str


class TemplateInvalid(Invalid):
    """A template that cannot be compiled; `problems` lists every reason (the first one names `field`)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        first = problems[0]
        where = f" (line {first.line})" if first.line else ""
        super().__init__(f"{first.field}{where}: {first.message}", field=first.field,
                         details=[asdict(problem) for problem in problems])
        self.problems = list(problems)


class RenderError(Invalid):
    """A template failed for one context (a value missing, an operation the sandbox refuses)."""

    def __init__(self, field: Field, line: int | None, message: str) -> None:
        where = f" (line {line})" if line else ""
        super().__init__(f"{field}{where}: {message}", field=field, details={"line": line})
        self.problem = Problem(field, line, message)
