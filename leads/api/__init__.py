"""HTTP routers of the leads domain (one module per noun)."""

from __future__ import annotations

from fastapi import APIRouter

from leads.api import calls, events, fields, forms, imports, inbound, leads, segments

# The public intake first: routes are matched in order on every request, and these take the traffic.
routers: list[APIRouter] = [
    forms.router, events.router, calls.router, inbound.router, leads.router, calls.numbers_router,
    segments.router, fields.router, imports.router,
]
