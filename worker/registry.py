"""The handler registry: which handlers run for which event, collected from each domain's jobs.py."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from core.events import Handler

# Each domain's jobs module; a new domain adds its own here.
DOMAIN_JOBS = ("leads.jobs",)


class Registry:
    def __init__(self, handlers: Iterable[Handler]) -> None:
        self.by_name: dict[str, Handler] = {}
        self.by_event: dict[str, list[Handler]] = {}
        for handler in handlers:
            if handler.name in self.by_name:
                raise ValueError(f"two handlers are named {handler.name!r}")
            self.by_name[handler.name] = handler
            for event in handler.events:
                self.by_event.setdefault(event, []).append(handler)

    def for_event(self, name: str) -> list[Handler]:
        return self.by_event.get(name, [])


def domain_handlers() -> list[Handler]:
    """The handlers the domains declare (module-level `@handles(...)` functions in jobs.py)."""
    found: list[Handler] = []
    for module_name in DOMAIN_JOBS:
        module = importlib.import_module(module_name)
        found.extend(v for v in vars(module).values() if isinstance(v, Handler))
    return found


def load_registry(extra: Iterable[Handler] = ()) -> Registry:
    return Registry([*domain_handlers(), *extra])
