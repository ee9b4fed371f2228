"""/v1/scoring/rulesets (versioned rule sets; posting one rolls it out), /v1/leads/{id}/score (the
explanation) and /v1/leads/{id}/stage (a stage set by hand or by sales).

Reading needs leads:read; writing rules needs forms:write (the marketer's set-up scope); setting a
stage needs leads:write."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from sqlalchemy import select

from core.errors import NotFound
from core.ids import parse_id
from core.text import check_text
from core.web import LeadsReader, LeadsWriter, Marketer, SessionDep
from scoring.models import RuleSetVersion
from scoring.rules import RuleSetIn
from scoring.rulesets import DEFAULT_RULES, LIVE
from scoring.schemas import RuleSetOut, StageIn, StageOut
from scoring.service import explain, post_ruleset, set_stage

router = APIRouter(tags=["scoring"])



def _out(row: RuleSetVersion) -> RuleSetOut:
    return RuleSetOut(version=row.version, name=row.name, state=row.state, created_at=row.created_at,
                      live_at=row.live_at, leads_total=row.leads_total, leads_done=row.leads_done, spec=row.spec)


@router.get("/v1/scoring/rulesets", response_model=list[RuleSetOut])
async def list_rulesets(session: SessionDep, _key: LeadsReader) -> list[RuleSetOut]:
    rows = await session.scalars(select(RuleSetVersion).order_by(RuleSetVersion.version.desc()))
    return [_out(row) for row in rows]


@router.get("/v1/scoring/rulesets/live", response_model=RuleSetOut)
async def live(session: SessionDep, _key: LeadsReader) -> RuleSetOut:
    row = await session.scalar(select(RuleSetVersion).where(RuleSetVersion.state == LIVE))
    if row is None:  # the built-in default until a marketer's first rule set is live
        return RuleSetOut(version=0, name=str(DEFAULT_RULES["name"]), state=LIVE, created_at=None, live_at=None,
                          leads_total=0, leads_done=0,
                          spec=RuleSetIn.model_validate(DEFAULT_RULES).model_dump(mode="json", by_alias=True))
    return _out(row)


@router.get("/v1/scoring/rulesets/{version}", response_model=RuleSetOut)
async def read_ruleset(
    version: Annotated[int, Path(ge=0, le=2**31 - 1)], session: SessionDep, _key: LeadsReader
) -> RuleSetOut:
    row = await session.scalar(select(RuleSetVersion).where(RuleSetVersion.version == version))
    if row is None:
        raise NotFound(f"no rule set version {version}", field="version")
    return _out(row)


@router.post("/v1/scoring/rulesets", status_code=202, response_model=RuleSetOut)
async def post(body: RuleSetIn, session: SessionDep, _key: Marketer) -> RuleSetOut:
    """A new version: every lead is rescored under it in the background while the current version
    stays live; it goes live when all are done (watch leads_done / state)."""
    check_text(body.model_dump(mode="json", by_alias=True))
    row = await post_ruleset(session, body)
    await session.commit()
    return _out(row)


@router.get("/v1/leads/{lead_id}/score")
async def score(lead_id: str, session: SessionDep, _key: LeadsReader) -> dict[str, Any]:
    """Score now (decayed), grade, stage, each contribution with its points then and now, history."""
    explanation = await explain(session, parse_id(lead_id, "lead_id"))
    await session.commit()
    return explanation


@router.post("/v1/leads/{lead_id}/stage", response_model=StageOut)
async def post_stage(lead_id: str, body: StageIn, session: SessionDep, _key: LeadsWriter) -> StageOut:
    check_text(body.reason, "reason")
    result = await set_stage(session, parse_id(lead_id, "lead_id"), body.stage, body.reason)
    await session.commit()
    return StageOut(lead_id=result.lead_id, stage=result.stage, grade=result.grade)
