"""HTTP routers of the leads domain (one module per noun)."""

from __future__ import annotations

from fastapi import APIRouter

from leads.api import leads

routers: list[APIRouter] = [leads.router]
