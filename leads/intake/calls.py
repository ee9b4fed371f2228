"""Phone calls: tracking numbers (a number per campaign) and the signed call-tracking / PBX webhook
that turns each call into a lead, a touchpoint and a call activity.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dateutil import parser as date_parser
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import lock_keys
from core.errors import Conflict, Invalid, NotFound, Unauthorized, UnsupportedMediaType
from core.outbox import emit
from core.text import check_text
from core.tokens import constant_time_equal, hmac_sha256
from leads.models import Activity, Channel, TrackingNumber
from leads.schemas import normalize_phone
from leads.service import Origin, record_intake

TIMESTAMP_HEADER = "X-Nurture-Timestamp"
SIGNATURE_HEADER = "X-Nurture-Signature"
SIGNATURE_WINDOW = timedelta(minutes=5)
MAX_CALL_SECONDS = 7 * 24 * 3600
CALL_TYPES = ("call_answered", "call_missed")

# What PBXes and call-tracking services send (Asterisk dispositions, Twilio statuses, …).
ANSWERED = {"answered", "answer", "completed", "complete", "success", "ok", "connected", "accepted"}
MISSED = {
    "missed", "no answer", "no_answer", "noanswer", "no-answer", "not answered", "not_answered",
    "unanswered", "busy", "failed", "fail", "cancel", "canceled", "cancelled", "congestion",
    "chanunavail", "voicemail", "abandoned", "rejected", "declined", "timeout",
}
# Field names used by common PBX webhooks, mapped to ours.
ALIASES = {
    "caller": ("caller", "caller_number", "caller_id", "callerid", "from", "src", "ani", "phone"),
    "tracking_number": ("tracking_number", "called", "called_number", "to", "dst", "did", "dnis"),
    "started_at": ("started_at", "start", "start_time", "started", "timestamp", "calldate", "call_start"),
    "duration": ("duration", "billsec", "talk_time", "duration_seconds", "call_duration"),
    "status": ("status", "disposition", "call_status", "result"),
    "recording_url": ("recording_url", "recording", "record_url", "recordingurl"),
    "call_id": ("call_id", "callid", "uniqueid", "call_sid", "callsid", "id"),
}


# --- tracking numbers ------------------------------------------------------------------------


async def create_tracking_number(
    session: AsyncSession, number: str, region: str, campaign: str | None = None, source: str | None = None,
    medium: str | None = None, label: str | None = None,
) -> TrackingNumber:
    """Publish `number` for a campaign; 409 if it is already tracked."""
    check_text({"campaign": campaign, "source": source, "medium": medium, "label": label})
    e164 = normalize_phone(number, region, field="number")
    await lock_keys(session, f"tracking-number:{e164}")
    if await session.scalar(select(TrackingNumber.id).where(TrackingNumber.number == e164)) is not None:
        raise Conflict(f"{e164} is already a tracking number", field="number")
    tracked = TrackingNumber(
        number=e164, campaign=campaign, source=source, medium=medium, label=label, created_at=clock.now()
    )
    session.add(tracked)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent create won the unique constraint (SQLite has no advisory lock)
        raise Conflict(f"{e164} is already a tracking number", field="number") from None
    return tracked


async def list_tracking_numbers(session: AsyncSession) -> list[TrackingNumber]:
    numbers = await session.scalars(select(TrackingNumber).order_by(TrackingNumber.created_at, TrackingNumber.number))
    return list(numbers)


async def delete_tracking_number(session: AsyncSession, number_id: uuid.UUID) -> None:
    tracked = await session.get(TrackingNumber, number_id)
    if tracked is None:
        raise NotFound(f"no tracking number {number_id}", field="id")
    await session.delete(tracked)


# --- the webhook -----------------------------------------------------------------------------


def verify_signature(timestamp: str | None, signature: str | None, body: bytes, secret: str) -> None:
    """HMAC-SHA256 over "<timestamp>.<raw body>", at most five minutes off our clock either way."""
    if not timestamp:
        raise Unauthorized(f"the {TIMESTAMP_HEADER} header is missing", field=TIMESTAMP_HEADER)
    if not signature:
        raise Unauthorized(f"the {SIGNATURE_HEADER} header is missing", field=SIGNATURE_HEADER)
    stamp = timestamp.strip()
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise Unauthorized("the timestamp must be unix seconds", field=TIMESTAMP_HEADER)
    sent_at = datetime.fromtimestamp(int(stamp), UTC)
    if abs(clock.now() - sent_at) > SIGNATURE_WINDOW:
        raise Unauthorized("the timestamp is more than 5 minutes off; resend with a fresh one", field=TIMESTAMP_HEADER)
    scheme, _, given = signature.strip().partition("=")
    expected = hmac_sha256(secret, stamp.encode() + b"." + body)
    if scheme.lower() != "sha256" or not constant_time_equal(given.strip().lower(), expected):
        raise Unauthorized("the signature does not match the body", field=SIGNATURE_HEADER)


@dataclass
class CallReport:
    """One call as the PBX reported it, validated."""

    caller: str
    tracking_number: str | None
    started_at: datetime
    duration: int
    answered: bool
    recording_url: str | None
    call_id: str | None


def parse_call(body: bytes, content_type: str, region: str) -> CallReport:
    """JSON or urlencoded body → CallReport; raises Invalid naming the field, 415 for other types."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Invalid("the body is not valid JSON", field="body") from None
        if not isinstance(data, dict):
            raise Invalid("the body must be a JSON object", field="body")
    elif media == "application/x-www-form-urlencoded":
        try:
            data = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100))
        except (UnicodeDecodeError, ValueError):
            raise Invalid("the body is not a valid form", field="body") from None
    else:
        raise UnsupportedMediaType(
            "send application/json or application/x-www-form-urlencoded", field="content-type"
        )
    fields = {name: _pick(data, names) for name, names in ALIASES.items()}

    caller = _text(fields["caller"], "caller", 64)
    if not caller:
        raise Invalid("the caller's number is required", field="caller")
    dialled = _text(fields["tracking_number"], "tracking_number", 64)
    return CallReport(
        caller=normalize_phone(caller, region, field="caller"),
        tracking_number=_dialled_number(dialled, region) if dialled else None,
        started_at=_started_at(fields["started_at"]),
        duration=_duration(fields["duration"]),
        answered=_answered(fields["status"]),
        recording_url=_recording_url(fields["recording_url"]),
        call_id=_text(fields["call_id"], "call_id", 200),
    )


