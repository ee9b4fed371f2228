"""Twilio as the SMS provider: its Messages API, its status callbacks, and the signature
(X-Twilio-Signature) that proves a request came from Twilio."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from channels.http import BLOCKED, answer, http_client, json_body, refusal_outcome, retry_after, transport_outcome
from channels.ledger import FAILED, SENT, Outcome
from channels.sms.provider import check_url
from channels.sms.receipts import DELIVERED, PENDING, UNDELIVERED, Receipt
from core.errors import Invalid

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
            check_url(status_callback, "status_callback")
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
