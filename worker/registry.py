"""The registry: which handlers run for which event, and which sweeps run, collected from each
domain's jobs.py."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from core.events import Handler, Sweep

# Each domain's jobs module; a new domain adds its own here.
DOMAIN_JOBS = ("leads.jobs", "scoring.jobs", "channels.jobs")


class Registry:
    def __init__(self, declared: Iterable[Handler | Sweep]) -> None:
        self.by_name: dict[str, Handler] = {}
        self.by_event: dict[str, list[Handler]] = {}
        self.sweeps: list[Sweep] = []
        for item in declared:
            if item.name in self.by_name or item.name in {sweep.name for sweep in self.sweeps}:
                raise ValueError(f"two handlers or sweeps are named {item.name!r}")
            if isinstance(item, Sweep):
                self.sweeps.append(item)
                continue
            self.by_name[item.name] = item
            for event in item.events:
                self.by_event.setdefault(event, []).append(item)

    def for_event(self, name: str) -> list[Handler]:
        return self.by_event.get(name, [])


def domain_declarations() -> list[Handler | Sweep]:
    """What the domains declare: module-level `@handles(...)` and `@sweeps(...)` functions in jobs.py."""
    found: list[Handler | Sweep] = []
    for module_name in DOMAIN_JOBS:
        module = importlib.import_module(module_name)
        found.extend(v for v in vars(module).values() if isinstance(v, Handler | Sweep))
    return found


def load_registry(extra: Iterable[Handler | Sweep] = ()) -> Registry:
    return Registry([*domain_declarations(), *extra])
