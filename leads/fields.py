"""Custom field definitions and the validation of their values (stored in Lead.custom)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Invalid
from leads.models import CustomField, CustomFieldType


async def definitions(session: AsyncSession) -> dict[str, CustomField]:
    rows = await session.scalars(select(CustomField))
    return {f.key: f for f in rows}


async def validate_custom(
    session: AsyncSession, values: dict[str, Any], require_all: bool = False
) -> dict[str, Any]:
    """Check values against their definitions; unknown keys and bad values name the field."""
    if not values and not require_all:
        return {}
    defs = await definitions(session)
    out: dict[str, Any] = {}
    for key, value in values.items():
        spec = defs.get(key)
        if spec is None:
            raise Invalid(f"no custom field '{key}' is defined", field=f"custom.{key}")
        out[key] = None if value in (None, "") else coerce(spec, value)
    if require_all:
        for key, spec in defs.items():
            if spec.required and out.get(key) is None:
                raise Invalid("is required", field=f"custom.{key}")
    return out


def coerce(spec: CustomField, value: Any) -> Any:
    field = f"custom.{spec.key}"
    kind = spec.type
    try:
        if kind == CustomFieldType.text:
            result: Any = str(value)
            if spec.max_length and len(result) > spec.max_length:
                raise Invalid(f"must be at most {spec.max_length} characters", field=field)
            if spec.pattern and not re.fullmatch(spec.pattern, result):
                raise Invalid("has the wrong format", field=field)
        elif kind in (CustomFieldType.number, CustomFieldType.integer):
            if isinstance(value, bool):
                raise ValueError
            result = int(value) if kind == CustomFieldType.integer else float(value)
            if kind == CustomFieldType.integer and isinstance(value, float) and not value.is_integer():
                raise ValueError
            if result != result or result in (float("inf"), float("-inf")):
                raise ValueError
            if spec.min_value is not None and result < spec.min_value:
                raise Invalid(f"must be at least {spec.min_value:g}", field=field)
            if spec.max_value is not None and result > spec.max_value:
                raise Invalid(f"must be at most {spec.max_value:g}", field=field)
        elif kind == CustomFieldType.boolean:
            if isinstance(value, bool):
                result = value
            elif str(value).strip().lower() in ("1", "true", "yes", "on", "да"):
                result = True
            elif str(value).strip().lower() in ("0", "false", "no", "off", "нет"):
                result = False
            else:
                raise ValueError
        elif kind == CustomFieldType.date:
            result = date.fromisoformat(str(value)).isoformat()
        elif kind == CustomFieldType.choice:
            result = str(value)
            if result not in (spec.choices or []):
                raise Invalid(f"must be one of {', '.join(map(str, spec.choices or []))}", field=field)
        elif kind == CustomFieldType.email:
            from core.emails import normalize_email

            result = normalize_email(str(value), field=field)
        elif kind == CustomFieldType.url:
            result = str(value)
            parsed = urlparse(result)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise Invalid("must be an http(s) URL", field=field)
        else:
            raise Invalid(f"unknown field type {kind}", field=field)
    except (ValueError, TypeError, OverflowError):
        raise Invalid(f"must be a valid {kind}", field=field) from None
    return result
