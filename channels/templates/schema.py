"""What a template may use: the context schema (the one list of allowed variables) and sample leads for previews."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from core import clock

# A leaf is the Python type of the value; `dict` under a name means "any key" (a lead's custom fields).
Schema = Mapping[str, "type | Schema"]

CONTEXT_SCHEMA: Schema = {
    "lead": {
        "first_name": str,
        "last_name": str,
        "email": str,
        "company": str,
        "city": str,
        "custom": dict,
    },
    "score": int,
    "grade": str,
    "stage": str,
    "unsubscribe_url": str,
    "preferences_url": str,
    "campaign": {"name": str},
    "sender": {"name": str, "address": str},
    "now": datetime,
}


def unknown_variable(name: str, path: list[str]) -> str | None:
    """Why `name.path…` is not in the schema (with a suggestion), or None when it is.

    Past a leaf anything goes (`lead.first_name.upper()`, `now.year`): those are the value's own attributes,
    which the sandbox polices.
    """
    node: type | Schema | None = CONTEXT_SCHEMA.get(name)
    walked = [name]
    if node is None:
        return _with_suggestion(name)
    for step in path:
        if not isinstance(node, Mapping):
            return None
        walked.append(step)
        node = node.get(step)
        if node is None:
            return _with_suggestion(".".join(walked))
    return None


def _with_suggestion(dotted: str) -> str:
    message = f"unknown variable '{dotted}'"
    close = difflib.get_close_matches(dotted, list(_known_paths()), n=1, cutoff=0.75)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _known_paths(schema: Schema = CONTEXT_SCHEMA, prefix: str = "") -> Iterator[str]:
    for key, value in schema.items():
        yield prefix + key
        if isinstance(value, Mapping):
            yield from _known_paths(value, f"{prefix}{key}.")


class _CustomFields(dict[str, Any]):
    """A lead's custom fields: one the lead doesn't have reads as empty, not as an error."""

    def __missing__(self, key: str) -> None:
        return None


def with_defaults(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context a template renders with: `now` from the one clock unless given; custom fields the lead
    lacks read as empty (every other schema variable must be given: a missing one is an error)."""
    values = {"now": clock.now(), **context}
    lead = values.get("lead")
    if isinstance(lead, Mapping) and isinstance(lead.get("custom"), Mapping):
        values["lead"] = {**lead, "custom": _CustomFields(lead["custom"])}
    return values


_SAMPLES: dict[str, dict[str, Any]] = {
    "ru": {
        "lead": {
            "first_name": "Анна",
            "last_name": "Смирнова",
            "email": "anna.smirnova@example.ru",
            "company": "ООО «Северсталь-Инжиниринг»",
            "city": "Санкт-Петербург",
            "custom": {"industry": "Металлургия", "position": "Руководитель отдела закупок"},
        },
        "campaign": {"name": "Добро пожаловать"},
        "sender": {"name": "Команда Nurture", "address": "hello@example.ru"},
    },
    "en": {
        "lead": {
            "first_name": "Anna",
            "last_name": "Smith",
            "email": "anna.smith@example.com",
            "company": "Northwind Traders",
            "city": "Manchester",
            "custom": {"industry": "Manufacturing", "position": "Head of Procurement"},
        },
        "campaign": {"name": "Welcome series"},
        "sender": {"name": "The Nurture team", "address": "hello@example.com"},
    },
}


def sample_context(locale: str = "en") -> dict[str, Any]:
    """A realistic context for previews and trial renders: every schema variable set ("ru" or "en", else "en")."""
    sample = _SAMPLES.get(locale.split("-")[0].lower(), _SAMPLES["en"])
    return {
        "lead": {**sample["lead"], "custom": dict(sample["lead"]["custom"])},
        "score": 72,
        "grade": "B",
        "stage": "mql",
        "unsubscribe_url": "https://example.com/u/sample-unsubscribe-token",
        "preferences_url": "https://example.com/p/sample-preferences-token",
        "campaign": dict(sample["campaign"]),
        "sender": dict(sample["sender"]),
        "now": clock.now(),
    }
