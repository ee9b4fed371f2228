"""The sender as the settings describe it: the email transport (capture:// or an SMTP relay), the
other channels that are configured, the DKIM keys, the pacing rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from channels.base import Channel
from channels.email.capture import CaptureChannel
from channels.email.dkim import Signer
from channels.email.prepare import Mailer
from channels.gate import Pacing
from channels.messenger import TelegramChannel
from channels.postal import PostalChannel
from channels.sender import Sender
from channels.sms.channel import SmsChannel
from channels.sms.setup import provider_from_config
from channels.tokens import MessageTokens
from channels.webhook import WebhookChannel
from core.db import Database
from core.errors import Invalid
from core.settings import Settings

CAPTURE = "capture://"


def mailer(settings: Settings) -> Mailer:
    domain = settings.mail_from.rpartition("@")[2]
    return Mailer(
        from_address=settings.mail_from, from_name=settings.mail_from_name,
        bounce_domain=settings.bounce_domain or domain, base_url=settings.base_url.rstrip("/"),
        tokens=MessageTokens(settings.signing_keys()), signers=signers(settings.dkim_keys),
    )


def signers(spec: str) -> list[Signer]:
    """NURTURE_DKIM_KEYS: comma-separated selector:domain:path-to-PEM."""
    found = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        selector, _, rest = item.partition(":")
        domain, _, path = rest.partition(":")
        if not selector or not domain or not path:
            raise Invalid(f"a DKIM key is selector:domain:path, not {item!r}", field="dkim_keys")
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise Invalid(f"cannot read the DKIM key {path}: {exc.strerror}", field="dkim_keys") from None
        found.append(Signer(selector, domain, pem))
    return found


def adapters(db: Database, settings: Settings) -> dict[str, Channel]:
    found: dict[str, Channel] = {}
    if settings.smtp_url.strip() == CAPTURE:
        found["email"] = CaptureChannel(db)
    else:
        from channels.email.smtp import SmtpPool

        found["email"] = SmtpPool(
            settings.smtp_url, connections=settings.smtp_connections, rate=settings.smtp_rate,
            domain_rate=settings.smtp_domain_rate,
        )
    if settings.sms_provider.strip():
        found["sms"] = SmsChannel(provider_from_config(json_setting(settings.sms_provider, "sms_provider")))
    if settings.telegram_bot_token.strip():
        found["messenger"] = TelegramChannel(settings.telegram_bot_token.strip())
    allow = [cidr.strip() for cidr in settings.webhook_allow.split(",") if cidr.strip()]
    found["webhook"] = WebhookChannel(settings.webhook_secret or settings.derived_secret("webhooks"), allow=allow)
    found["postal"] = PostalChannel()
    return found


def json_setting(text: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise Invalid(f"not JSON: {exc}", field=field) from None
    if not isinstance(value, dict):
        raise Invalid("a JSON object is expected", field=field)
    return value


def build_sender(db: Database, settings: Settings) -> Sender:
    return Sender(
        db, adapters(db, settings), mailer(settings), Pacing.from_settings(settings),
        secret=settings.derived_secret("suppressions"), batch=settings.send_batch,
    )
