"""The SMS provider NURTURE_SMS_PROVIDER describes: Twilio, or a generic HTTP gateway."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from channels.sms.generic import GenericSmsProvider
from channels.sms.provider import SmsProvider
from channels.sms.twilio import TWILIO_API, TwilioSms
from core.errors import Invalid

_TWILIO_KEYS = {"type", "account_sid", "auth_token", "sender", "messaging_service_sid", "status_callback",
                "api_base"}


def provider_from_config(config: Mapping[str, Any], *, client: httpx.AsyncClient | None = None,
                         transport: httpx.AsyncBaseTransport | None = None) -> SmsProvider:
    """The provider NURTURE_SMS_PROVIDER describes: {"type": "twilio", "account_sid", "auth_token",
    "sender" or "messaging_service_sid", "status_callback"?}, or a generic gateway ({"type": "http", …},
    the type optional; see GenericSmsConfig)."""
    if not isinstance(config, Mapping):
        raise Invalid("the SMS provider is configured with a JSON object", field="sms_provider")
    if config.get("type") != "twilio":
        return GenericSmsProvider.from_dict(config, client=client, transport=transport)
    if unknown := sorted(set(config) - _TWILIO_KEYS):
        raise Invalid(f"unknown Twilio settings {', '.join(unknown)}", field=unknown[0])
    for name in _TWILIO_KEYS:
        if name in config and not isinstance(config[name], str | None):
            raise Invalid("must be text", field=name)
    return TwilioSms(
        config.get("account_sid") or "", config.get("auth_token") or "", sender=config.get("sender"),
        messaging_service_sid=config.get("messaging_service_sid"), status_callback=config.get("status_callback"),
        api_base=config.get("api_base") or TWILIO_API, client=client, transport=transport,
    )
