"""/v1/leads: create, read (more verbs join here)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from core.auth import ApiKey, Scope
from core.ids import parse_id
from core.web import SessionDep, SettingsDep, client_ip, require_scope
from leads.models import Channel
from leads.schemas import LeadIn, LeadOut, clean_profile
from leads.service import Origin, get_lead, record_intake

router = APIRouter(prefix="/v1/leads", tags=["leads"])

Writer = Annotated[ApiKey, Depends(require_scope(Scope.leads_write))]
Reader = Annotated[ApiKey, Depends(require_scope(Scope.leads_read))]


@router.post("", status_code=201, response_model=LeadOut)
async def create_lead(
    body: LeadIn, session: SessionDep, settings: SettingsDep, request: Request, response: Response, _key: Writer
) -> LeadOut:
    """Create a lead, or update the one with the same email/phone (then 200)."""
    profile = clean_profile(body.profile(), body.region_hint or settings.default_region)
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


@router.get("/{lead_id}", response_model=LeadOut)
async def read_lead(lead_id: str, session: SessionDep, _key: Reader) -> LeadOut:
    lead = await get_lead(session, parse_id(lead_id, "lead_id"))
    return LeadOut.model_validate(lead)
