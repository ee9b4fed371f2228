"""The baseline for bench/intake.py: a FastAPI endpoint that reads and validates the same form
post as nurture's intake, then answers without touching a database."""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from leads.schemas import normalize_email, normalize_phone


def create_bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/forms/{form_key}/submit")
    async def submit(form_key: str, request: Request) -> JSONResponse:
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        email = normalize_email(values.get("email", ""))
        phone = normalize_phone(values["phone"], "RU") if values.get("phone") else None
        return JSONResponse({"lead_id": str(uuid.uuid4()), "email": email, "phone": phone}, status_code=201)

    return app
