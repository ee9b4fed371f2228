"""The events the leads domain emits, each with its payload type (what every producer writes and
every handler reads); `EVENTS` is what leads.domain declares to the catalogue."""

from __future__ import annotations

import uuid

from core.events import EventPayload, Time


class LeadEvent(EventPayload):
    """An event about one lead (the base of those whose `lead_id` is always there)."""

    lead_id: uuid.UUID


class LeadCreated(LeadEvent):
    """A lead was created: the first form post, call, email, API post, import row or behaviour
    event of a person nurture did not know."""

    name = "lead.created"

    channel: str  # where it came from: form, call, email, api, import, event
    campaign: str | None


class LeadUpdated(LeadEvent):
    """A known lead got in touch again through an intake channel (`channel` says which; `changed`
    may be empty), or its record was edited through the API (`channel` is None)."""

    name = "lead.updated"

    changed: list[str]  # the fields written: profile fields, `custom.<key>`, `tags`, `owner_id`
    channel: str | None
    campaign: str | None


class LeadActivity(LeadEvent):
    """Something the lead did or that happened to them is on their timeline: a form post, a call,
    a page view, an email opened or bounced, a note (`type` is the activity's type)."""

    name = "lead.activity"

    activity_id: uuid.UUID
    type: str
    occurred_at: Time


class OptinRequested(LeadEvent):
    """A form with double opt-in was posted by a lead with an email whose consent to `purpose` is
    not confirmed: a pending consent was recorded and the confirmation mail is due. Ids only: the
    email channel loads the address."""

    name = "lead.optin_requested"

    purpose: str
    form: str  # the form's key
    consent_id: uuid.UUID  # the pending consent the confirmation grants


class LeadMerged(EventPayload):
    """Two leads became one: `merged_id` now points at `survivor_id`, which took its history."""

    name = "lead.merged"

    survivor_id: uuid.UUID
    merged_id: uuid.UUID
    filled: list[str]  # the survivor's empty fields filled from the merged lead


class LeadErased(LeadEvent):
    """A person asked to be erased: the lead (and `merged_ids`, the leads merged into it) lost its
    personal data in every domain."""

    name = "lead.erased"

    merged_ids: list[uuid.UUID]


class ConsentWithdrawn(LeadEvent):
    """The lead withdrew their consent to `purpose`; campaigns stop at once (sending checks again)."""

    name = "consent.withdrawn"

    purpose: str


class CallMissed(EventPayload):
    """A call to a tracking number went unanswered (missed, busy, no answer): sales should call
    back. `lead_id` is None when the caller's number was withheld."""

    name = "call.missed"

    lead_id: uuid.UUID | None
    activity_id: uuid.UUID
    campaign: str | None
    started_at: Time
    tracking_number: str | None = None  # None also once the caller is erased
    call_id: str | None = None  # the PBX's id; None also once the caller is erased


class ReturnedMail(EventPayload):
    """A message that came back to us, stored as an inbound email (the handler reads it there)."""

    inbound_email_id: uuid.UUID
    lead_id: uuid.UUID | None  # the lead it is about, when known at arrival


class EmailBounced(ReturnedMail):
    """A delivery report (bounce) arrived for mail we sent."""

    name = "email.bounced"


class EmailComplained(ReturnedMail):
    """A recipient's mail provider reported our mail as spam (an ARF complaint)."""

    name = "email.complained"


class EmailAutoReplied(ReturnedMail):
    """An automatic reply (out of office, vacation) arrived; it is never a lead."""

    name = "email.auto_replied"


class SegmentEntered(LeadEvent):
    """The lead now matches the segment's filter (found by a refresh or after the lead changed)."""

    name = "segment.entered"

    segment_id: uuid.UUID


class SegmentLeft(LeadEvent):
    """The lead no longer matches the segment's filter, or was erased."""

    name = "segment.left"

    segment_id: uuid.UUID


EVENTS: tuple[type[EventPayload], ...] = (
    LeadCreated, LeadUpdated, LeadActivity, OptinRequested, LeadMerged, LeadErased, ConsentWithdrawn, CallMissed,
    EmailBounced, EmailComplained, EmailAutoReplied, SegmentEntered, SegmentLeft,
)
