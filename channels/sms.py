"""SMS out and back: the `sms` channel (checks the number, hands the text to a provider), the providers
(Twilio, a configurable HTTP gateway), their delivery receipts, Twilio's request signature, and the
STOP/START replies a recipient sends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import phonenumbers

from channels.base import Delivery
from channels.http import (
    BLOCKED,
    answer,
    dig,
    http_client,
    json_body,
    refusal_outcome,
    retry_after,
    transport_outcome,
)
from channels.ledger import DEFERRED, FAILED, SENT, UNKNOWN, Outcome
from core.errors import Invalid

# --- Receipts ---------------------------------------------------------------------------------------

PENDING, DELIVERED, UNDELIVERED = "pending", "delivered", "undelivered"
RECEIPT_STATES = (PENDING, DELIVERED, UNDELIVERED)


@dataclass(frozen=True)
class Receipt:
    """What a delivery receipt says about a message we sent, found by the provider's id."""

    provider_id: str
    state: str  # PENDING (on its way), DELIVERED or UNDELIVERED (final)
    error: str | None = None  # the provider's error code and what it means, when it gave one


# --- Providers --------------------------------------------------------------------------------------

class SmsProvider(Protocol):
    """Who actually sends the text. Answers by the rules in channels.base; never raises for the
    provider's behaviour."""

    async def send(self, to: str, text: str, message_id: uuid.UUID) -> Outcome: ...

    def receipt(self, fields: Mapping[str, Any]) -> Receipt: ...

    async def close(self) -> None: ...


TWILIO_API = "https://api.twilio.com"

# Twilio's receipt statuses; `receiving`/`received` are inbound and never describe a message we sent.
_TWILIO_STATES = {
    "accepted": PENDING, "scheduled": PENDING, "queued": PENDING, "sending": PENDING, "sent": PENDING,
    "delivered": DELIVERED, "read": DELIVERED,
    "undelivered": UNDELIVERED, "failed": UNDELIVERED, "canceled": UNDELIVERED,
}
_TWILIO_ERRORS = {
    "21610": "the recipient opted out (replied STOP)",
    "30001": "queue overflow",
    "30002": "account suspended",
    "30003": "unreachable destination handset",
    "30004": "message blocked",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier",
    "30008": "unknown error",
}
_TWILIO_OPTED_OUT = 21610
_SID = re.compile(r"[A-Za-z0-9]{1,64}")


