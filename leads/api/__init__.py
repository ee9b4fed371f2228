"""HTTP routers of the leads domain (one module per noun)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import BaseRoute

from leads.api import calls, events, fields, forms, imports, inbound, leads, segments

# What websites and the tracker call, the bulk of the traffic: these routes become the app's own
# (app.routes), matched before any other. An included router's route is matched twice per
# request, through the router and then within it, which cost a form post about a tenth of its CPU.
public_routes: list[BaseRoute] = [*forms.public.routes, *events.public.routes]

# The other public intake (calls, inbound email) first: routes are matched in order on every request.
routers: list[APIRouter] = [
    forms.router, events.router, calls.router, inbound.router, leads.router, calls.numbers_router,
    segments.router, fields.router, imports.router,
]
