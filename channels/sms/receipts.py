"""What a delivery receipt says about a message we sent: its state (on its way, delivered, or never
will be), whichever provider wrote it."""

from __future__ import annotations

from dataclasses import dataclass

PENDING, DELIVERED, UNDELIVERED = "pending", "delivered", "undelivered"
RECEIPT_STATES = (PENDING, DELIVERED, UNDELIVERED)


@dataclass(frozen=True)
class Receipt:
    """What a delivery receipt says about a message we sent, found by the provider's id."""

    provider_id: str
    state: str  # PENDING (on its way), DELIVERED or UNDELIVERED (final)
    error: str | None = None  # the provider's error code and what it means, when it gave one
