"""Defining and removing custom fields (their values are checked by leads.fields)."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import flush_unique, lock_keys
from core.errors import Conflict, Invalid, NotFound
from core.text import check_text
from leads.models import CustomField, CustomFieldType, Lead
from leads.query import dialect_name

KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
NUMERIC = (CustomFieldType.number, CustomFieldType.integer)


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("must be a number", field=field)
    if not math.isfinite(value) or abs(value) > 1e15:
        raise Invalid("must be a finite number no larger than 1e15", field=field)
    return float(value)


def clean_definition(raw: dict[str, Any]) -> dict[str, Any]:
    """Check a definition; every problem names its field."""
    check_text(raw, "")
    key = raw.get("key")
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise Invalid("must be a slug: a-z, 0-9 and _, starting with a letter, at most 64", field="key")
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip() or len(label.strip()) > 200:
        raise Invalid("must be a label of 1 to 200 characters", field="label")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in {t.value for t in CustomFieldType}:
        raise Invalid(f"must be one of {', '.join(CustomFieldType)}", field="type")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise Invalid("must be true or false", field="required")

    choices = raw.get("choices")
    if kind == CustomFieldType.choice:
        if (
            not isinstance(choices, list) or not 1 <= len(choices) <= 500
            or not all(isinstance(c, str) and c.strip() and len(c) <= 200 for c in choices)
        ):
            raise Invalid("a choice field needs a list of 1 to 500 texts", field="choices")
        if len(set(choices)) != len(choices):
            raise Invalid("choices must not repeat", field="choices")
    elif choices is not None:
        raise Invalid("only a choice field has choices", field="choices")

    low, high = _number(raw.get("min_value"), "min_value"), _number(raw.get("max_value"), "max_value")
    if (low is not None or high is not None) and kind not in NUMERIC:
        where = "min_value" if low is not None else "max_value"
        raise Invalid("only number and integer fields have min/max", field=where)
    if low is not None and high is not None and low > high:
        raise Invalid("must not be above max_value", field="min_value")

    max_length, pattern = raw.get("max_length"), raw.get("pattern")
    if max_length is not None:
        if kind != CustomFieldType.text:
            raise Invalid("only a text field has max_length", field="max_length")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= 100_000:
            raise Invalid("must be a whole number from 1 to 100000", field="max_length")
    if pattern is not None:
        if kind != CustomFieldType.text:
            raise Invalid("only a text field has a pattern", field="pattern")
        if not isinstance(pattern, str) or not pattern or len(pattern) > 500:
            raise Invalid("must be a regular expression of 1 to 500 characters", field="pattern")
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            raise Invalid(f"is not a valid regular expression: {exc}", field="pattern") from None
    return {
        "key": key, "label": " ".join(label.split()), "type": kind, "required": required,
        "choices": choices, "min_value": low, "max_value": high, "max_length": max_length,
        "pattern": pattern,
    }


async def create_field(session: AsyncSession, raw: dict[str, Any]) -> CustomField:
    values = clean_definition(raw)
    await lock_keys(session, f"custom-field:{values['key']}")
    if await session.scalar(select(CustomField.id).where(CustomField.key == values["key"])) is not None:
        raise Conflict(f"a custom field '{values['key']}' exists", field="key")
    spec = CustomField(**values)
    session.add(spec)
    await flush_unique(session, Conflict(f"a custom field '{values['key']}' exists", field="key"))
    return spec


async def delete_field(session: AsyncSession, field_id: uuid.UUID) -> None:
    """Remove the definition and its values from every lead, so a field re-created later under the
    same key (perhaps with another type) starts empty."""
    spec = await session.get(CustomField, field_id)
    if spec is None:
        raise NotFound(f"no custom field {field_id}", field="field_id")
    key = spec.key
    if dialect_name(session) == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        removed: Any = Lead.custom.op("-", return_type=JSONB)(key)
        holds: Any = Lead.custom.op("?")(key)
    else:
        removed = func.json_remove(Lead.custom, f'$."{key}"')
        holds = func.json_type(Lead.custom, f'$."{key}"').is_not(None)
    await session.execute(update(Lead).where(holds).values(custom=removed).execution_options(synchronize_session=False))
    await session.delete(spec)
    await session.flush()
