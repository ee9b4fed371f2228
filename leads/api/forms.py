"""/v1/forms: form definitions (API key, scope forms:write). What websites post to a form is
leads.public.forms."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from core.web import (
    Marketer,
    SessionDep,
)
from leads.intake.forms import (
    FormIn,
    FormOut,
    archive_form,
    create_form,
    form_out,
    get_form,
    list_forms,
    live_forms,
    update_form,
)

router = APIRouter(prefix="/v1/forms", tags=["forms"])



# --- definitions -----------------------------------------------------------------------------


@router.post("", status_code=201, response_model=FormOut)
async def create(body: FormIn, session: SessionDep, _key: Marketer) -> FormOut:
    form = await create_form(session, body)
    await session.commit()
    return form_out(form)


@router.get("", response_model=list[FormOut])
async def index(session: SessionDep, _key: Marketer, include_archived: bool = False) -> list[FormOut]:
    return [form_out(f) for f in await list_forms(session, include_archived)]


@router.get("/{form_key}", response_model=FormOut)
async def read(form_key: str, session: SessionDep, _key: Marketer) -> FormOut:
    return form_out(await get_form(session, form_key))


@router.patch("/{form_key}", response_model=FormOut)
async def update(
    form_key: str, request: Request, session: SessionDep, _key: Marketer,
    changes: Annotated[dict[str, Any], Body()],
) -> FormOut:
    form = await update_form(session, form_key, changes)
    await session.commit()
    live_forms(request.app.state).forget(form_key)
    return form_out(form)


@router.post("/{form_key}/archive", response_model=FormOut)
async def archive(form_key: str, request: Request, session: SessionDep, _key: Marketer) -> FormOut:
    form = await archive_form(session, form_key)
    await session.commit()
    live_forms(request.app.state).forget(form_key)
    return form_out(form)
