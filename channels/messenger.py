"""The `messenger` channel: a text to a Telegram chat through the Bot API's sendMessage, the answer
mapped to an Outcome by the rules in channels.base. The bot token is part of every request's URL,
so it is scrubbed from everything recorded or logged."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx

from channels.base import Delivery
from channels.http import BLOCKED, answer, http_client, json_body, refusal_outcome, retry_after, transport_outcome
from channels.ledger import DEFERRED, FAILED, SENT, UNKNOWN, Outcome
from core.errors import Invalid

TELEGRAM_API = "https://api.telegram.org"
# Telegram's limit, in characters (code points). Reports differ on whether an emoji outside the BMP counts
# twice; counting it once never refuses a text Telegram would take, and Telegram's own 400 covers the rest.
MAX_TEXT = 4096
_TOKEN = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")
_CHAT = re.compile(r"-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31}")
_BOT_PATH = re.compile(r"/bot[0-9]+(?::|%3A)[A-Za-z0-9_-]+", re.IGNORECASE)


class _ScrubBotPaths(logging.Filter):
    """httpx logs every request's URL at INFO; the bot token in its path must not reach the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_scrub_path(arg) for arg in record.args)
        record.msg = _scrub_path(record.msg)
        return True


def _scrub_path(value: Any) -> Any:
    if isinstance(value, str | httpx.URL) and _BOT_PATH.search(text := str(value)):
        return _BOT_PATH.sub("/bot<token>", text)
    return value


_SCRUB_LOGS = _ScrubBotPaths()


class TelegramChannel:
    """Telegram through a bot: `delivery.recipient` is the chat id (or @channel), `delivery.text` the
    message. A 403 (the user blocked the bot, the bot was removed from the group) is FAILED with a
    reason starting with channels.http.BLOCKED, so the caller can stop messaging that chat."""

    name = "messenger"

    def __init__(self, bot_token: str, *, client: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, api_base: str = TELEGRAM_API,
                 parse_mode: str | None = None, disable_web_page_preview: bool = True) -> None:
        if not _TOKEN.fullmatch(bot_token or ""):
            raise Invalid("a Telegram bot token (digits, a colon, then letters and digits) is required",
                          field="bot_token")
        if parse_mode not in (None, "HTML", "Markdown", "MarkdownV2"):
            raise Invalid("parse_mode is HTML, Markdown or MarkdownV2", field="parse_mode")
        self._token = bot_token
        self._url = f"{api_base.rstrip('/')}/bot{bot_token}/sendMessage"
        self.parse_mode = parse_mode
        self.disable_web_page_preview = disable_web_page_preview
        self._client, self._owned = http_client(client, transport)
        httpx_logger = logging.getLogger("httpx")
        if _SCRUB_LOGS not in httpx_logger.filters:
            httpx_logger.addFilter(_SCRUB_LOGS)

    async def deliver(self, delivery: Delivery) -> Outcome:
        text = delivery.text
        if not text.strip():
            return Outcome(FAILED, reason="nothing to send: the text is empty")
        if len(text) > MAX_TEXT:
            return Outcome(FAILED, reason=f"the text is {len(text)} characters; Telegram takes at most {MAX_TEXT}")
        if not _CHAT.fullmatch(delivery.recipient):
            return Outcome(FAILED, reason="not a Telegram chat id (a number, or @ and a channel's name)")
        chat: int | str = delivery.recipient if delivery.recipient.startswith("@") else int(delivery.recipient)
        body: dict[str, Any] = {"chat_id": chat, "text": text,
                                "disable_web_page_preview": self.disable_web_page_preview}
        if self.parse_mode:
            body["parse_mode"] = self.parse_mode
        secrets = (self._token,)
        try:
            response = await self._client.post(self._url, json=body)
        except httpx.TransportError as exc:
            return transport_outcome(exc, secrets)
        return _outcome(response, answer(response, secrets))

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()


def _outcome(response: httpx.Response, said: str) -> Outcome:
    reply = json_body(response)
    reply = reply if isinstance(reply, dict) else {}
    if response.is_success:
        if reply.get("ok") is not True:
            return Outcome(UNKNOWN, response=said, reason="Telegram answered without ok: true; it may have sent it")
        result = reply.get("result")
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return Outcome(SENT, response=said, provider_id=str(message_id) if message_id is not None else None)
    status = response.status_code
    description = str(reply.get("description") or f"{status} {response.reason_phrase}")
    parameters = reply.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    wait = parameters.get("retry_after")
    seconds = float(wait) if isinstance(wait, int | float) and wait >= 0 else retry_after(
        response.headers.get("retry-after"))
    if status == 429:
        return Outcome(DEFERRED, response=said, retry_after=seconds, reason=f"Telegram said not now: {description}")
    if status == 403:
        why = description.removeprefix("Forbidden:").strip()
        return Outcome(FAILED, response=said, reason=f"{BLOCKED} {why}")
    if status == 400 and (moved := parameters.get("migrate_to_chat_id")) is not None:
        return Outcome(FAILED, response=said, reason=f"the group became a supergroup; its chat id is now {moved}")
    if status == 400:
        return Outcome(FAILED, response=said, reason=description.removeprefix("Bad Request:").strip())
    return refusal_outcome(status, said, description, seconds)
