"""The webhook channel: POST a message's JSON to the marketer's URL, signed the way nurture's own
inbound call webhook is, without letting that URL reach into our network (SSRF).

How the guard holds against DNS rebinding: the host is resolved once, here; every address it
resolves to is checked; and the request goes to the checked address itself (the URL's host is
replaced by the IP) with the original `Host` header and, for https, the original name as SNI and
for the certificate check (httpcore's `sni_hostname` extension). Nothing looks the name up a
second time, so a name that answers public now and private a moment later cannot slip through.
https requests also say `Connection: close`: the connection pool keys connections by IP, and a
kept-alive TLS connection whose certificate was checked for one name must not carry a request for
another name that resolves to the same IP."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import httpx
import orjson

from channels.base import Delivery
from channels.http import retry_after
from channels.ledger import DEFERRED, FAILED, SENT, UNKNOWN, Outcome
from core import clock
from core.errors import Invalid
from core.tokens import constant_time_equal, hmac_sha256

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

USER_AGENT = "nurture-webhook/1"
MESSAGE_HEADER = "X-Nurture-Message"
TIMESTAMP_HEADER = "X-Nurture-Timestamp"
SIGNATURE_HEADER = "X-Nurture-Signature"
SIGNATURE_WINDOW = 300  # seconds either way, as the inbound call webhook allows
MAX_URL = 500  # the ledger's limit for a recipient
RESPONSE_CHARS = 200
_READ_LIMIT = 4096  # bytes of the receiver's answer read; the rest is dropped with the connection

_SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598); not is_private in Python
_THIS_NETWORK = ip_network("0.0.0.0/8")
_NAT64 = ip_network("64:ff9b::/96")
_NAT64_LOCAL = ip_network("64:ff9b:1::/48")  # RFC 8215: a gateway inside some network
_LOCALHOST = (IPv4Address("127.0.0.1"), IPv6Address("::1"))
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)", re.IGNORECASE)
_DECIMAL, _OCTAL, _HEX = re.compile(r"[0-9]+"), re.compile(r"0[0-7]*"), re.compile(r"0x[0-9a-f]*", re.IGNORECASE)


# --- signing ----------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-Nurture-Signature` value: "sha256=" and the hex HMAC-SHA256 of "<timestamp>.<body>"."""
    return "sha256=" + hmac_sha256(secret, str(timestamp).encode() + b"." + body)


def verify(secret: str, timestamp: int | str, body: bytes, signature: str, now: datetime | float,
           window: int = SIGNATURE_WINDOW) -> bool:
    """Whether `signature` (the header value) signs `body` at `timestamp` (unix seconds) with
    `secret`, and the timestamp is at most `window` seconds off `now` (a datetime or unix seconds)."""
    stamp = str(timestamp).strip()
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    moment = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(moment - int(stamp)) > window:
        return False
    return constant_time_equal(signature.strip().lower(), sign(secret, stamp, body))


# --- which URLs and addresses may be reached --------------------------------------------------


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as the URL names it: lower-case ASCII (IDNA), IPv6 without brackets
    port: int
    path: bytes  # path and query, as sent
    literal: IPAddress | None  # the host when it is an IP address, in whatever spelling

    @property
    def default_port(self) -> bool:
        return self.port == (443 if self.scheme == "https" else 80)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.default_port else f"{host}:{self.port}"


def check_url(url: str, allow: Sequence[str] = ()) -> str:
    """Check a webhook URL as a marketer saves it, without resolving it: http or https, no user
    name or password, a valid host, and not an IP address (in any spelling) or `localhost` that
    deliveries would refuse. Returns the URL normalised as it will be sent to; raises Invalid."""
    target = _target(url)
    networks = _networks(allow)
    name = target.host.rstrip(".")
    if target.literal is not None:
        refusal = _refusal([target.literal], networks)
    elif name == "localhost" or name.endswith(".localhost"):  # RFC 6761: loopback wherever resolved
        refusal = None if any(_allowed(ip, networks) for ip in _LOCALHOST) else "localhost, a loopback address"
    else:
        refusal = None
    if refusal:
        raise Invalid(f"webhooks may not be sent to {refusal}", field="url")
    return str(httpx.URL(url.strip()).copy_with(fragment=None))


