"""A generic HTTP SMS gateway described by configuration: how a request's body is built from
placeholders, where the reply keeps the message id, and how the gateway's receipts read."""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import httpx

from channels.http import answer, dig, http_client, json_body, refusal_outcome, retry_after, transport_outcome
from channels.ledger import DEFERRED, SENT, UNKNOWN, Outcome
from channels.sms.provider import check_url
from channels.sms.receipts import DELIVERED, PENDING, RECEIPT_STATES, UNDELIVERED, Receipt
from core.errors import Invalid

PLACEHOLDERS = ("to", "text", "sender", "message_id")
# A gateway's status words (compared lower-cased) in ours; a provider's own `statuses` are added on top.
RECEIPT_STATUSES: Mapping[str, str] = MappingProxyType({
    **dict.fromkeys(("accepted", "acceptd", "queued", "enroute", "buffered", "sending", "sent", "pending",
                     "scheduled", "submitted"), PENDING),
    **dict.fromkeys(("delivered", "delivrd", "read"), DELIVERED),
    **dict.fromkeys(("undelivered", "undeliv", "undeliverable", "failed", "rejected", "rejectd", "expired",
                     "deleted", "canceled", "cancelled", "error"), UNDELIVERED),
})
_CONFIG_KEYS = {"type", "url", "method", "encoding", "body", "headers", "sender", "id_field", "receipt",
                "retry_server_errors"}
_RECEIPT_KEYS = {"id_field", "status_field", "error_field", "statuses"}
_CREDENTIAL = re.compile(r"auth|key|token|secret|signature|password", re.IGNORECASE)


@dataclass(frozen=True)
class ReceiptFields:
    """Where a gateway's receipt keeps the message id, its status and error (dotted paths for JSON)."""

    id_field: str = "id"
    status_field: str = "status"
    error_field: str = "error"
    statuses: Mapping[str, str] = field(default_factory=lambda: RECEIPT_STATUSES)


@dataclass(frozen=True)
class GenericSmsConfig:
    """An HTTP SMS gateway described by configuration: where to send, how the body is built from the
    placeholders {to} {text} {sender} {message_id}, and where the reply keeps the message id."""

    url: str
    body: Mapping[str, Any]  # the gateway's field names → templates ("{to}") or constants; JSON may nest
    method: str = "POST"
    encoding: str = "json"  # json | form
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. Authorization
    sender: str = ""
    id_field: str | None = None  # dotted path into the JSON reply, e.g. "data.id"
    receipt: ReceiptFields = field(default_factory=ReceiptFields)
    # Only for a gateway that documents that a 5xx means nothing was sent: DEFERRED instead of UNKNOWN.
    retry_server_errors: bool = False

    def __post_init__(self) -> None:
        check_url(self.url, "url")
        if self.method not in ("POST", "PUT"):
            raise Invalid("method must be POST or PUT", field="method")
        if self.encoding not in ("json", "form"):
            raise Invalid("encoding must be json or form", field="encoding")
        if not isinstance(self.body, Mapping) or not self.body:
            raise Invalid("body must map the gateway's field names to templates like \"{text}\"", field="body")
        for name, value in self.body.items():
            if self.encoding == "form" and isinstance(value, Mapping | list):
                raise Invalid("a form body maps names to text; nest only in a json body", field=f"body.{name}")
        used = _placeholders(self.body, "body")
        if "text" not in used or "to" not in used:
            raise Invalid("the body must use both {to} and {text}", field="body")
        if "sender" in used and not self.sender:
            raise Invalid("the body uses {sender} but no sender is set", field="sender")
        for name, value in self.headers.items():
            if not (isinstance(name, str) and isinstance(value, str)) or re.search(r"[\r\n]", name + value):
                raise Invalid("headers map names to single-line text values", field=f"headers.{name}")
        if self.id_field is not None and not (isinstance(self.id_field, str) and self.id_field):
            raise Invalid("id_field is a dotted path into the reply, e.g. data.id", field="id_field")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> GenericSmsConfig:
        """From what a settings variable holding JSON gives; Invalid names the bad field."""
        if not isinstance(config, Mapping):
            raise Invalid("the SMS gateway is configured with a JSON object", field="sms")
        if unknown := sorted(set(config) - _CONFIG_KEYS):
            raise Invalid(f"unknown settings {', '.join(unknown)}; known: {', '.join(sorted(_CONFIG_KEYS))}",
                          field=unknown[0])
        if config.get("type", "http") != "http":
            raise Invalid("a generic gateway's type is http", field="type")
        for name in ("url", "method", "encoding", "sender", "id_field"):
            if name in config and not isinstance(config[name], str | None):
                raise Invalid("must be text", field=name)
        for name in ("body", "headers", "receipt"):
            if name in config and not isinstance(config[name], Mapping):
                raise Invalid("must be a JSON object", field=name)
        if not isinstance(config.get("retry_server_errors", False), bool):
            raise Invalid("must be true or false", field="retry_server_errors")
        if "url" not in config:
            raise Invalid("the gateway's url is required", field="url")
        if "body" not in config:
            raise Invalid("a body template is required", field="body")
        return cls(
            url=config["url"], body=dict(config["body"]), method=str(config.get("method") or "POST").upper(),
            encoding=config.get("encoding") or "json", headers=dict(config.get("headers") or {}),
            sender=config.get("sender") or "", id_field=config.get("id_field") or None,
            receipt=_receipt_fields(config.get("receipt") or {}),
            retry_server_errors=config.get("retry_server_errors", False),
        )


