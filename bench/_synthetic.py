"""A seeded synthetic world for comparing the scoring rules with the predictive model: profiles,
a hidden propensity to buy per lead (from fit and intent), activity drawn from that intent over
90 days, and outcomes drawn from the propensity (deal won / lost) for a share of the leads."""

from __future__ import annotations

import json
import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

TITLES = ["Director", "Head of Sales", "Manager", "Engineer", "Директор", "Специалист", "CEO", "Analyst"]
SIZES = ["1-10", "11-50", "51-200", "201-500", "1001-5000"]


def world(leads: int, seed: int = 42, known_share: float = 0.6) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(lead rows, activity rows) ready for COPY into `leads` and `activities`."""
    from core.ids import new_id

    rnd = random.Random(seed)
    now = datetime.now(UTC)
    lead_rows, activity_rows = [], []
    for i in range(leads):
        lead_id: uuid.UUID = new_id()
        corporate = rnd.random() < 0.55
        title = rnd.choice(TITLES)
        size = rnd.choice(SIZES)
        fit = 0.9 * corporate + 0.8 * (title in ("Director", "Head of Sales", "Директор", "CEO")) + 0.6 * (
            size in ("51-200", "201-500", "1001-5000"))
        intent = rnd.gammavariate(1.2, 1.0)  # hidden: how much this lead wants to buy now
        propensity = 1 / (1 + math.exp(-(1.3 * fit + 1.1 * intent - 3.2)))
        email = f"lead{i}@{'corp' + str(i % 300) + '.ru' if corporate else rnd.choice(['gmail.com', 'mail.ru'])}"
        lead_rows.append((lead_id, email, title, size, "import", "new", "{}", now, now))
        for _ in range(int(rnd.expovariate(1 / (2 + 6 * intent)))):
            at = now - timedelta(days=rnd.uniform(2, 90))
            roll = rnd.random()
            if roll < 0.55:
                pricing = rnd.random() < 0.15 + 0.25 * min(intent, 2) / 2
                path = "/pricing" if pricing else rnd.choice(["/", "/blog/x", "/cases"])
                url = json.dumps({"url": f"https://shop.ru{path}"})
                activity_rows.append((new_id(), lead_id, "page_view", url, at))
            elif roll < 0.7:
                activity_rows.append((new_id(), lead_id, "email_opened", "{}", at))
            elif roll < 0.8:
                activity_rows.append((new_id(), lead_id, "email_clicked", json.dumps({"link_tag": "offer"}), at))
            elif roll < 0.9:
                activity_rows.append((new_id(), lead_id, "download", json.dumps({"url": "https://shop.ru/a.pdf"}), at))
            else:
                activity_rows.append((new_id(), lead_id, "form_submitted", json.dumps({"form": "demo"}), at))
        if rnd.random() < known_share:
            outcome = "deal_won" if rnd.random() < propensity else "deal_lost"
            activity_rows.append((new_id(), lead_id, outcome, "{}", now - timedelta(days=1)))
    return lead_rows, activity_rows
