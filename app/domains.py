"""The one list of domains: the app mounts their routers, the worker runs their handlers and
sweeps, the migrations and the tests know their tables from it. A new domain declares itself in
its own `domain.py` and is added here, once."""

from __future__ import annotations

import core.auth
import core.outbox
from app import api_keys, demo
from channels.domain import DOMAIN as CHANNELS
from core import domains
from core.domains import Domain
from leads.domain import DOMAIN as LEADS
from scoring.domain import DOMAIN as SCORING
from worker import api as pipeline_api

ACCESS = Domain(
    name="access",
    models=(core.auth,),
    api=(api_keys.router,),
    exempt={"users": "nurture's own staff (marketers, reps, admins), not leads; kept and removed by admins"},
)
PIPELINE = Domain(name="pipeline", models=(core.outbox,), api=(pipeline_api.router,))
DEMO = Domain(name="demo", public=(demo.router,))

# In the order routes are matched (and export parts listed): leads first, the bulk of the traffic.
DOMAINS: tuple[Domain, ...] = (LEADS, SCORING, CHANNELS, ACCESS, PIPELINE, DEMO)


def install() -> tuple[Domain, ...]:
    """Make DOMAINS the ones this process runs (see core.domains.install)."""
    domains.install(DOMAINS)
    return DOMAINS
