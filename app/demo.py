"""The demo: seed data for an empty install, and a bilingual landing page whose form posts
to /v1/forms/demo-contact/submit (works without JavaScript; t.js tracks the visit).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Template
from channels.starters import starter
from leads.intake.forms import FormIn, create_form
from leads.intake.interaction import Origin
from leads.models import Channel, Form, Lead, TrackingNumber
from leads.schemas import ConsentIn, clean_profile
from leads.service import record_intake

DEMO_FORM = "demo-contact"
CONSENT_WORDING = (
    "Я согласен(на) на обработку персональных данных и получение информационных писем. "
    "/ I agree to the processing of my personal data and to receiving newsletters."
)

router = APIRouter(include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)

DEMO_LEADS = [
    ({"first_name": "Иван", "last_name": "Петров", "email": "ivan.petrov@example.ru",
      "phone": "+7 912 345-67-89", "company": "ООО «Ромашка»", "city": "Москва"},
     {"utm_source": "yandex", "utm_medium": "cpc", "utm_campaign": "spring-sale"}),
    ({"first_name": "Анна", "last_name": "Смирнова", "email": "anna.smirnova@example.ru",
      "company": "АО «Север»", "city": "Санкт-Петербург"},
     {"utm_source": "vk", "utm_medium": "social", "utm_campaign": "brand"}),
    ({"first_name": "Сергей", "last_name": "Кузнецов", "phone": "8 (903) 111-22-33", "city": "Казань"},
     {"utm_source": "google", "utm_medium": "organic"}),
    ({"first_name": "Ольга", "last_name": "Васильева", "email": "olga@example.com", "company": "ИП Васильева"},
     {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "march-digest"}),
]


async def seed_demo(session: AsyncSession) -> bool:
    """Create the demo form, tracking number, a few leads and the ready email templates (ru and en),
    only in an empty database.

    Returns False (and touches nothing) when there are already leads or forms. Never commits.
    """
    has_leads = await session.scalar(select(func.count()).select_from(Lead))
    has_forms = await session.scalar(select(func.count()).select_from(Form))
    if has_leads or has_forms:
        return False
    await create_form(
        session,
        FormIn.model_validate({
            "key": DEMO_FORM,
            "name": "Демо: заявка с лендинга / Demo: landing page request",
            "fields": [
                {"name": "name", "label": "Имя / Name", "type": "text", "required": True,
                 "lead_field": "first_name", "max_length": 200},
                {"name": "email", "label": "Эл. почта / Email", "type": "email", "required": True},
                {"name": "phone", "label": "Телефон / Phone", "type": "phone"},
                {"name": "company", "label": "Компания / Company", "type": "text"},
            ],
            "consent": {"purpose": "marketing_email", "wording": CONSENT_WORDING, "required": True},
            "success_url": "/demo/thanks",
            "default_campaign": "demo-landing",
            "default_region": "RU",
            "tags": ["demo"],
        }),
    )
    session.add(TrackingNumber(
        number="+74950000001", campaign="demo-radio", source="radio", medium="offline",
        label="Демо: радио / Demo: radio ad",
    ))
    for profile, utm in DEMO_LEADS:
        origin = Origin.from_params(
            Channel.form, utm, landing_page="/demo/landing?" + "&".join(f"{k}={v}" for k, v in utm.items())
        )
        consents = [ConsentIn(purpose="marketing_email", wording=CONSENT_WORDING)] if "email" in profile else None
        await record_intake(
            session, clean_profile(profile, "RU"), origin, "form_submitted",
            activity_data={"form": DEMO_FORM, "values": {}}, tags=["demo"], consents=consents,
        )
    for name, topic in (("welcome", "news"), ("webinar", "webinars")):
        for locale in ("ru", "en"):
            ready = starter(name, locale)
            session.add(Template(
                key=f"{name}-{locale}", name=f"{name.capitalize()} ({locale})", channel="email", kind=ready.kind,
                topic=topic, locale=locale, subject=ready.subject, preheader=ready.preheader, body=ready.body,
            ))
    await session.flush()
    return True


@router.get("/demo/landing", response_class=HTMLResponse)
async def landing() -> HTMLResponse:
    return HTMLResponse(templates.get_template("demo_landing.html").render(
        form_key=DEMO_FORM, consent_wording=CONSENT_WORDING,
    ))


@router.get("/demo/thanks", response_class=HTMLResponse)
async def thanks() -> HTMLResponse:
    return HTMLResponse(templates.get_template("demo_thanks.html").render())
