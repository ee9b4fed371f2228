"""The leads domain as the registry knows it: intake, identity, timeline, consent, segments."""

from __future__ import annotations

from core.domains import Domain, PersonalData
from leads import events, jobs, models, privacy, public
from leads.api import events as behaviour
from leads.api import fields, forms, imports, inbound, leads, segments, tracking_numbers

DOMAIN = Domain(
    name="leads",
    models=(models,),
    # The call webhook first: routes are matched in order on every request.
    public=(public.calls.router,),
    lean_routes=tuple(public.lean_routes),
    api=(
        forms.router, behaviour.router, inbound.router, leads.router, tracking_numbers.router,
        segments.router, fields.router, imports.router,
    ),
    jobs=(jobs,),
    events=events.EVENTS,
    personal_data=(
        PersonalData("lead", ("leads", "lead_tags"), privacy.export_profile, privacy.erase_profiles),
        PersonalData("visitors", ("visitors",), privacy.export_visitors, privacy.erase_visitors),
        PersonalData("touchpoints", ("touchpoints",), privacy.export_touchpoints, privacy.erase_touchpoints),
        PersonalData("activities", ("activities",), privacy.export_activities, privacy.erase_activities),
        PersonalData("consents", ("consents",), privacy.export_consents, privacy.erase_consents),
        PersonalData("inbound_emails", ("inbound_emails",), privacy.export_inbound_emails,
                     privacy.erase_inbound_emails),
        PersonalData("segments", ("segment_members",), privacy.export_memberships, privacy.erase_memberships),
        PersonalData("merged_leads", ("leads",), privacy.export_merged_leads,
                     kept="blanked with the person's own lead (part 'lead' erases every id of the person)"),
        PersonalData("merged_addresses", ("lead_aliases",), privacy.export_aliases, privacy.erase_aliases),
    ),
)