class GenericSmsProvider:
    """An HTTP SMS gateway described by a GenericSmsConfig."""

    def __init__(self, config: GenericSmsConfig, *, client: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._client, self._owned = http_client(client, transport)
        # What must never reach a recorded answer: credentials in headers, and the URL's query, where
        # many gateways take their API key.
        query = urlsplit(config.url).query
        self._secrets = (*(v for k, v in config.headers.items() if _CREDENTIAL.search(k)), *([query] if query else []))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, client: httpx.AsyncClient | None = None,
                  transport: httpx.AsyncBaseTransport | None = None) -> GenericSmsProvider:
        return cls(GenericSmsConfig.from_dict(config), client=client, transport=transport)

    def request_body(self, to: str, text: str, message_id: uuid.UUID) -> dict[str, Any]:
        """The body the gateway receives, placeholders filled."""
        values = {"to": to, "text": text, "sender": self.config.sender, "message_id": str(message_id)}
        rendered = _render(self.config.body, values)
        assert isinstance(rendered, dict)
        return rendered

    async def send(self, to: str, text: str, message_id: uuid.UUID) -> Outcome:
        config = self.config
        body = self.request_body(to, text, message_id)
        payload: dict[str, Any] = (
            {"json": body} if config.encoding == "json" else {"data": {k: _form_value(v) for k, v in body.items()}}
        )
        try:
            response = await self._client.request(config.method, config.url, headers=dict(config.headers), **payload)
        except httpx.TransportError as exc:
            return transport_outcome(exc, self._secrets)
        said = answer(response, self._secrets)
        if response.is_success:
            found = dig(json_body(response), config.id_field) if config.id_field else None
            provider_id = str(found) if found is not None and found != "" else None
            return Outcome(SENT, response=said, provider_id=provider_id)
        detail = f"{response.status_code} {response.reason_phrase}"
        return refusal_outcome(response.status_code, said, detail, retry_after(response.headers.get("retry-after")),
                               DEFERRED if config.retry_server_errors else UNKNOWN)

    def receipt(self, fields: Mapping[str, Any]) -> Receipt:
        """The gateway's receipt (form fields or a JSON object), read by the configured field names."""
        names = self.config.receipt
        provider_id, status = dig(fields, names.id_field), dig(fields, names.status_field)
        if provider_id is None or provider_id == "":
            raise Invalid("the receipt does not name the message", field=names.id_field)
        state = names.statuses.get(str(status or "").strip().lower())
        if state is None:
            raise Invalid(f"not a status this gateway is configured for: {status!r}", field=names.status_field)
        error = dig(fields, names.error_field)
        return Receipt(str(provider_id), state, str(error) if error not in (None, "") else None)

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()


def _placeholders(template: Any, where: str) -> set[str]:
    """The placeholders a body template uses; Invalid for an unknown one or a value JSON cannot carry."""
    if isinstance(template, str):
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError:
            raise Invalid("unbalanced braces; write {{ and }} for literal ones", field=where) from None
        used = set()
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in PLACEHOLDERS or spec or conversion:
                known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                raise Invalid(f"unknown placeholder {{{name}}}; use {known}", field=where)
            used.add(name)
        return used
    if isinstance(template, Mapping):
        return set().union(*(_placeholders(v, f"{where}.{k}") for k, v in template.items()))
    if isinstance(template, list):
        return set().union(*(_placeholders(v, f"{where}.{i}") for i, v in enumerate(template)))
    if isinstance(template, bool | int | float) or template is None:
        return set()
    raise Invalid("must be text, a number, true/false, null, an object or a list", field=where)


def _render(template: Any, values: Mapping[str, str]) -> Any:
    if isinstance(template, str):
        return template.format_map(values)  # checked: only the known placeholders occur
    if isinstance(template, Mapping):
        return {k: _render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_render(v, values) for v in template]
    return template


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _receipt_fields(config: Mapping[str, Any]) -> ReceiptFields:
    if unknown := sorted(set(config) - _RECEIPT_KEYS):
        raise Invalid(f"unknown receipt settings {', '.join(unknown)}", field=f"receipt.{unknown[0]}")
    names: dict[str, Any] = {}
    for name in ("id_field", "status_field", "error_field"):
        if name in config:
            if not isinstance(config[name], str) or not config[name]:
                raise Invalid("must be a field name or dotted path", field=f"receipt.{name}")
            names[name] = config[name]
    statuses = config.get("statuses") or {}
    if not isinstance(statuses, Mapping):
        raise Invalid("maps the gateway's status values to pending, delivered or undelivered",
                      field="receipt.statuses")
    for value, state in statuses.items():
        if state not in RECEIPT_STATES:
            raise Invalid(f"{value!r} must map to pending, delivered or undelivered", field="receipt.statuses")
    merged = {**RECEIPT_STATUSES, **{str(k).strip().lower(): v for k, v in statuses.items()}}
    return ReceiptFields(**names, statuses=MappingProxyType(merged))
