"""/v1/leads: create, list, read, update, timeline, notes, consents, export, erase, merge."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import select

from core.errors import Conflict, Invalid
from core.ids import parse_id
from core.paging import keyset_page, parse_limit
from core.text import check_text
from core.web import LeadsReader, LeadsWriter, SessionDep, SettingsDep, client_ip
from leads.merge import merge_leads
from leads.models import Activity, Channel, Consent, Touchpoint
from leads.privacy import erase_lead, export_lead, find_erased
from leads.schemas import (
    ActivityOut,
    ActivityPage,
    ConsentOut,
    ConsentRecordIn,
    LeadIn,
    LeadOut,
    LeadPage,
    LeadPatch,
    MergeIn,
    NoteIn,
    TouchpointOut,
    TouchpointPage,
    clean_profile,
)
from leads.search import list_leads, parse_filter
from leads.service import (
    Origin,
    add_note,
    find_lead,
    get_lead,
    record_consent,
    record_intake,
    update_lead,
)

router = APIRouter(prefix="/v1/leads", tags=["leads"])

Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
Limit = Annotated[str | None, Query(description="1 to 500, default 50")]


@router.post("", status_code=201, response_model=LeadOut)
async def create_lead(
    body: LeadIn, session: SessionDep, settings: SettingsDep, request: Request, response: Response, _key: LeadsWriter
) -> LeadOut:
    """Create a lead, or update the one with the same email/phone (then 200). It needs an email,
    a phone or a visitor_id (422 naming email otherwise).

    A person who was erased comes back only with a granted consent in the same request (409
    otherwise), so a CRM sync cannot silently bring them back."""
    check_text(body.model_dump(mode="json"), "")
    profile = clean_profile(body.profile(), body.region_hint or settings.default_region)
    email, phone = profile.get("email"), profile.get("phone")
    if not (email or phone or (body.visitor_id or "").strip()):
        # A lead nobody can reach or recognise again is noise, as on forms and imports.
        raise Invalid("an email, a phone or a visitor_id is required", field="email")
    consented = any(c.granted for c in body.consent or [])
    if (email or phone) and not consented and await find_lead(session, email, phone, body.visitor_id) is None:
        erased = await find_erased(session, email, phone, settings.signing_keys())
        if erased is not None:
            field = "email" if email and erased.erased_email_hash else "phone"
            raise Conflict("this person asked to be erased; send a granted consent to add them again", field=field)
    origin = Origin.from_params(
        Channel.api, body.model_dump(), visitor_id=body.visitor_id, ip=client_ip(request, settings)
    )
    result = await record_intake(
        session, profile, origin, "api_created", custom=body.custom, tags=body.tags,
        consents=body.consent, owner_id=body.owner_id,
    )
    await session.commit()
    if not result.created:
        response.status_code = 200
    response.headers["location"] = f"/v1/leads/{result.lead.id}"
    return LeadOut.model_validate(result.lead)


@router.get("", response_model=LeadPage)
async def search_leads(request: Request, session: SessionDep, settings: SettingsDep, _key: LeadsReader) -> LeadPage:
    """Leads, oldest first, paged by `cursor`.

    Filters: email, phone, q (words in name/email/company, any case, ё = е), tag (repeatable),
    country, customer_status, source_channel, campaign, created_from, created_to (dates or ISO
    times), custom.<key>=value, segment=<id>; paging: cursor, limit (1..500, default 50).
    Merged and erased leads are left out."""
    wanted = await parse_filter(session, request.query_params.multi_items(), settings.default_region)
    page = await list_leads(session, wanted)
    return LeadPage(items=[LeadOut.model_validate(lead) for lead in page.items], next_cursor=page.next_cursor)


@router.get("/{lead_id}", response_model=LeadOut)
async def read_lead(lead_id: str, session: SessionDep, _key: LeadsReader) -> LeadOut:
    """The lead (a merged id answers with the survivor; an erased lead has erased_at and no data)."""
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    return LeadOut.model_validate(lead)


@router.patch("/{lead_id}", response_model=LeadOut)
async def patch_lead(
    lead_id: str, body: LeadPatch, session: SessionDep, settings: SettingsDep, request: Request, _key: LeadsWriter
) -> LeadOut:
    """Change some fields; emits lead.updated with the names of the fields that changed."""
    check_text(body.model_dump(mode="json"), "")
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    await update_lead(session, lead, body.changes(), body.region_hint or settings.default_region)
    for consent in body.consent or []:
        await record_consent(session, lead, consent, Channel.api, client_ip(request, settings))
    await session.commit()
    await session.refresh(lead)
    return LeadOut.model_validate(lead)


@router.delete("/{lead_id}", status_code=204)
async def erase(lead_id: str, session: SessionDep, settings: SettingsDep, _key: LeadsWriter) -> Response:
    """Erase the person (GDPR / 152-FZ): personal data goes, anonymous counts stay. Idempotent."""
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    await erase_lead(session, lead, settings)
    await session.commit()
    return Response(status_code=204)


@router.get("/{lead_id}/export")
async def export(lead_id: str, session: SessionDep, _key: LeadsReader) -> JSONResponse:
    """Everything held on the person, as a JSON download."""
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    data = await export_lead(session, lead)
    return JSONResponse(
        jsonable_encoder(data),
        headers={"content-disposition": f'attachment; filename="lead-{lead.id}.json"'},
    )


@router.post("/{lead_id}/merge", response_model=LeadOut)
async def merge(lead_id: str, body: MergeIn, session: SessionDep, _key: LeadsWriter) -> LeadOut:
    """Merge `other_id` into this lead (the survivor); the other's id then resolves here."""
    survivor = await merge_leads(session, parse_id(lead_id, "lead_id"), body.other_id)
    await session.commit()
    await session.refresh(survivor)
    return LeadOut.model_validate(survivor)


