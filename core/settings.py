"""One settings object, read from NURTURE_* environment variables with safe local defaults."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NURTURE_", extra="ignore")

    data_dir: Path = Field(default=Path(".nurture"), description="Where the SQLite file and generated keys live")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means a SQLite file in data_dir")
    base_url: str = Field(default="http://127.0.0.1:8000", description="Public URL of this install (its own origin)")
    host: str = Field(default="127.0.0.1", description="Address the API listens on")
    port: int = Field(default=8000, description="Port the API listens on")
    secret_keys: str = Field(
        default="",
        description="Comma-separated signing keys, newest first; empty means a key generated in data_dir",
    )
    call_webhook_secret: str = Field(default="", description="HMAC secret for POST /v1/calls; empty means derived")
    default_region: str = Field(default="RU", description="Phone region used when a number has no country code")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR")
    log_json: bool = Field(default=True, description="JSON log lines (false: human-readable)")
    form_rate_limit: int = Field(default=30, description="Posts to one form from one IP per minute (per API process)")
    max_form_bytes: int = Field(default=1024 * 1024, description="Largest form post (413 above)")
    max_email_bytes: int = Field(default=25 * 1024 * 1024, description="Largest inbound email (413 above)")
    max_import_bytes: int = Field(default=200 * 1024 * 1024, description="Largest CSV upload (413 above)")
    trusted_proxies: str = Field(default="", description="Comma-separated proxy IPs whose X-Forwarded-For is trusted")
    smtpd_host: str = Field(default="127.0.0.1", description="Address `nurture smtpd` listens on")
    smtpd_port: int = Field(default=2525, description="Port `nurture smtpd` listens on")
    db_pool_size: int = Field(default=20, description="PostgreSQL connections per process")
    redis_url: str = Field(
        default="", description="redis:// or unix:// URL; empty means a redis-server nurture starts in data_dir"
    )
    worker_concurrency: int = Field(default=20, description="Jobs one `nurture worker` runs at once")
    events_per_job: int = Field(
        default=200, ge=1, description="Most events handled together in one job (and one transaction when all succeed)"
    )
    job_timeout: int = Field(default=120, description="Seconds a job may run; a dead worker's job restarts after it")
    job_max_tries: int = Field(default=5, description="Tries of an event handler before it goes to the dead letters")
    job_retry_seconds: float = Field(default=2.0, description="First wait before a failed handler is tried again")
    outbox_poll_seconds: float = Field(default=2.0, description="Safety-net poll of the outbox when no nudge came")
    sweep_seconds: float = Field(default=15.0, description="How often the sweeper looks for work Redis forgot")
    smtp_url: str = Field(
        default="capture://",
        description="Outgoing mail: capture:// keeps messages for the UI (GET /v1/outbox/messages); "
        "smtp://user:password@host:587 (STARTTLS when offered) or smtps://host:465",
    )
    smtp_connections: int = Field(default=4, ge=1, description="SMTP connections one worker keeps open")
    smtp_rate: float = Field(default=0.0, ge=0, description="Most messages per second per worker (0: no limit)")
    smtp_domain_rate: float = Field(
        default=0.0, ge=0, description="Messages per second to one recipient domain, per worker (0: no limit)"
    )
    mail_from: str = Field(default="hello@example.com", description="From address of outgoing mail")
    mail_from_name: str = Field(default="Nurture", description="From name of outgoing mail")
    bounce_domain: str = Field(
        default="", description="Domain of the bounce+<token>@ return path (MX to `nurture smtpd`); empty: From's"
    )
    dkim_keys: str = Field(
        default="",
        description="Comma-separated selector:domain:path-to-PEM; every key signs (e.g. one RSA, one Ed25519)",
    )
    send_batch: int = Field(default=200, ge=1, description="Messages one worker claims at a time")
    send_poll_seconds: float = Field(default=1.0, gt=0, description="How often a worker looks for messages due")
    frequency_cap: int = Field(
        default=3, ge=0, description="Most marketing messages per lead in the window, all campaigns (0: no cap)"
    )
    frequency_window_hours: float = Field(default=24.0, gt=0, description="The frequency cap's rolling window")
    quiet_hours: str = Field(
        default="21-9", description="No marketing mail between these hours in the lead's time zone (empty: none)"
    )
    default_timezone: str = Field(default="Europe/Moscow", description="Time zone of leads that have none")
    require_consent: bool = Field(
        default=False, description="Marketing only with a granted consent (withdrawn or pending stops it anyway)"
    )
    consent_purpose: str = Field(default="marketing_email", description="Consent purpose marketing messages need")
    soft_bounce_limit: int = Field(default=3, ge=1, description="Soft bounces within the window that count as hard")
    soft_bounce_days: float = Field(default=7.0, gt=0, description="The soft-bounce window")
    sms_provider: str = Field(
        default="", description="JSON of the SMS provider: {\"type\": \"twilio\", …} or a generic HTTP provider"
    )
    telegram_bot_token: str = Field(default="", description="Telegram bot token for the messenger channel")
    webhook_secret: str = Field(default="", description="HMAC secret of outgoing webhooks; empty means derived")
    webhook_allow: str = Field(
        default="", description="Comma-separated CIDRs webhooks may reach although private (default: none)"
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'nurture.db').as_posix()}"

    def signing_keys(self) -> list[str]:
        if self.secret_keys:
            return [k.strip() for k in self.secret_keys.split(",") if k.strip()]
        return [_local_secret(self.data_dir)]

    def call_secret(self) -> str:
        return self.call_webhook_secret or self.derived_secret("calls")

    def derived_secret(self, purpose: str) -> str:
        """A secret of its own for one purpose, derived from the signing key when not configured."""
        import hashlib
        import hmac

        return hmac.new(self.signing_keys()[0].encode(), purpose.encode(), hashlib.sha256).hexdigest()

    def trusted_proxy_set(self) -> set[str]:
        return {p.strip() for p in self.trusted_proxies.split(",") if p.strip()}


def _local_secret(data_dir: Path) -> str:
    """A key generated once per data directory, so a local install needs no configuration."""
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


@lru_cache
def get_settings() -> Settings:
    return Settings()


_in_use: Settings | None = None


def use_settings(settings: Settings | None) -> None:
    """The settings of this process when they were not read from the environment (the worker's and
    the app's own, a test's): event handlers read them with `current_settings()`."""
    global _in_use
    _in_use = settings


def current_settings() -> Settings:
    return _in_use or get_settings()
