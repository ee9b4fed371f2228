"""Prometheus metrics shared by the API and workers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "nurture_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "nurture_http_request_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LEADS_CREATED = Counter("nurture_leads_created_total", "Leads created", ["channel"])
INTAKE_REJECTED = Counter("nurture_intake_rejected_total", "Intake posts refused", ["channel", "reason"])
INTAKE_BATCH = Histogram(
    "nurture_intake_batch_posts", "Posts written per intake transaction (group commit)", ["channel"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)
INTAKE_BATCH_SECONDS = Histogram(
    "nurture_intake_batch_seconds", "Time to write and commit one intake transaction", ["channel"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
EVENTS_HANDLED = Counter("nurture_events_handled_total", "Event handler runs that applied their effect", ["handler"])
EVENTS_FAILED = Counter("nurture_events_failed_total", "Event handler runs that raised", ["handler"])
EVENTS_DEAD = Counter("nurture_events_dead_lettered_total", "Handlers given up after their last try", ["handler"])
EVENTS_RELAYED = Counter("nurture_events_relayed_total", "Outbox events moved to the job queue")
EVENT_LAG = Histogram(
    "nurture_event_lag_seconds", "From an event's commit to its handler's start",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60),
)
PIPELINE = Gauge("nurture_pipeline", "Event pipeline state (see `nurture status`)", ["measure"])