@router.get("/{lead_id}/activities", response_model=ActivityPage)
async def activities(
    lead_id: str, session: SessionDep, _key: LeadsReader, cursor: Cursor = None, limit: Limit = None
) -> ActivityPage:
    """The timeline, newest first."""
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    stmt = select(Activity).where(Activity.lead_id == lead.id)
    page = await keyset_page(
        session, stmt, Activity.occurred_at, Activity.id, cursor, parse_limit(limit), newest_first=True
    )
    return ActivityPage(items=[ActivityOut.model_validate(a) for a in page.items], next_cursor=page.next_cursor)


@router.post("/{lead_id}/notes", status_code=201, response_model=ActivityOut)
async def post_note(lead_id: str, body: NoteIn, session: SessionDep, key: LeadsWriter) -> ActivityOut:
    check_text(body.text, "text")
    if not body.text.strip():
        raise Invalid("must not be empty", field="text")
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    note = await add_note(session, lead, body.text.strip(), key.name)
    await session.commit()
    return ActivityOut.model_validate(note)


@router.get("/{lead_id}/touchpoints", response_model=TouchpointPage)
async def touchpoints(
    lead_id: str, session: SessionDep, _key: LeadsReader, cursor: Cursor = None, limit: Limit = None
) -> TouchpointPage:
    """Where the lead came from, each time, oldest first."""
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    stmt = select(Touchpoint).where(Touchpoint.lead_id == lead.id)
    page = await keyset_page(session, stmt, Touchpoint.occurred_at, Touchpoint.id, cursor, parse_limit(limit))
    return TouchpointPage(items=[TouchpointOut.model_validate(t) for t in page.items], next_cursor=page.next_cursor)


@router.get("/{lead_id}/consents", response_model=list[ConsentOut])
async def consents(lead_id: str, session: SessionDep, _key: LeadsReader) -> list[ConsentOut]:
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    rows = await session.scalars(select(Consent).where(Consent.lead_id == lead.id).order_by(Consent.occurred_at))
    return [ConsentOut.model_validate(c) for c in rows]


@router.post("/{lead_id}/consents", status_code=201, response_model=ConsentOut)
async def post_consent(
    lead_id: str, body: ConsentRecordIn, session: SessionDep, settings: SettingsDep, request: Request, _key: LeadsWriter
) -> ConsentOut:
    """Record a grant, or a withdrawal (granted=false, emits consent.withdrawn)."""
    check_text(body.model_dump(mode="json"), "")
    ip = body.ip or client_ip(request, settings)
    if body.ip is not None:
        try:
            ip = str(ipaddress.ip_address(body.ip.strip()))
        except ValueError:
            raise Invalid("must be an IPv4 or IPv6 address", field="ip") from None
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    row = await record_consent(session, lead, body, Channel.api, ip)
    await session.commit()
    return ConsentOut.model_validate(row)