def _target(url: str) -> _Target:
    url = url.strip()
    if not url or len(url) > MAX_URL:
        raise Invalid(f"a URL of 1 to {MAX_URL} characters is required", field="url")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise Invalid(f"not a valid URL: {exc}", field="url") from None
    if parsed.scheme not in ("http", "https"):
        raise Invalid("a webhook URL must start with http:// or https://", field="url")
    if parsed.userinfo:
        raise Invalid("a webhook URL must not carry a user name or password", field="url")
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise Invalid("the URL has no host", field="url")
    port = parsed.port if parsed.port is not None else (443 if parsed.scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise Invalid(f"port {port} is out of range", field="url")
    literal = _literal_ip(host)
    if literal is None and not _hostname(host):
        raise Invalid(f"{host} is not a valid host name", field="url")
    return _Target(parsed.scheme, host, port, parsed.raw_path, literal)


def _hostname(host: str) -> bool:
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return len(host) <= 254 and all(_LABEL.fullmatch(label) for label in labels)


def _literal_ip(host: str) -> IPAddress | None:
    """The host as an IP address; None when it is a name. IPv4 is read as browsers and inet_aton
    read it (WHATWG URL): "2130706433", "0x7f.1", "0177.0.0.1" and "127.1" are all 127.0.0.1; a
    host that ends in a number and is no valid address is refused, not looked up."""
    if ":" in host:
        try:
            return IPv6Address(host)
        except ValueError:
            raise Invalid(f"{host} is not a valid IPv6 address", field="url") from None
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not (_DECIMAL.fullmatch(parts[-1]) or _HEX.fullmatch(parts[-1])):
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise Invalid(f"{host} is not a valid IPv4 address", field="url")
    *leading, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in leading) or last >= 256 ** (4 - len(leading)):
        raise Invalid(f"{host} is not a valid IPv4 address", field="url")
    return IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(leading)) + last)