@dataclass
class RecordedCall:
    lead_id: uuid.UUID
    activity_id: uuid.UUID
    duplicate: bool  # this call_id was recorded before; nothing new was written


async def record_call(session: AsyncSession, call: CallReport) -> RecordedCall:
    """The caller becomes (or is found as) a lead with a call touchpoint and activity. Never commits."""
    if call.call_id:
        # PBXes retry webhooks; the lock makes "look up, then insert" safe against a parallel retry.
        await lock_keys(session, f"call:{call.call_id}")
        seen = await session.scalar(
            select(Activity)
            .where(Activity.type.in_(CALL_TYPES), Activity.data["call_id"].as_string() == call.call_id)
            .limit(1)
        )
        if seen is not None and seen.lead_id is not None:
            return RecordedCall(seen.lead_id, seen.id, duplicate=True)

    tracked = None
    if call.tracking_number:
        tracked = await session.scalar(select(TrackingNumber).where(TrackingNumber.number == call.tracking_number))
    origin = Origin(
        channel=Channel.call,
        source=(tracked.source if tracked else None) or "phone",
        medium=tracked.medium if tracked else None,
        campaign=tracked.campaign if tracked else None,
        occurred_at=call.started_at,
    )
    activity_type = "call_answered" if call.answered else "call_missed"
    result = await record_intake(
        session, {"phone": call.caller}, origin, activity_type,
        {
            "caller": call.caller, "tracking_number": call.tracking_number, "duration": call.duration,
            "recording_url": call.recording_url, "call_id": call.call_id,
        },
        overwrite=False,
    )
    if not call.answered:
        # Sales should call back while the caller still remembers why they called.
        await emit(
            session, "call.missed",
            {
                "lead_id": result.lead.id, "activity_id": result.activity.id, "caller": call.caller,
                "tracking_number": call.tracking_number, "campaign": origin.campaign,
                "started_at": call.started_at, "call_id": call.call_id,
            },
        )
    return RecordedCall(result.lead.id, result.activity.id, duplicate=False)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _pick(data: dict[str, Any], names: tuple[str, ...]) -> Any:
    lowered = {str(k).lower(): v for k, v in data.items()}
    for name in names:
        value = lowered.get(name)
        if value not in (None, ""):
            return value
    return None


def _text(value: Any, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid("must be text", field=field)
    text = str(value).strip()
    if len(text) > limit:
        raise Invalid(f"must be at most {limit} characters", field=field)
    if any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise Invalid("must not contain control characters", field=field)
    return text or None


def _dialled_number(value: str, region: str) -> str:
    """E.164 when it parses; an internal extension or odd DID is kept as sent so it can still match."""
    try:
        return normalize_phone(value, region, field="tracking_number")
    except Invalid:
        return value[:32]


def _started_at(value: Any) -> datetime:
    if value is None:
        return clock.now()
    try:
        if isinstance(value, bool):
            raise ValueError
        unix = isinstance(value, str) and re.fullmatch(r"\d{9,11}(\.\d+)?", value.strip())
        if isinstance(value, int | float) or unix:
            seconds = float(value)
            if not math.isfinite(seconds):
                raise ValueError
            started = datetime.fromtimestamp(seconds, UTC)
        elif isinstance(value, str) and len(value) <= 64:
            started = date_parser.isoparse(value.strip())
            started = started if started.tzinfo else started.replace(tzinfo=UTC)  # PBXes mostly log UTC
        else:
            raise ValueError
        started = clock.as_utc(started)  # overflows for 0001-01-01T00:00+02:00
    except (ValueError, OverflowError, OSError):
        raise Invalid("must be ISO 8601 (2026-03-02T09:30:00Z) or unix seconds", field="started_at") from None
    if started > clock.now() + timedelta(days=1) or started.year < 2000:
        raise Invalid("is not a plausible call time", field="started_at")
    return started


def _duration(value: Any) -> int:
    if value is None:
        return 0
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_CALL_SECONDS:
        raise Invalid("must be the call length in seconds", field="duration")
    return round(seconds)


def _answered(value: Any) -> bool:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be answered or missed", field="status")
    status = " ".join(value.strip().lower().replace("-", " ").replace("_", " ").split())
    if status in ANSWERED or status.replace(" ", "_") in ANSWERED:
        return True
    if status in MISSED or status.replace(" ", "_") in MISSED or status.replace(" ", "") in MISSED:
        return False
    raise Invalid(f"must be answered or missed, not {value[:40]!r}", field="status")


def _recording_url(value: Any) -> str | None:
    url = _text(value, "recording_url", 2000)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise Invalid("must be an http or https link", field="recording_url")
    return url
