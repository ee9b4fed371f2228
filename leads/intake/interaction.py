"""What one interaction writes — the changes to its lead's values, its touchpoint, activity, consents
and outbox events — defined once: `record_intake` writes one post this way, the grouped writers
(form posts, behaviour events, imports) many posts' rows in a few statements."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.events import EventPayload
from core.ids import new_id
from core.text import scrub
from leads.events import LeadActivity, LeadCreated, LeadUpdated, OptinRequested
from leads.schemas import ConsentIn


@dataclass
class Origin:
    """Where an interaction came from: the channel and its marketing context."""

    channel: str
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    content: str | None = None
    term: str | None = None
    referrer: str | None = None
    landing_page: str | None = None
    visitor_id: str | None = None
    ip: str | None = None
    occurred_at: datetime | None = None

    @classmethod
    def from_params(cls, channel: str, params: dict[str, Any], **extra: Any) -> Origin:
        def text(key: str, limit: int) -> str | None:
            value = params.get(key)
            if not isinstance(value, str) or not value.strip():
                return None
            return scrub(value.strip()[:limit])

        return cls(
            channel=channel,
            source=text("utm_source", 200),
            medium=text("utm_medium", 200),
            campaign=text("utm_campaign", 200),
            content=text("utm_content", 500),
            term=text("utm_term", 500),
            **extra,
        )


@dataclass(slots=True)
class LeadChanges:
    """What a post changes on its lead: profile values, custom values, tags."""

    values: dict[str, Any]  # profile field → its new value
    custom: dict[str, Any] | None  # the lead's custom values after the post, if they changed
    custom_changed: list[str]  # the custom keys whose value changed
    tags: list[str]  # tags the lead did not have

    @property
    def changed(self) -> list[str]:
        """The fields written, as `lead.updated` names them."""
        return [*self.values, *(f"custom.{k}" for k in self.custom_changed), *(["tags"] if self.tags else [])]


def lead_changes(
    values: Mapping[str, Any], custom_values: Mapping[str, Any], tags_had: Collection[str],
    profile: Mapping[str, Any], custom: Mapping[str, Any], tags: Sequence[str], overwrite: bool,
    merged_away: Collection[tuple[str, str]] = (),
) -> LeadChanges:
    """How a post's values apply to a lead that has `values` (profile fields), `custom_values` and
    `tags_had`: with `overwrite` a sent value replaces a stored one (a newer form wins), otherwise it
    only fills an empty field. An address the lead had before a merge (`merged_away`, (kind, value))
    never replaces its current one."""
    changed = {}
    for key, value in profile.items():
        if value is None:
            continue
        current = values.get(key)
        if (key, value) in merged_away and current not in (None, ""):
            continue
        if (overwrite or current in (None, "")) and current != value:
            changed[key] = value
    after, custom_changed = None, []
    if custom:
        merged = {**custom_values, **custom} if overwrite else {**custom, **custom_values}
        if merged != custom_values:
            after, custom_changed = merged, [k for k in custom if merged.get(k) != custom_values.get(k)]
    new_tags = [tag for tag in dict.fromkeys(tags) if tag not in tags_had]
    return LeadChanges(changed, after, custom_changed, new_tags)


@dataclass(slots=True)
class Interaction:
    """The rows one post writes besides its lead's, as column values, and its events, in the order
    they are written."""

    touchpoint: dict[str, Any]
    activity: dict[str, Any]
    consents: list[dict[str, Any]]
    events: list[EventPayload]


def lead_post(
    lead_id: uuid.UUID, created: bool, changed: list[str], origin: Origin, activity_type: str,
    data: dict[str, Any], occurred_at: datetime, consents: Sequence[ConsentIn] = (),
) -> Interaction:
    """What a person's post (a form, a call, an email, an API post, an import row) writes once its
    lead is found or made: where it came from, what they did, the consents they gave, and the
    events saying so (`lead.created`, or `lead.updated` naming the `changed` fields; `lead.activity`)."""
    touchpoint = touchpoint_row(lead_id, origin, occurred_at)
    activity = activity_row(lead_id, origin.visitor_id, activity_type, touchpoint["id"], data, occurred_at)
    return Interaction(
        touchpoint=touchpoint,
        activity=activity,
        consents=[consent_row(lead_id, c.purpose, c.granted, c.wording, origin, occurred_at) for c in consents],
        events=[
            LeadCreated(lead_id=lead_id, channel=origin.channel, campaign=origin.campaign) if created else
            LeadUpdated(lead_id=lead_id, changed=changed, channel=origin.channel, campaign=origin.campaign),
            activity_event(activity),
        ],
    )


def touchpoint_row(lead_id: uuid.UUID | None, origin: Origin, occurred_at: datetime) -> dict[str, Any]:
    return {
        "id": new_id(), "lead_id": lead_id, "visitor_id": origin.visitor_id, "channel": origin.channel,
        "source": origin.source, "medium": origin.medium, "campaign": origin.campaign, "content": origin.content,
        "term": origin.term, "referrer": origin.referrer, "landing_page": origin.landing_page,
        "occurred_at": occurred_at,
    }


def activity_row(
    lead_id: uuid.UUID | None, visitor_id: str | None, activity_type: str, touchpoint_id: uuid.UUID | None,
    data: dict[str, Any], occurred_at: datetime,
) -> dict[str, Any]:
    return {
        "id": new_id(), "lead_id": lead_id, "visitor_id": visitor_id, "type": activity_type,
        "touchpoint_id": touchpoint_id, "data": data, "occurred_at": occurred_at,
    }


def activity_event(activity: dict[str, Any]) -> LeadActivity:
    """`lead.activity` for an activity row of a known lead."""
    return LeadActivity(
        lead_id=activity["lead_id"], activity_id=activity["id"], type=activity["type"],
        occurred_at=activity["occurred_at"],
    )


def consent_row(
    lead_id: uuid.UUID, purpose: str, granted: bool, wording: str | None, origin: Origin, occurred_at: datetime,
) -> dict[str, Any]:
    """A consent given (or, not granted yet, asked for) through the post: its channel and the
    sender's IP are the evidence."""
    return {
        "id": new_id(), "lead_id": lead_id, "purpose": purpose, "granted": granted, "source": origin.channel,
        "wording": wording, "ip": origin.ip, "occurred_at": occurred_at,
    }


def optin_request(
    lead_id: uuid.UUID, has_email: bool, purpose: str, wording: str | None, form_key: str, origin: Origin,
    occurred_at: datetime,
) -> tuple[dict[str, Any], OptinRequested | None]:
    """What a double opt-in post writes once the lead's consent to `purpose` is found unconfirmed:
    the consent, not granted yet (the wording and IP as evidence of the request), and, when the lead
    has an email, `lead.optin_requested` for the confirmation mail. Ids only in the event: the email
    channel loads the address, so none is left behind once the person is erased."""
    pending = consent_row(lead_id, purpose, False, wording, origin, occurred_at)
    event = OptinRequested(lead_id=lead_id, purpose=purpose, form=form_key, consent_id=pending["id"])
    return pending, event if has_email else None
