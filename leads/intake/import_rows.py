"""The rows of an import as leads: the options a run was started with, and each CSV row checked
like every intake, into an ImportRow or the RowErrors naming its line, field and column."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.errors import Invalid
from leads.fields import coerce
from leads.intake.csvfile import FileLayout, row_values
from leads.intake.interaction import Origin
from leads.models import Channel, CustomField
from leads.schemas import PROFILE_FIELDS, clean_profile

_TAG_SPLIT = re.compile(r"[,;|]")
_ORIGIN_LIMITS = {"source": 200, "medium": 200, "campaign": 200, "content": 500, "term": 500}


@dataclass
class ImportOptions:
    mapping: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    region: str | None = None
    tags: list[str] = field(default_factory=list)
    source: str | None = None
    campaign: str | None = None
    overwrite: bool = False
    encoding: str | None = None

    def checked(self, default_region: str) -> ImportOptions:
        """A copy with cleaned values; raises Invalid naming the bad option."""
        region = (self.region or default_region or "").strip().upper() or None
        if region is not None and (len(region) != 2 or not region.isalpha() or not region.isascii()):
            raise Invalid("must be a two-letter country code such as RU", field="region")
        for name in ("source", "campaign"):
            value = getattr(self, name)
            if value is not None and len(value.strip()) > 200:
                raise Invalid("must be at most 200 characters", field=name)
        return ImportOptions(
            mapping=dict(self.mapping), dry_run=self.dry_run, region=region,
            tags=_clean_tags(self.tags), source=(self.source or "").strip() or None,
            campaign=(self.campaign or "").strip() or None, overwrite=self.overwrite,
            encoding=(self.encoding or "").strip() or None,
        )


@dataclass
class RowError:
    line: int
    field: str | None
    message: str
    column: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "column": self.column, "message": self.message}


@dataclass(slots=True)
class ImportRow:
    line: int
    profile: dict[str, Any]  # cleaned, only the values the row has
    custom: dict[str, Any]
    tags: list[str]
    origin: Origin  # the import channel, with the row's source, medium, campaign, content, term


def _origin_text(key: str, value: str | None) -> str | None:
    return (value.strip()[: _ORIGIN_LIMITS[key]] or None) if value else None


def _clean_tags(values: Iterable[str]) -> list[str]:
    tags: list[str] = []
    for value in values:
        for tag in _TAG_SPLIT.split(value):
            tag = tag.strip()
            if not tag:
                continue
            if len(tag) > 100:
                raise Invalid("each tag must have 1 to 100 characters", field="tags")
            if tag not in tags:
                tags.append(tag)
    return tags


class RowChecker:
    """Checks the rows of one file against its layout, the run's options and the custom fields."""

    def __init__(
        self, layout: FileLayout, options: ImportOptions, defs: dict[str, CustomField], source: str
    ) -> None:
        self.layout = layout
        self.options = options
        self.defs = defs
        self.source = source  # the touchpoint source of rows without utm_source
        # The first column mapped to a field names it in errors.
        self.columns_by_target: dict[str, str] = {}
        for column in reversed(layout.columns):
            self.columns_by_target[column.target] = column.name

    def check(self, line: int, cells: list[str]) -> ImportRow | list[RowError] | None:
        """One row, validated like every intake; None for an empty row."""
        if not any(cell.strip() for cell in cells):
            return None
        errors: list[RowError] = []
        if any("\x00" in cell for cell in cells):
            # No database stores NUL in text; it means a binary fragment, so the row is refused.
            return [RowError(line, None, "the row contains NUL characters")]
        width = len(self.layout.header)
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            errors.append(RowError(
                line, None,
                f"the row has {len(cells)} cells but the header has {width}: "
                f"is there an unquoted '{self.layout.delimiter}' in a value?",
            ))
        values, custom_raw, tag_cells = row_values(self.layout, cells)
        profile: dict[str, Any] = {}
        for key in PROFILE_FIELDS:
            if key in values:
                try:
                    profile.update(clean_profile({key: values[key]}, self.options.region))
                except Invalid as exc:
                    errors.append(self._error(line, exc))
        custom: dict[str, Any] = {}
        for key, value in custom_raw.items():
            try:
                custom[key] = coerce(self.defs[key], value)
            except Invalid as exc:
                errors.append(self._error(line, exc))
        try:
            tags = _clean_tags([*tag_cells, *self.options.tags])
        except Invalid as exc:
            errors.append(self._error(line, exc))
            tags = []
        if "email" not in profile and "phone" not in profile and not any(
            e.field in ("email", "phone") for e in errors
        ):
            errors.append(RowError(line, "email", "a row needs an email or a phone"))
        if errors:
            return errors
        origin = Origin(
            channel=Channel.import_.value,
            source=_origin_text("source", values.get("utm_source") or self.source),
            medium=_origin_text("medium", values.get("utm_medium")),
            campaign=_origin_text("campaign", values.get("utm_campaign") or self.options.campaign),
            content=_origin_text("content", values.get("utm_content")),
            term=_origin_text("term", values.get("utm_term")),
        )
        return ImportRow(line, profile, custom, tags, origin)

    def _error(self, line: int, exc: Invalid) -> RowError:
        column = self.columns_by_target.get(exc.field or "")
        if column is None and exc.field in ("first_name", "last_name"):
            column = self.columns_by_target.get("full_name")
        return RowError(line, exc.field, exc.message, column)
