"""Every router of every domain, assembled in one place."""

from __future__ import annotations

from fastapi import FastAPI


def include_routers(app: FastAPI) -> None:
    from app import api_keys, demo
    from channels import api as channel_api
    from channels import hooks as channel_hooks
    from channels import pages as channel_pages
    from leads.api import public_routes
    from leads.api import routers as lead_routers
    from scoring import api as scoring_api
    from worker import api as pipeline_api

    app.router.routes[:0] = public_routes  # form posts and page views: matched before all else (see leads.api)
    for router in lead_routers:
        app.include_router(router)
    app.include_router(scoring_api.router)
    app.include_router(channel_pages.router)
    app.include_router(channel_api.router)
    app.include_router(channel_hooks.router)
    app.include_router(channel_hooks.exports)
    app.include_router(api_keys.router)
    app.include_router(pipeline_api.router)
    app.include_router(demo.router)
