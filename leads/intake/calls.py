"""Phone calls: tracking numbers (a number per campaign) and the signed call-tracking / PBX webhook
that turns each call into a lead, a touchpoint and a call activity (no lead for a withheld number).
"""

from __future__ import annotations

import hashlib
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
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import flush_unique, lock_keys
from core.errors import Conflict, Invalid, NotFound, Unauthorized, UnsupportedMediaType
from core.outbox import emit
from core.phones import normalize_phone
from core.text import check_text
from core.tokens import constant_time_equal, hmac_sha256
from leads.events import CallMissed
from leads.intake.interaction import Origin, activity_row, touchpoint_row
from leads.models import Activity, Channel, Touchpoint, TrackingNumber
from leads.service import record_intake

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
# What PBXes put in the caller field when the number is hidden (an empty value means the same).
WITHHELD = {
    "anonymous", "anonymous caller", "unknown", "unknown caller", "private", "private number", "withheld",
    "number withheld", "cli withheld", "restricted", "unavailable", "hidden", "blocked", "no caller id",
    "скрыт", "скрытый", "скрытый номер", "номер скрыт", "неизвестен", "неизвестный", "неизвестный номер",
    "аноним", "анонимный",
}
# Twilio's stand-ins for a hidden number: ANONYMOUS, UNKNOWN, RESTRICTED, BLOCKED on a keypad.
WITHHELD_NUMBERS = {"+266696687", "+86282452253", "+7378742833", "+2562533"}


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
    await flush_unique(session, Conflict(f"{e164} is already a tracking number", field="number"))
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


def verify_signature(timestamp: str | None, signature: str | None, body: bytes, secret: str) -> datetime:
    """HMAC-SHA256 over "<timestamp>.<raw body>", at most five minutes off our clock either way.
    Returns when the PBX signed the call."""
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
    return sent_at


@dataclass
class CallReport:
    """One call as the PBX reported it, validated; `caller` is None when the number was withheld."""

    caller: str | None
    tracking_number: str | None
    started_at: datetime
    duration: int
    answered: bool
    recording_url: str | None
    call_id: str | None

    @property
    def key(self) -> str:
        """What makes a delivery of this call the same call: the PBX's call id, else the call's facts.

        Without a call id a replayed or retried delivery carries the same caller, number, start
        (or, when the PBX sends none, the same signing time), status and length; two different
        calls do not.
        """
        if self.call_id:
            return f"id:{self.call_id}"
        facts = [self.caller, self.tracking_number, self.started_at.isoformat(), self.answered, self.duration]
        return "facts:" + hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:32]


def parse_call(body: bytes, content_type: str, region: str, sent_at: datetime | None = None) -> CallReport:
    """JSON or urlencoded body → CallReport; raises Invalid naming the field, 415 for other types.

    A call without started_at started when the PBX signed it (`sent_at`), else now.
    """
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
    # An empty caller is a withheld number; no caller field at all is a webhook set up wrongly.
    if not any(str(k).lower() in ALIASES["caller"] for k in data):
        raise Invalid(
            "the caller's number is required (send it empty or 'anonymous' for a withheld number)", field="caller"
        )
    caller = _text(fields["caller"], "caller", 64)
    dialled = _text(fields["tracking_number"], "tracking_number", 64)
    return CallReport(
        caller=None if _withheld(caller) else normalize_phone(caller or "", region, field="caller"),
        tracking_number=_dialled_number(dialled, region) if dialled else None,
        started_at=_started_at(fields["started_at"], sent_at),
        duration=_duration(fields["duration"]),
        answered=_answered(fields["status"]),
        recording_url=_recording_url(fields["recording_url"]),
        call_id=_text(fields["call_id"], "call_id", 200),
    )


@dataclass
class RecordedCall:
    lead_id: uuid.UUID | None  # None for a withheld number
    activity_id: uuid.UUID
    duplicate: bool  # this call was recorded before; nothing new was written


async def record_call(session: AsyncSession, call: CallReport) -> RecordedCall:
    """The caller becomes (or is found as) a lead with a call touchpoint and activity; a withheld
    number gets the touchpoint and activity without a lead. Never commits."""
    # PBXes retry webhooks and a signed body can be replayed; the lock makes "look up, then
    # insert" safe against a parallel delivery.
    key = call.key
    await lock_keys(session, f"call:{key}")
    seen = await session.scalar(
        select(Activity)
        .where(Activity.type.in_(CALL_TYPES), Activity.data["call_key"].as_string() == key)
        .limit(1)
    )
    if seen is not None:
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
    data = {
        "caller": call.caller, "withheld": call.caller is None, "tracking_number": call.tracking_number,
        "duration": call.duration, "recording_url": call.recording_url, "call_id": call.call_id, "call_key": key,
    }
    if call.caller is None:
        lead_id, activity_id = None, await _record_anonymous_call(session, origin, activity_type, data)
    else:
        result = await record_intake(session, {"phone": call.caller}, origin, activity_type, data, overwrite=False)
        lead_id, activity_id = result.lead.id, result.activity.id
    if not call.answered:
        # Sales should call back while the caller still remembers why they called. Ids only: the
        # callback job loads the number from the lead (and none is left once the person is erased).
        await emit(session, CallMissed(
            lead_id=lead_id, activity_id=activity_id, tracking_number=call.tracking_number,
            campaign=origin.campaign, started_at=call.started_at, call_id=call.call_id,
        ))
    return RecordedCall(lead_id, activity_id, duplicate=False)


async def _record_anonymous_call(
    session: AsyncSession, origin: Origin, activity_type: str, data: dict[str, Any]
) -> uuid.UUID:
    """A call from a hidden number still counts for its campaign, though there is no one to find."""
    occurred_at = origin.occurred_at or clock.now()
    touchpoint = touchpoint_row(None, origin, occurred_at)
    activity = activity_row(None, None, activity_type, touchpoint["id"], data, occurred_at)
    session.add_all([Touchpoint(**touchpoint), Activity(**activity)])
    await session.flush()
    return activity["id"]


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


def _withheld(caller: str | None) -> bool:
    if not caller:
        return True
    word = " ".join(caller.lower().replace("-", " ").replace("_", " ").split())
    return word in WITHHELD or word.strip("<>()[]") in WITHHELD or caller.replace(" ", "") in WITHHELD_NUMBERS


def _dialled_number(value: str, region: str) -> str:
    """E.164 when it parses; an internal extension or odd DID is kept as sent so it can still match."""
    try:
        return normalize_phone(value, region, field="tracking_number")
    except Invalid:
        return value[:32]


def _started_at(value: Any, sent_at: datetime | None) -> datetime:
    if value is None:
        return sent_at or clock.now()
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
