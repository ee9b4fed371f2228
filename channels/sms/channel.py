"""The `sms` channel: checks the number and the text, then hands the text to the provider."""

from __future__ import annotations

import re

import phonenumbers

from channels.base import Delivery
from channels.ledger import FAILED, Outcome
from channels.sms.provider import SmsProvider

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def number_problem(recipient: str) -> str | None:
    """Why `recipient` is not a number we text (None when it is): E.164 as stored, and a valid number."""
    if not _E164.fullmatch(recipient):
        return "not an E.164 phone number (+, country code and number, digits only)"
    try:
        number = phonenumbers.parse(recipient, None)
    except phonenumbers.NumberParseException:
        return "not a phone number"
    if not phonenumbers.is_valid_number(number):
        return "not a valid phone number for its country"
    return None


class SmsChannel:
    """The `sms` channel: a text to an E.164 number through one provider."""

    name = "sms"

    def __init__(self, provider: SmsProvider) -> None:
        self.provider = provider

    async def deliver(self, delivery: Delivery) -> Outcome:
        if problem := number_problem(delivery.recipient):
            return Outcome(FAILED, reason=problem)
        if not delivery.text.strip():
            return Outcome(FAILED, reason="nothing to send: the text is empty")
        return await self.provider.send(delivery.recipient, delivery.text, delivery.message_id)

    async def close(self) -> None:
        await self.provider.close()
