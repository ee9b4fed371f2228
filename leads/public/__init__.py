"""What websites, the tracker and phone systems call, with no API key (one module each): form
posts, behaviour events and the tracker, the call webhook. Inbound mail comes through
leads.api.inbound (a key) or `nurture smtpd`."""

from __future__ import annotations

from starlette.routing import BaseRoute

from leads.public import calls, forms, tracker

# The bulk of the traffic: these routes become the app's own (leads.domain's lean_routes), matched
# before any other. An included router's route is matched twice per request, through the router
# and then within it, which cost a form post about a tenth of its CPU.
lean_routes: list[BaseRoute] = [*forms.router.routes, *tracker.router.routes]
__all__ = ["calls", "forms", "lean_routes", "tracker"]