def _ipv4_number(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if _OCTAL.fullmatch(part) else None
    return int(part) if _DECIMAL.fullmatch(part) else None


def _networks(allow: Sequence[str]) -> tuple[IPNetwork, ...]:
    if isinstance(allow, str):
        raise TypeError("allow is a sequence of CIDRs, not one string")
    return tuple(ip_network(cidr.strip(), strict=False) for cidr in allow)


def _embedded_v4(ip: IPv6Address) -> tuple[IPv4Address, str] | None:
    """The IPv4 address an IPv6 one carries and reaches (IPv4-mapped, 6to4, NAT64), and how."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    return None


def _address_class(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is ("loopback", "private", ...); None when public."""
    if isinstance(ip, IPv6Address):
        if (embedded := _embedded_v4(ip)) is not None:
            v4, how = embedded
            kind = _address_class(v4)
            return f"{kind} ({how} {v4})" if kind else None
        if ip in _NAT64_LOCAL:
            return "private (local-use NAT64)"
        if ip.is_site_local:
            return "site-local"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"  # 169.254.169.254, the cloud metadata service, among them
    if ip.is_multicast:
        return "multicast"
    if ip in _SHARED:
        return "shared (carrier-grade NAT)"
    if ip.is_reserved:  # before is_private, which takes in 240.0.0.0/4 too
        return "reserved"
    if ip.is_private:
        return "private"
    return None if ip.is_global else "non-public"


def _allowed(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    embedded = _embedded_v4(ip) if isinstance(ip, IPv6Address) else None
    return any(ip in net or (embedded is not None and embedded[0] in net) for net in networks)


def _refusal(addresses: Sequence[IPAddress], networks: tuple[IPNetwork, ...]) -> str | None:
    """Why one of `addresses` may not be reached ("127.0.0.1, a loopback address"); None if all may."""
    for ip in addresses:
        if not _allowed(ip, networks) and (kind := _address_class(ip)):
            return f"{ip}, {'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
    return None


async def resolve(host: str, port: int) -> list[str]:
    """The host's addresses, as the system resolver gives them."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for *_, sockaddr in found]


# --- the channel ------------------------------------------------------------------------------


class WebhookChannel:
    """Webhook deliveries: `recipient` is the URL, `data` the JSON body. `allow` lists CIDRs that
    may be reached although not public (e.g. "127.0.0.1/32" for local testing). A lent `client`
    must speak HTTP/1.1 (httpx's default): https requests carry `Connection: close`, which HTTP/2
    forbids; the channel sets its own timeout and never follows redirects, whatever the client's."""

    name = "webhook"

    def __init__(self, secret: str, *, allow: Sequence[str] = (), timeout: float = 10.0,
                 client: httpx.AsyncClient | None = None, resolver: Resolver | None = None) -> None:
        if not secret:
            raise ValueError("a signing secret is needed")
        self._secret = secret
        self._networks = _networks(allow)
        self._timeout = timeout
        self._owns_client = client is None
        # No proxies from the environment: a proxy would reach whatever it reaches, unchecked.
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
        self._resolve = resolver or resolve

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def deliver(self, delivery: Delivery) -> Outcome:
        try:
            target = _target(delivery.recipient)
        except Invalid as exc:
            return Outcome(FAILED, reason=exc.message)
        try:
            body = orjson.dumps(delivery.data)
        except TypeError as exc:
            return Outcome(FAILED, reason=f"the data cannot be sent as JSON: {exc}")
        if target.literal is not None:
            addresses: list[IPAddress] = [target.literal]
        else:
            try:
                async with asyncio.timeout(self._timeout):
                    found = await self._resolve(target.host, target.port)
            except (OSError, TimeoutError) as exc:
                return Outcome(DEFERRED, reason=f"could not resolve {target.host}: {str(exc) or 'timed out'}")
            addresses = [ip_address(found_ip) for found_ip in dict.fromkeys(found)]
            if not addresses:
                return Outcome(DEFERRED, reason=f"{target.host} resolved to no address")
        if refusal := _refusal(addresses, self._networks):
            named = "" if target.literal is not None else f"{target.host} resolves to "
            return Outcome(FAILED, reason=f"refused: {named}{refusal}")
        return await self._post(target, addresses[0], delivery.message_id, body)

    async def _post(self, target: _Target, ip: IPAddress, message_id: uuid.UUID, body: bytes) -> Outcome:
        stamp = str(int(clock.now().timestamp()))
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",  # the answer's first bytes are kept as text
            MESSAGE_HEADER: str(message_id),
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(self._secret, stamp, body),
        }
        extensions: dict[str, object] = {"timeout": httpx.Timeout(self._timeout).as_dict()}
        if target.scheme == "https":
            headers["Connection"] = "close"
            if target.literal is None:
                extensions["sni_hostname"] = target.host.rstrip(".")
        # The checked address itself, so no second lookup can answer differently (see the module doc).
        url = httpx.URL(scheme=target.scheme, host=str(ip).partition("%")[0], port=target.port, raw_path=target.path)
        request = httpx.Request("POST", url, headers=headers, content=body, extensions=extensions)
        try:
            response = await self._client.send(request, stream=True, follow_redirects=False)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return Outcome(DEFERRED, response=repr(exc), reason=f"could not connect to {ip} port {target.port}")
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # The request went out (or part of it); it may have been taken. Receivers dedupe on
            # X-Nurture-Message, but the ledger still never resends on a guess.
            return Outcome(UNKNOWN, response=repr(exc), reason="the request was sent and no answer came")
        try:
            answer = await _head(response)
        finally:
            await response.aclose()
        return _answered(response.status_code, response.headers, answer)


async def _head(response: httpx.Response) -> str:
    """The first RESPONSE_CHARS characters of the answer; what could be read if reading fails."""
    read = b""
    try:
        async for chunk in response.aiter_bytes():
            read += chunk
            if len(read) >= _READ_LIMIT:
                break
    except httpx.HTTPError:
        pass  # the status is the answer; the body is only for people to read
    return read.decode("utf-8", "replace")[:RESPONSE_CHARS]


def _answered(status: int, headers: httpx.Headers, body: str) -> Outcome:
    """What a receiver's answer comes to. A 5xx is DEFERRED: the receiver did not take the message
    (if it did some of the work, the resend carries the same X-Nurture-Message to dedupe on)."""
    response = f"{status} {body}".strip()
    if 200 <= status < 300:
        return Outcome(SENT, response=response)
    if 300 <= status < 400:
        location = headers.get("location") or "nowhere (no Location)"
        return Outcome(FAILED, response=response,
                       reason=f"the receiver redirected ({status}) to {location}; redirects are not followed")
    if status in (408, 429) or 500 <= status < 600:
        return Outcome(DEFERRED, response=response, retry_after=retry_after(headers.get("retry-after")),
                       reason=f"the receiver answered {status}")
    return Outcome(FAILED, response=response, reason=f"the receiver refused the message with {status}")
