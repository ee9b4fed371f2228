"""Events only the tests emit: work for the worker tests' own handlers (see tests.worker_process).
The check after each test (conftest.empty_tables) knows them besides the domains' catalogue."""

from __future__ import annotations

import uuid

from core.events import EventPayload


class Work(EventPayload):
    """A test asked for work on a lead: the handler notes the event on the lead's timeline."""

    name = "test.work"

    lead_id: uuid.UUID
    work_seconds: float = 0  # how long the handler's work takes


class Poison(EventPayload):
    """A test's event whose handler fails until the test lets it succeed."""

    name = "test.poison"

    lead_id: uuid.UUID


TEST_EVENTS: tuple[type[EventPayload], ...] = (Work, Poison)
