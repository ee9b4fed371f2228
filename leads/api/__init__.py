"""HTTP routers of the leads domain (one module per noun; leads.domain declares them)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from leads.api import events, forms

# What websites and the tracker call, the bulk of the traffic: these routes become the app's own
# (app.routes), matched before any other. An included router's route is matched twice per
# request, through the router and then within it, which cost a form post about a tenth of its CPU.
public_routes: list[BaseRoute] = [*forms.public.routes, *events.public.routes]

