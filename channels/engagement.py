"""Human or machine: was an email open or click a person's, or a privacy proxy's, a security
scanner's, a link previewer's? Machine engagement is recorded but scores nothing.

How tracking flags it: when it records an `email_opened` / `email_clicked` activity it calls
`machine_reason(...)` with what the tracking request showed and stores the answer as
`data["machine"]` (the reason, a short string) when it is not None. Scoring reads that field,
skips such activities and says why in the lead's score explanation."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from crawlerdetect import CrawlerDetect

# A click this soon after delivery is a scanner following every link before anyone read the mail.
TOO_FAST_SECONDS = 10.0
# Several different links of one message clicked within this many seconds: a scanner too.
ALL_AT_ONCE_SECONDS = 5.0
ALL_AT_ONCE_LINKS = 3
# Apple Mail Privacy Protection loads every image through Apple's network (17.0.0.0/8) with a
# bare "Mozilla/5.0" agent, whether or not the person ever opened the mail.
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
# Image proxies that fetch only when a person opens the mail (the open is real, only the place is
# hidden), and mail clients that crawler lists name: these are people.
PERSON_AGENTS = ("GoogleImageProxy", "YahooMailProxy", "Microsoft Outlook", "Thunderbird")

_detector = CrawlerDetect()


@lru_cache(maxsize=4096)
def _crawler(user_agent: str) -> str | None:
    if any(agent in user_agent for agent in PERSON_AGENTS):
        return None
    if _detector.isCrawler(user_agent):
        return _detector.getMatches() or "crawler"
    return None


def machine_reason(
    *,
    user_agent: str | None,
    method: str = "GET",
    ip: str | None = None,
    delivered_at: datetime | None = None,
    at: datetime | None = None,
    recent_clicks: Sequence[tuple[str, datetime]] = (),
    url: str | None = None,
) -> str | None:
    """Why this open or click is not a person's, or None when it looks like one.

    `recent_clicks`: (url, time) of the other clicks on the same message, for the every-link test."""
    if method.upper() == "HEAD":
        return "head_request"
    agent = (user_agent or "").strip()
    if not agent:
        return "no_user_agent"
    if ip and agent == "Mozilla/5.0":
        try:
            if ipaddress.ip_address(ip) in APPLE_NETWORK:
                return "apple_privacy_proxy"
        except ValueError:
            pass
    if (crawler := _crawler(agent)) is not None:
        return f"scanner: {crawler}"[:100]
    if delivered_at is not None and at is not None and (at - delivered_at).total_seconds() < TOO_FAST_SECONDS:
        return "clicked_within_seconds_of_delivery"
    if at is not None and recent_clicks:
        near = {u for u, t in recent_clicks if abs((at - t).total_seconds()) <= ALL_AT_ONCE_SECONDS}
        if url is not None:
            near.add(url)
        if len(near) >= ALL_AT_ONCE_LINKS:
            return "every_link_at_once"
    return None