class TwilioSms:
    """Twilio's Messages API. A 5xx is UNKNOWN: the API takes no idempotency key, and a 5xx (from
    Twilio or an edge in front of it) can come after the message was created, so sending again could
    send it twice; a 503 that says when to come back is the one "not now"."""

    def __init__(self, account_sid: str, auth_token: str, *, sender: str | None = None,
                 messaging_service_sid: str | None = None, status_callback: str | None = None,
                 client: httpx.AsyncClient | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 api_base: str = TWILIO_API) -> None:
        if not _SID.fullmatch(account_sid or ""):
            raise Invalid("a Twilio account SID (letters and digits, e.g. AC…) is required", field="account_sid")
        if not auth_token:
            raise Invalid("a Twilio auth token is required", field="auth_token")
        if bool(sender) == bool(messaging_service_sid):
            raise Invalid("set exactly one of a sender number and a messaging service SID", field="sender")
        if messaging_service_sid and not _SID.fullmatch(messaging_service_sid):
            raise Invalid("a messaging service SID is letters and digits (MG…)", field="messaging_service_sid")
        if status_callback is not None:
            _check_url(status_callback, "status_callback")
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback
        self.url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._client, self._owned = http_client(client, transport)

    async def send(self, to: str, text: str, message_id: uuid.UUID) -> Outcome:
        form = {"To": to, "Body": text}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        else:
            form["From"] = self.sender or ""
        if self.status_callback:
            form["StatusCallback"] = self.status_callback
        secrets = (self._auth_token,)
        try:
            response = await self._client.post(self.url, data=form, auth=(self.account_sid, self._auth_token),
                                               headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            return transport_outcome(exc, secrets)
        said, body = answer(response, secrets), json_body(response)
        body = body if isinstance(body, dict) else {}
        if response.is_success:
            sid = body.get("sid")
            return Outcome(SENT, response=said, provider_id=str(sid) if sid else None)
        code, message = body.get("code"), body.get("message")
        detail = f"Twilio {code}: {message}" if code else f"{response.status_code} {response.reason_phrase}"
        if code == _TWILIO_OPTED_OUT:
            return Outcome(FAILED, response=said, reason=f"{BLOCKED} {_TWILIO_ERRORS['21610']}; {detail}")
        return refusal_outcome(response.status_code, said, detail, retry_after(response.headers.get("retry-after")))

    def signed(self, url: str, params: Iterable[tuple[str, str]], signature: str) -> bool:
        """Whether a request to `url` with these form fields came from Twilio (X-Twilio-Signature)."""
        return verify_twilio_signature(self._auth_token, url, list(params), signature)

    def receipt(self, fields: Mapping[str, Any]) -> Receipt:
        """Twilio's status callback (form fields MessageSid, MessageStatus, ErrorCode)."""
        sid = fields.get("MessageSid") or fields.get("SmsSid")
        status = str(fields.get("MessageStatus") or fields.get("SmsStatus") or "").lower()
        if not sid:
            raise Invalid("a Twilio status callback names the message in MessageSid", field="MessageSid")
        if status not in _TWILIO_STATES:
            raise Invalid(f"not a Twilio status of a sent message: {status!r}", field="MessageStatus")
        error = None
        if code := str(fields.get("ErrorCode") or "").strip():
            error = f"{code} {_TWILIO_ERRORS[code]}" if code in _TWILIO_ERRORS else code
        return Receipt(str(sid), _TWILIO_STATES[status], error)

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()


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
        _check_url(self.url, "url")
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


def parse_receipt(provider: SmsProvider, fields: Mapping[str, Any]) -> Receipt:
    """A delivery receipt as the provider that sent the message writes it (form fields or JSON)."""
    return provider.receipt(fields)


def _check_url(url: Any, name: str) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("must be an http(s) URL", field=name)


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


# --- The channel ------------------------------------------------------------------------------------

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


# --- Twilio's request signature ---------------------------------------------------------------------

def verify_twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]],
                            signature: str) -> bool:
    """Whether X-Twilio-Signature `signature` is Twilio's for this request: base64 HMAC-SHA1, keyed with
    the auth token, of the full URL followed by each POST parameter's name and value, sorted by name.
    `url` is the URL Twilio called (scheme, host, path and query as configured at Twilio); pass form
    fields as pairs (e.g. Starlette's `form.multi_items()`) so repeated names all count. As Twilio's
    own libraries do, the URL is also tried with the scheme's default port added or the port removed."""
    if not auth_token or not signature:
        return False
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    signed = "".join(name + value for name, value in sorted(pairs))
    given = signature.encode("utf-8")
    found = False
    for candidate in _url_variants(url):
        digest = hmac.new(auth_token.encode("utf-8"), (candidate + signed).encode("utf-8"), hashlib.sha1).digest()
        found |= hmac.compare_digest(base64.b64encode(digest), given)
    return found


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host, port = hostport, ""
    if (colon := hostport.rfind(":")) != -1 and hostport[colon + 1:].isdigit():
        host, port = hostport[:colon], hostport[colon + 1:]
    default = {"https": "443", "http": "80"}.get(parts.scheme)
    with_port = hostport if port or not default else f"{host}:{default}"
    rebuilt = (urlunsplit(parts._replace(netloc=f"{userinfo}{at}{netloc}")) for netloc in (with_port, host))
    return list(dict.fromkeys((url, *rebuilt)))


# --- What recipients reply ---------------------------------------------------------------------------

STOP_WORDS = frozenset({
    "stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "revoke",
    "стоп", "отписаться", "отписка", "отпишите", "отписать", "отмена",
})
START_WORDS = frozenset({"start", "unstop", "старт"})
# Letters that look alike in Latin and Cyrillic, so "CTOП" or "stоp" typed on a mixed keyboard still counts.
_LATIN, _CYRILLIC = "aceopxykmthb", "асеорхукмтнв"
_AS_CYRILLIC, _AS_LATIN = str.maketrans(_LATIN, _CYRILLIC), str.maketrans(_CYRILLIC, _LATIN)
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def is_stop(text: str) -> bool:
    """Whether an inbound message, as a whole, asks to stop messages (STOP, UNSUBSCRIBE, СТОП, ОТПИСКА…):
    any case, spacing and surrounding punctuation; "don't stop" is not one."""
    return _is_keyword(text, STOP_WORDS)


def is_start(text: str) -> bool:
    """Whether an inbound message, as a whole, asks to start again (START, UNSTOP, СТАРТ)."""
    return _is_keyword(text, START_WORDS)


def _is_keyword(text: str, words: frozenset[str]) -> bool:
    word = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    word = re.sub(r"\s+", "", _EDGES.sub("", word.strip()))
    return bool({word, word.translate(_AS_CYRILLIC), word.translate(_AS_LATIN)} & words)
