"""The domain registry: every table has a home, every table that holds something on a person is in
their export and answers for their erasure, and the app and the worker run what the domains declare."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import Table

from app.domains import DOMAINS
from core.db import Base
from core.domains import Domain, PersonalData, install
from worker.registry import load_registry

# Columns that hold a person's address or identifiers, whatever table they are in.
PERSONAL_COLUMNS = {"email", "phone", "address", "recipient", "mail_from", "rcpt_to", "ip", "visitor_id", "value"}


def _about_a_person(table: Table) -> bool:
    if table.name == "leads":
        return True
    for column in table.columns:
        if column.name in PERSONAL_COLUMNS or "email" in column.name or "phone" in column.name:
            return True
        if column.name == "lead_id" or any(fk.column.table.name == "leads" for fk in column.foreign_keys):
            return True
    return False


def _parts() -> list[PersonalData]:
    return [part for domain in DOMAINS for part in domain.personal_data]


def _exempt() -> dict[str, str]:
    return {table: reason for domain in DOMAINS for table, reason in domain.exempt.items()}


def test_every_table_belongs_to_exactly_one_domain() -> None:
    owners: dict[str, list[str]] = {}
    for domain in DOMAINS:
        for table in domain.tables():
            owners.setdefault(table.name, []).append(domain.name)
    assert sorted(owners) == sorted(t.name for t in Base.metadata.sorted_tables)
    assert {name: found for name, found in owners.items() if len(found) > 1} == {}


def test_every_table_about_a_person_is_exported_or_exempt_with_a_reason() -> None:
    suspects = {t.name for t in Base.metadata.sorted_tables if _about_a_person(t)}
    # the check sees what it must: the person's own rows in every domain, and staff accounts
    assert {"leads", "activities", "lead_scores", "messages", "captured_mail", "suppressions", "users"} <= suspects
    exported = {table for part in _parts() for table in part.tables}
    exempt = _exempt()
    assert all(reason.strip() for reason in exempt.values())
    assert sorted(suspects - exported - set(exempt)) == []


def test_every_table_about_a_person_is_erased_or_kept_with_a_reason() -> None:
    suspects = {t.name for t in Base.metadata.sorted_tables if _about_a_person(t)}
    erased = {table for part in _parts() if part.erase is not None for table in part.tables}
    kept = {table for part in _parts() if part.erase is None and part.kept.strip() for table in part.tables}
    assert sorted(suspects - erased - kept - set(_exempt())) == []


def test_a_part_that_erases_nothing_must_say_why() -> None:
    async def export(*_: object) -> list[object]:
        return []

    with pytest.raises(ValueError, match="say why"):
        PersonalData("notes", ("notes",), export)


def test_two_domains_of_one_name_or_two_export_parts_of_one_key_are_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        install([*DOMAINS, Domain(name="leads")])
    clash = Domain(name="clash", personal_data=(_parts()[0],))
    with pytest.raises(ValueError, match="share a key"):
        install([*DOMAINS, clash])
    install(DOMAINS)


def test_the_app_mounts_every_router_the_domains_declare(app: FastAPI) -> None:
    mounted = [route.original_router for route in app.routes if hasattr(route, "original_router")]
    declared = [router for domain in DOMAINS for router in (*domain.public, *domain.api)]
    assert [id(r) for r in mounted] == [id(r) for r in declared]
    lean = [route for domain in DOMAINS for route in domain.lean_routes]
    assert app.router.routes[: len(lean)] == lean  # matched before all else
    paths = app.openapi()["paths"]
    assert {"/v1/calls", "/v1/leads/{lead_id}/export", "/v1/scoring/rulesets", "/v1/templates", "/v1/sms/receipts",
            "/v1/api-keys", "/v1/events/status"} <= set(paths)


def test_the_worker_runs_every_handler_and_sweep_the_domains_declare() -> None:
    registry = load_registry()
    declared = [item.name for domain in DOMAINS for item in domain.declared()]
    assert sorted(declared) == sorted([*registry.by_name, *(sweep.name for sweep in registry.sweeps)])
    assert {"leads.place_in_segments", "scoring.apply", "channels.returned", "channels.stale_sends"} <= set(declared)
