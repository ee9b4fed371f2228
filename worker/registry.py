"""Which handlers run for which event, and which sweeps run: what the domains of the registry
(app.domains) declare in their jobs modules."""

from __future__ import annotations

from collections.abc import Iterable

from core.events import Handler, Sweep


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


def load_registry(extra: Iterable[Handler | Sweep] = ()) -> Registry:
    """The registry's domains' handlers and sweeps, and `extra` (tests add their own)."""
    from app.domains import install  # the composition root; it mounts worker.api, hence not at import

    return Registry([*(item for domain in install() for item in domain.declared()), *extra])
