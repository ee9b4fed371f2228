"""The baseline for bench/intake.py: the same form post read and validated by nurture's own
parsing code (content type, body limit, field rules, phone/email normalisation, utm capture),
then answered without touching a database."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.main import NO_TELEMETRY, settle_gc
from core.ids import new_id
from core.web import read_body
from leads.api.forms import parse_form_body
from leads.intake.forms import FormIn, apply_definition
from leads.intake.submissions import clean_values, visit_from
from leads.models import Form


def create_bare_app() -> FastAPI:
    from intake import BENCH_FORM

    form = Form()
    apply_definition(form, FormIn.model_validate(BENCH_FORM))
    app = FastAPI(telemetry=NO_TELEMETRY)  # as nurture's app, so only the work differs

    @app.post("/v1/forms/{form_key}/submit")
    async def submit(form_key: str, request: Request) -> JSONResponse:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await read_body(request, 1024 * 1024)
        values = await parse_form_body(media, request, body)
        visit_from(values, request.headers.get("referer"), request.cookies.get("nurture_vid"), "127.0.0.1")
        clean_values(form, values, {}, "RU")
        return JSONResponse({"lead_id": str(new_id())}, status_code=201)

    settle_gc()  # the same process settings as nurture's app, so only the work differs
    return app
