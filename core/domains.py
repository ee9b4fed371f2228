"""The domain registry's vocabulary: what a domain declares once (its tables, routers, handlers and
sweeps, events, its part of a person's export and erasure, what it adds to a message's template
context), and the installed list the processes read. The list itself is `app.domains.DOMAINS`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Base
from core.events import EventPayload, Handler, Sweep

if TYPE_CHECKING:
    from fastapi import APIRouter
    from starlette.routing import BaseRoute

    from core.settings import Settings

LeadIds = Sequence[uuid.UUID]
ExportFunction = Callable[[AsyncSession, LeadIds], Awaitable[Any]]
EraseFunction = Callable[[AsyncSession, LeadIds, "Settings"], Awaitable[None]]
ContextFunction = Callable[[AsyncSession, LeadIds], Awaitable[dict[uuid.UUID, dict[str, Any]]]]


@dataclass(frozen=True)
class PersonalData:
    """One part of what a domain holds on a person: shown under `key` in their export, and erased by
    `erase` (in the erasing transaction, given the person's lead ids: theirs and those merged into
    it). Rows kept as they are on erasure (anonymous facts for the reports) say why in `kept`."""

    key: str
    tables: tuple[str, ...]
    export: ExportFunction
    erase: EraseFunction | None = None
    kept: str = ""

    def __post_init__(self) -> None:
        if self.erase is None and not self.kept:
            raise ValueError(f"personal data {self.key!r}: erase it, or say why it is kept (kept=…)")


@dataclass(frozen=True)
class TemplateContext:
    """What a domain adds to a message's template context: `defaults` when the message has no lead
    or the domain knows nothing of it, `load` for a batch of leads (a few statements per batch)."""

    defaults: Mapping[str, Any]
    load: ContextFunction


@dataclass(frozen=True)
class Domain:
    """Everything a domain contributes, declared once in its `domain.py`.

    `public` routes are what websites, mail and providers call (form posts, tracking links,
    provider webhooks); `api` routers are what marketers' and integrators' keys call. `lean_routes`
    are public routes matched before all others, for the traffic where a route match shows.
    `exempt` names tables of the domain that hold no personal data although the registry's check
    would suspect it (say why)."""

    name: str
    models: tuple[ModuleType, ...] = ()
    api: tuple[APIRouter, ...] = ()
    public: tuple[APIRouter, ...] = ()
    lean_routes: tuple[BaseRoute, ...] = ()
    jobs: tuple[ModuleType, ...] = ()
    events: tuple[type[EventPayload], ...] = ()
    personal_data: tuple[PersonalData, ...] = ()
    exempt: Mapping[str, str] = field(default_factory=dict)
    template_context: TemplateContext | None = None

    def tables(self) -> list[Table]:
        """The tables the domain's models define, in dependency order."""
        modules = {m.__name__ for m in self.models}
        own = {
            cast(Table, mapper.local_table).name for mapper in Base.registry.mappers
            if mapper.class_.__module__ in modules
        }
        return [t for t in Base.metadata.sorted_tables if t.name in own]

    def declared(self) -> list[Handler | Sweep]:
        """The `@handles`/`@sweeps` functions of the domain's jobs modules."""
        return [v for module in self.jobs for v in vars(module).values() if isinstance(v, Handler | Sweep)]


def row_values(row: Any) -> dict[str, Any]:
    """A row's values for an export; a stored raw message (bytes, loaded only on demand) is left out."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key != "raw"}


_installed: tuple[Domain, ...] = ()


def install(domains: Sequence[Domain]) -> None:
    """Make `domains` the ones this process runs (the app, a worker, the tests install
    `app.domains.DOMAINS`); the parts that need every domain (export, erasure, template context,
    the event catalogue) read them from here."""
    global _installed
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        raise ValueError(f"a domain is declared twice: {names}")
    keys = [p.key for d in domains for p in d.personal_data]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two parts of a person's export share a key: {sorted(keys)}")
    _installed = tuple(domains)


def installed() -> tuple[Domain, ...]:
    if not _installed:
        raise RuntimeError("no domains installed: call app.domains.install() at start-up")
    return _installed


def personal_data() -> list[PersonalData]:
    return [part for domain in installed() for part in domain.personal_data]


def template_contexts() -> list[TemplateContext]:
    return [d.template_context for d in installed() if d.template_context is not None]


def event_types() -> dict[str, type[EventPayload]]:
    """The event catalogue: every declared event by name."""
    found: dict[str, type[EventPayload]] = {}
    for domain in installed():
        for event in domain.events:
            if event.name in found:
                raise ValueError(f"the event {event.name!r} is declared twice")
            found[event.name] = event
    return found
