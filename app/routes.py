"""Every router of every domain, mounted from the domain registry (app.domains)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from core.domains import Domain


def include_routers(app: FastAPI, domains: Sequence[Domain]) -> None:
    lean = [route for domain in domains for route in domain.lean_routes]
    app.router.routes[:0] = lean  # form posts and page views: matched before all else (see leads.api)
    for domain in domains:
        for router in (*domain.public, *domain.api):
            app.include_router(router)
