"""Prometheus metrics shared by the API and workers."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "nurture_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "nurture_http_request_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LEADS_CREATED = Counter("nurture_leads_created_total", "Leads created", ["channel"])
INTAKE_REJECTED = Counter("nurture_intake_rejected_total", "Intake posts refused", ["channel", "reason"])
