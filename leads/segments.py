"""Segments: saved filters over leads, stored as JSON, compiled to SQL on SQLite and PostgreSQL,
and refreshed into SegmentMember so that entering and leaving become outbox events.

The language (every node is an object with exactly one of these keys):
  {"all": [node…]}  {"any": [node…]}  {"not": node}
  {"field": "country" | "custom.<key>" | …, "op": "eq", "value": …}
  {"tag": "vip"}
  {"activity": "form_submitted", "within_days": 30, "min_count": 1}
  {"touchpoint": {"source": "yandex", "campaign": …}, "within_days": 90}
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, exists, false, func, not_, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import flush_unique, lock_keys
from core.errors import Conflict, Invalid, NotFound
from core.outbox import emit
from core.text import check_text
from leads.events import SegmentEntered, SegmentLeft
from leads.fields import definitions
from leads.models import Activity, CustomField, CustomFieldType, Lead, LeadTag, Segment, SegmentMember, Touchpoint
from leads.query import CustomValue, folded, prepare_folding
from leads.search import live_leads, parse_datetime

OPS = ("eq", "ne", "in", "contains", "starts_with", "gt", "gte", "lt", "lte", "is_empty", "is_set")
TEXT_OPS = frozenset(OPS)
ORDER_OPS = frozenset(("eq", "ne", "in", "gt", "gte", "lt", "lte", "is_empty", "is_set"))
BOOL_OPS = frozenset(("eq", "ne", "is_empty", "is_set"))
TEXT_FIELDS = (
    "email", "phone", "first_name", "last_name", "company", "job_title", "industry",
    "company_size", "country", "region", "city", "timezone", "customer_status", "source_channel",
)
TIME_FIELDS = ("created_at", "updated_at")
TOUCHPOINT_KEYS = ("channel", "source", "medium", "campaign", "content", "term")
MAX_DEPTH = 10
MAX_NODES = 200
MAX_IN = 1000
MAX_NUMBER = 1e15


class _Compiler:
    """Checks one filter and turns it into a WHERE clause; errors name the JSON path."""

    def __init__(self, session: AsyncSession, defs: dict[str, CustomField]) -> None:
        self.session = session
        self.defs = defs
        self.nodes = 0

    def node(self, node: Any, path: str, depth: int = 0) -> ColumnElement[bool]:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise Invalid(f"a filter may have at most {MAX_NODES} conditions", field=path)
        if depth > MAX_DEPTH:
            raise Invalid(f"a filter may nest at most {MAX_DEPTH} levels", field=path)
        if not isinstance(node, dict):
            raise Invalid("must be an object such as {\"field\": …, \"op\": …}", field=path)
        kinds = [k for k in ("all", "any", "not", "field", "tag", "activity", "touchpoint") if k in node]
        if len(kinds) != 1:
            raise Invalid(
                "must have exactly one of all, any, not, field, tag, activity, touchpoint", field=path
            )
        kind = kinds[0]
        allowed = {
            "all": {"all"}, "any": {"any"}, "not": {"not"}, "field": {"field", "op", "value"},
            "tag": {"tag"}, "activity": {"activity", "within_days", "min_count"},
            "touchpoint": {"touchpoint", "within_days"},
        }[kind]
        for key in node:
            if key not in allowed:
                raise Invalid(f"unknown key '{key}' in a {kind} condition", field=f"{path}.{key}")
        if kind in ("all", "any"):
            items = node[kind]
            if not isinstance(items, list):
                raise Invalid("must be a list of conditions", field=f"{path}.{kind}")
            parts = [self.node(item, f"{path}.{kind}.{i}", depth + 1) for i, item in enumerate(items)]
            if kind == "all":
                return and_(true(), *parts)
            return or_(false(), *parts)
        if kind == "not":
            return not_(self.node(node["not"], f"{path}.not", depth + 1))
        if kind == "tag":
            tag = node["tag"]
            if not isinstance(tag, str) or not 1 <= len(tag.strip()) <= 100:
                raise Invalid("must be a tag of 1 to 100 characters", field=f"{path}.tag")
            return exists().where(LeadTag.lead_id == Lead.id, LeadTag.tag == tag.strip())
        if kind == "activity":
            return self.activity(node, path)
        if kind == "touchpoint":
            return self.touchpoint(node, path)
        return self.field(node, path)

    def activity(self, node: dict[str, Any], path: str) -> ColumnElement[bool]:
        kind = node["activity"]
        if not isinstance(kind, str) or not 1 <= len(kind) <= 50:
            raise Invalid("must be an activity type such as form_submitted", field=f"{path}.activity")
        conditions = [Activity.lead_id == Lead.id, Activity.type == kind]
        days = _whole(node.get("within_days"), f"{path}.within_days", 1, 36500)
        if days is not None:
            conditions.append(Activity.occurred_at >= clock.now() - timedelta(days=days))
        least = _whole(node.get("min_count"), f"{path}.min_count", 1, 1_000_000) or 1
        if least == 1:
            return exists().where(*conditions)
        count = select(func.count(Activity.id)).where(*conditions).scalar_subquery()
        return count >= least

    def touchpoint(self, node: dict[str, Any], path: str) -> ColumnElement[bool]:
        wanted = node["touchpoint"]
        if not isinstance(wanted, dict) or not wanted:
            raise Invalid(f"must be an object with some of {', '.join(TOUCHPOINT_KEYS)}", field=f"{path}.touchpoint")
        conditions: list[ColumnElement[bool]] = [Touchpoint.lead_id == Lead.id]
        for key, value in wanted.items():
            where = f"{path}.touchpoint.{key}"
            if key not in TOUCHPOINT_KEYS:
                raise Invalid(f"must be one of {', '.join(TOUCHPOINT_KEYS)}", field=where)
            if not isinstance(value, str) or not value or len(value) > 500:
                raise Invalid("must be text of 1 to 500 characters", field=where)
            conditions.append(folded(self.session, getattr(Touchpoint, key)) == _fold(value))
        days = _whole(node.get("within_days"), f"{path}.within_days", 1, 36500)
        if days is not None:
            conditions.append(Touchpoint.occurred_at >= clock.now() - timedelta(days=days))
        return exists().where(*conditions)

    def field(self, node: dict[str, Any], path: str) -> ColumnElement[bool]:
        name, op = node.get("field"), node.get("op")
        if not isinstance(name, str):
            raise Invalid("must be a field name", field=f"{path}.field")
        if op not in OPS:
            raise Invalid(f"must be one of {', '.join(OPS)}", field=f"{path}.op")
        value, value_path = node.get("value"), f"{path}.value"
        if op in ("is_empty", "is_set"):
            if value is not None:
                raise Invalid(f"{op} takes no value", field=value_path)
        elif "value" not in node or value is None:
            raise Invalid(f"{op} needs a value (use is_empty for missing values)", field=value_path)
        if name.startswith("custom."):
            return self.custom(name.removeprefix("custom."), op, value, path)
        if name in TEXT_FIELDS:
            return _compare(op, value, value_path, Lead.__table__.c[name], _text_value, self._folded)
        if name in TIME_FIELDS:
            return _compare(op, value, value_path, getattr(Lead, name), _time_value, None, ORDER_OPS)
        if name == "birthday":
            return _compare(op, value, value_path, Lead.birthday, _date_value, None, ORDER_OPS)
        if name == "owner_id":
            return _compare(op, value, value_path, Lead.owner_id, _uuid_value, None, BOOL_OPS | {"in"})
        raise Invalid(f"unknown field '{name}'", field=f"{path}.field")

    def custom(self, key: str, op: str, value: Any, path: str) -> ColumnElement[bool]:
        spec = self.defs.get(key)
        if spec is None:
            raise Invalid(f"no custom field '{key}' is defined", field=f"{path}.field")
        access = CustomValue(self.session, key)
        where = f"{path}.value"
        if op == "is_empty":
            return access.is_empty()
        if op == "is_set":
            return not_(access.is_empty())
        if spec.type in (CustomFieldType.number, CustomFieldType.integer):
            return _compare(op, value, where, access.number(), _number_value, None, ORDER_OPS)
        if spec.type == CustomFieldType.boolean:
            return _compare(op, value, where, access.boolean(), _bool_value, None, BOOL_OPS)
        if spec.type == CustomFieldType.date:
            return _compare(op, value, where, access.text(), _iso_date_text, None, ORDER_OPS)
        return _compare(op, value, where, access.text(), _text_value, self._folded)

    def _folded(self, column: Any) -> ColumnElement[Any]:
        return folded(self.session, column)


def _fold(value: str) -> str:
    from leads.query import fold

    return fold(value)


def _whole(value: Any, field: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"must be a whole number from {low} to {high}", field=field)
    return value


def _text_value(value: Any, field: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Invalid("must be text", field=field)
    text = str(value)
    if len(text) > 1000:
        raise Invalid("must be at most 1000 characters", field=field)
    return text


def _number_value(value: Any, field: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("must be a number", field=field)
    if isinstance(value, float) and not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise Invalid(f"must be a finite number no larger than {MAX_NUMBER:g}", field=field)
    return value


def _bool_value(value: Any, field: str) -> Any:
    if not isinstance(value, bool):
        raise Invalid("must be true or false", field=field)
    return value


def _time_value(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise Invalid("must be a date (YYYY-MM-DD) or an ISO 8601 time", field=field)
    return parse_datetime(value, field)


def _date_value(value: Any, field: str) -> date:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else date.fromisoformat("")
    except ValueError:
        raise Invalid("must be a date as YYYY-MM-DD", field=field) from None


def _iso_date_text(value: Any, field: str) -> str:
    return _date_value(value, field).isoformat()


def _uuid_value(value: Any, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value) if isinstance(value, str) else uuid.UUID("")
    except ValueError:
        raise Invalid("must be a user id", field=field) from None


def _compare(
    op: str,
    value: Any,
    field: str,
    column: Any,
    convert: Callable[[Any, str], Any],
    fold_column: Callable[[Any], ColumnElement[Any]] | None,
    allowed: frozenset[str] = TEXT_OPS,
) -> ColumnElement[bool]:
    """`column op value`. Text compares folded for eq/ne/in/contains/starts_with ("Москва" is
    "москва"). `ne` counts a missing value as different, as a marketer means it."""
    if op not in allowed:
        raise Invalid(
            f"{op} does not apply to this field; use one of {', '.join(sorted(allowed))}",
            field=field.rsplit(".", 1)[0] + ".op",
        )
    if op == "is_empty":
        return or_(column.is_(None), column == "") if fold_column else column.is_(None)
    if op == "is_set":
        return and_(column.is_not(None), column != "") if fold_column else column.is_not(None)
    if op == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN:
            raise Invalid(f"must be a list of 1 to {MAX_IN} values", field=field)
        values = [convert(item, f"{field}.{i}") for i, item in enumerate(value)]
        if fold_column:
            return fold_column(column).in_([_fold(v) for v in values])
        return column.in_(values)
    converted = convert(value, field)
    if op in ("contains", "starts_with"):
        if not converted:
            raise Invalid("must not be empty", field=field)
        target = fold_column(column) if fold_column else column
        method = target.contains if op == "contains" else target.startswith
        return method(_fold(converted), autoescape=True)  # type: ignore[no-any-return]
    if op in ("eq", "ne"):
        equal = fold_column(column) == _fold(converted) if fold_column else column == converted
        return equal if op == "eq" else or_(column.is_(None), not_(equal))
    if op == "gt":
        return column > converted  # type: ignore[no-any-return]
    if op == "gte":
        return column >= converted  # type: ignore[no-any-return]
    if op == "lt":
        return column < converted  # type: ignore[no-any-return]
    return column <= converted  # type: ignore[no-any-return]


async def segment_condition(session: AsyncSession, filter: Any, path: str = "filter") -> ColumnElement[bool]:
    """Validate `filter` and compile it; raises Invalid naming the path of the first problem."""
    check_text(filter, path)
    await prepare_folding(session)
    return _Compiler(session, await definitions(session)).node(filter, path)


def members_query(condition: ColumnElement[bool]) -> Any:
    return select(Lead).where(*live_leads(), condition)


async def count_members(session: AsyncSession, filter: Any) -> int:
    condition = await segment_condition(session, filter)
    count = await session.scalar(select(func.count()).select_from(Lead).where(*live_leads(), condition))
    return int(count or 0)


# Saved segments ----------------------------------------------------------------------------


def _clean_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise Invalid("must be a name of 1 to 200 characters", field="name")
    check_text(name, "name")
    return " ".join(name.split())


async def get_segment(session: AsyncSession, segment_id: uuid.UUID) -> Segment:
    segment = await session.get(Segment, segment_id)
    if segment is None:
        raise NotFound(f"no segment {segment_id}", field="segment_id")
    return segment


async def _name_taken(session: AsyncSession, name: str, other_than: uuid.UUID | None = None) -> bool:
    stmt = select(Segment.id).where(Segment.name == name)
    if other_than is not None:
        stmt = stmt.where(Segment.id != other_than)
    return await session.scalar(stmt) is not None


async def create_segment(session: AsyncSession, name: Any, filter: Any) -> Segment:
    name = _clean_name(name)
    await segment_condition(session, filter)
    await lock_keys(session, f"segment-name:{name}")
    if await _name_taken(session, name):
        raise Conflict(f"a segment named '{name}' exists", field="name")
    segment = Segment(name=name, filter=filter, member_count=0)
    session.add(segment)
    await flush_unique(session, Conflict(f"a segment named '{name}' exists", field="name"))
    return segment


async def update_segment(session: AsyncSession, segment: Segment, changes: dict[str, Any]) -> Segment:
    if "name" in changes:
        name = _clean_name(changes["name"])
        await lock_keys(session, f"segment-name:{name}")
        if await _name_taken(session, name, other_than=segment.id):
            raise Conflict(f"a segment named '{name}' exists", field="name")
        segment.name = name
    if "filter" in changes:
        await segment_condition(session, changes["filter"])
        segment.filter = changes["filter"]
    segment.updated_at = clock.now()
    await session.flush()
    return segment


async def refresh_segment(session: AsyncSession, segment: Segment) -> tuple[int, int]:
    """Recompute who is in `segment`; emit segment.entered / segment.left for each difference.

    Returns (entered, left). Two refreshes of one segment queue on a lock, so each difference is
    announced once; running it again without lead changes emits nothing (idempotent).
    """
    await lock_keys(session, f"segment:{segment.id}")
    condition = await segment_condition(session, segment.filter)
    matching = set(await session.scalars(select(Lead.id).where(*live_leads(), condition)))
    current = set(
        await session.scalars(select(SegmentMember.lead_id).where(SegmentMember.segment_id == segment.id))
    )
    entered, left = matching - current, current - matching
    now = clock.now()
    for lead_id in sorted(entered):
        session.add(SegmentMember(segment_id=segment.id, lead_id=lead_id, entered_at=now))
        await emit(session, SegmentEntered(segment_id=segment.id, lead_id=lead_id))
    if left:
        await session.execute(
            delete(SegmentMember).where(SegmentMember.segment_id == segment.id, SegmentMember.lead_id.in_(left))
        )
        for lead_id in sorted(left):
            await emit(session, SegmentLeft(segment_id=segment.id, lead_id=lead_id))
    segment.member_count = len(matching)
    segment.refreshed_at = now
    await session.flush()
    return len(entered), len(left)


async def place_lead(session: AsyncSession, lead_id: uuid.UUID) -> tuple[int, int]:
    """Bring one lead's memberships up to date after it changed, as a refresh of every segment
    would for this lead alone (segment.entered / segment.left for each difference).

    Returns (entered, left). Takes the same segment locks as `refresh_segment`, in one sorted
    round trip, so a concurrent refresh never announces the same difference twice.
    """
    segments = list(await session.scalars(select(Segment).order_by(Segment.id)))
    if not segments:
        return 0, 0
    await lock_keys(session, *(f"segment:{s.id}" for s in segments))
    current = set(await session.scalars(select(SegmentMember.segment_id).where(SegmentMember.lead_id == lead_id)))
    alive = (await session.scalar(select(func.count()).select_from(Lead).where(Lead.id == lead_id, *live_leads())))
    entered = left = 0
    now = clock.now()
    for segment in segments:
        condition = await segment_condition(session, segment.filter)
        inside = bool(alive) and bool(await session.scalar(select(exists().where(Lead.id == lead_id, condition))))
        if inside and segment.id not in current:
            session.add(SegmentMember(segment_id=segment.id, lead_id=lead_id, entered_at=now))
            await session.execute(
                update(Segment).where(Segment.id == segment.id).values(member_count=Segment.member_count + 1)
            )
            await emit(session, SegmentEntered(segment_id=segment.id, lead_id=lead_id))
            entered += 1
        elif not inside and segment.id in current:
            await session.execute(
                delete(SegmentMember).where(SegmentMember.segment_id == segment.id, SegmentMember.lead_id == lead_id)
            )
            await leave_segment(session, segment.id, lead_id)
            left += 1
    await session.flush()
    return entered, left


async def leave_segment(session: AsyncSession, segment_id: uuid.UUID, lead_id: uuid.UUID) -> None:
    """Count one member fewer and announce that `lead_id` left the segment, as a refresh would
    (the caller has taken the segment's lock and removes the membership row)."""
    fewer = case((Segment.member_count > 0, Segment.member_count - 1), else_=0)
    await session.execute(update(Segment).where(Segment.id == segment_id).values(member_count=fewer))
    await emit(session, SegmentLeft(segment_id=segment_id, lead_id=lead_id))
