"""HTTP routers of the leads domain (one module per noun)."""

from __future__ import annotations

from fastapi import APIRouter

from leads.api import calls, events, fields, forms, imports, inbound, leads, segments

routers: list[APIRouter] = [
    leads.router, forms.router, events.router, calls.router, calls.numbers_router, inbound.router,
    segments.router, fields.router, imports.router,
]
