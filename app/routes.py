"""Every router of every domain, assembled in one place."""

from __future__ import annotations

from fastapi import FastAPI


def include_routers(app: FastAPI) -> None:
    from leads.api import routers as lead_routers

    for router in lead_routers:
        app.include_router(router)
