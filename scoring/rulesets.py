"""Rule set versions: the built-in default, the live one, the one being rolled out.

A posted rule set is stored as a new version in state `building`; the rescore (see
scoring.rescore) scores every lead under it from their history while the old version stays live,
then makes it live in one transaction. A version never changes once stored."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from scoring.models import RuleSetVersion
from scoring.rules import Ruleset, RuleSetIn

BUILDING, LIVE, RETIRED = "building", "live", "retired"

DEFAULT_RULES: dict[str, Any] = {
    "name": "Стандартные правила / Default rules",
    "half_life_days": 30,
    "rules": [
        {"key": "form", "label": "Заполнил форму / Submitted a form", "activity": "form_submitted", "points": 15},
        {"key": "pricing", "label": "Смотрел цены / Viewed pricing", "activity": "page_view", "path": "/pricing*",
         "points": 10, "cap": {"points": 30, "per": "day"}},
        {"key": "page", "label": "Просмотр страницы / Page view", "activity": "page_view", "points": 1,
         "cap": {"points": 20, "per": "day"}},
        {"key": "careers", "label": "Ищет работу / Careers page", "activity": "page_view", "path": "/careers*",
         "points": -10, "cap": {"points": 10, "per": "ever"}},
        {"key": "download", "label": "Скачал материал / Downloaded", "activity": "download", "points": 8,
         "cap": {"points": 24, "per": "week"}},
        {"key": "call", "label": "Разговор дольше минуты / Call over a minute", "activity": "call_answered",
         "min_duration": 60, "points": 20},
        {"key": "email-in", "label": "Написал письмо / Wrote an email", "activity": "email_received", "points": 10},
        {"key": "open", "label": "Открыл письмо / Opened an email", "activity": "email_opened", "points": 1,
         "cap": {"points": 5, "per": "week"}},
        {"key": "click", "label": "Перешёл по ссылке / Clicked a link", "activity": "email_clicked", "points": 5,
         "cap": {"points": 25, "per": "week"}},
        {"key": "unsubscribed", "label": "Отписался / Unsubscribed", "activity": "unsubscribed", "points": -25},
        {"key": "bounced", "label": "Адрес не существует / Hard bounce", "activity": "email_bounced", "points": -50,
         "cap": {"points": 50, "per": "ever"}},
    ],
    "fit": {
        "rules": [
            {"key": "corporate-mail", "attribute": "email_domain", "free_mail": False, "points": 20},
            {"key": "decision-maker", "attribute": "job_title", "points": 25,
             "contains": ["director", "head", "chief", "ceo", "cto", "owner", "founder",
                          "директор", "руководитель", "начальник", "владелец", "основатель"]},
            {"key": "company-size", "attribute": "company_size", "points": 20,
             "in": ["51-200", "201-500", "501-1000", "1001-5000", "5000+"]},
        ],
        "grades": {"A": 60, "B": 30, "C": 10},
    },
    "stages": {"lead_score": 5, "mql_score": 50, "mql_grade": "B", "hysteresis": 10},
}

_compiled: dict[uuid.UUID | None, Ruleset] = {}


def compile_ruleset(row_id: uuid.UUID | None, version: int, spec: dict[str, Any]) -> Ruleset:
    """Compiled once per stored version and process (a stored version never changes)."""
    if (ruleset := _compiled.get(row_id)) is None:
        ruleset = _compiled[row_id] = Ruleset(version, RuleSetIn.model_validate(spec))
    return ruleset


async def live_ruleset(session: AsyncSession) -> Ruleset:
    """The live rule set; version 0 (the built-in default) until a marketer's first one is live."""
    return (await active_rulesets(session))[0]


def default_ruleset() -> Ruleset:
    return compile_ruleset(None, 0, DEFAULT_RULES)


async def active_rulesets(session: AsyncSession) -> tuple[Ruleset, Ruleset | None]:
    """The live rule set, and the one being rolled out (every lead rescored under it before it
    goes live) if any: both are kept current as activities come in."""
    rows = (await session.execute(
        select(RuleSetVersion.id, RuleSetVersion.version, RuleSetVersion.spec, RuleSetVersion.state)
        .where(RuleSetVersion.state.in_([LIVE, BUILDING])).order_by(RuleSetVersion.version.desc())
    )).all()
    live = next((compile_ruleset(r.id, r.version, r.spec) for r in rows if r.state == LIVE), None)
    building = next((compile_ruleset(r.id, r.version, r.spec) for r in rows if r.state == BUILDING), None)
    return live or default_ruleset(), building
