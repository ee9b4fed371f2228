"""One settings object, read from NURTURE_* environment variables with safe local defaults."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NURTURE_", extra="ignore")

    data_dir: Path = Field(default=Path(".nurture"), description="Where the SQLite file, keys and sockets live")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means a SQLite file in data_dir")
    redis_url: str = Field(default="", description="Redis URL; empty means an embedded redis-server")
    smtp_url: str = Field(default="capture://", description="Outgoing mail: capture://, smtp://, smtps://")
    base_url: str = Field(default="http://127.0.0.1:8000", description="Public URL used in links")
    host: str = "127.0.0.1"
    port: int = 8000
    secret_keys: str = Field(
        default="",
        description="Comma-separated signing keys, newest first; empty means a key generated in data_dir",
    )
    call_webhook_secret: str = Field(default="", description="HMAC secret for POST /v1/calls; empty means derived")
    default_region: str = Field(default="RU", description="Phone region used when a number has no country code")
    log_level: str = "INFO"
    log_json: bool = True
    form_rate_limit: int = Field(default=30, description="Form posts per IP per minute")
    max_form_bytes: int = 1024 * 1024
    max_email_bytes: int = 25 * 1024 * 1024
    max_import_bytes: int = 200 * 1024 * 1024
    trusted_proxies: str = Field(default="", description="Comma-separated proxy IPs whose X-Forwarded-For is trusted")
    smtpd_host: str = "127.0.0.1"
    smtpd_port: int = 2525
    db_pool_size: int = 20

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'nurture.db').as_posix()}"

    def signing_keys(self) -> list[str]:
        if self.secret_keys:
            return [k.strip() for k in self.secret_keys.split(",") if k.strip()]
        return [_local_secret(self.data_dir)]

    def call_secret(self) -> str:
        if self.call_webhook_secret:
            return self.call_webhook_secret
        import hashlib
        import hmac

        return hmac.new(self.signing_keys()[0].encode(), b"calls", hashlib.sha256).hexdigest()

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
