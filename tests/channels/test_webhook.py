"""The webhook channel: what a receiver gets (signed JSON, sent to the address we checked), what
each answer comes to, and the addresses a webhook URL may never reach."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import httpx
import orjson
import pytest

from channels.base import Delivery
from channels.ledger import DEFERRED, FAILED, RETRY_CAP, SENT, UNKNOWN
from channels.webhook import Resolver, WebhookChannel, check_url, sign, verify
from core.errors import Invalid, Unauthorized
from leads.intake.calls import verify_signature

SECRET = "hook-secret"
MESSAGE_ID = uuid.UUID("0190f0e2-7c1a-7000-8000-00000000beef")
PUBLIC = "93.184.216.34"


class Receiver:
    """The other side, through httpx.MockTransport: answers with `answer` and keeps the requests."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer or (lambda request: httpx.Response(200, text="ok"))
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self._handle))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._answer(request)


def names(table: dict[str, list[str]], asked: list[str] | None = None) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if asked is not None:
            asked.append(host)
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return table[host]

    return resolve


def channel(receiver: Receiver, table: dict[str, list[str]] | None = None, **options: object) -> WebhookChannel:
    return WebhookChannel(SECRET, client=receiver.client, resolver=names(table or {}), **options)  # type: ignore[arg-type]


def delivery(url: str, data: dict[str, object] | None = None) -> Delivery:
    return Delivery(MESSAGE_ID, url, data={"event": "lead.created", "lead": {"name": "Анна"}} if data is None else data)


# --- what the receiver gets --------------------------------------------------------------------


async def test_receiver_gets_signed_json_at_the_checked_ip_with_the_original_host(frozen_now: datetime) -> None:
    receiver = Receiver(lambda request: httpx.Response(200, text="thanks"))
    hooks = channel(receiver, {"hooks.example.com": [PUBLIC]})

    outcome = await hooks.deliver(delivery("https://hooks.example.com/in?source=nurture"))

    assert (outcome.state, outcome.response, outcome.provider_id) == (SENT, "200 thanks", None)
    [request] = receiver.requests
    assert request.method == "POST"
    assert str(request.url) == f"https://{PUBLIC}/in?source=nurture"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "nurture-webhook/1"
    assert request.headers["x-nurture-message"] == str(MESSAGE_ID)
    stamp = request.headers["x-nurture-timestamp"]
    assert stamp == str(int(frozen_now.timestamp()))
    assert orjson.loads(request.content) == {"event": "lead.created", "lead": {"name": "Анна"}}
    signature = request.headers["x-nurture-signature"]
    assert signature.startswith("sha256=")
    assert verify(SECRET, stamp, request.content, signature, frozen_now)
    assert not verify("another-secret", stamp, request.content, signature, frozen_now)
    assert not verify(SECRET, stamp, request.content + b" ", signature, frozen_now)


async def test_a_non_default_port_and_ipv6_address_keep_the_host_header_as_written(frozen_now: datetime) -> None:
    receiver = Receiver()
    hooks = channel(receiver, {"hooks.example.com": ["2606:4700::1111"]})

    outcome = await hooks.deliver(delivery("http://hooks.example.com:8080/in"))

    assert outcome.state == SENT
    [request] = receiver.requests
    assert str(request.url) == "http://[2606:4700::1111]:8080/in"
    assert request.headers["host"] == "hooks.example.com:8080"
    assert "sni_hostname" not in request.extensions  # plain http: no TLS to name


async def test_https_requests_close_their_connection_so_no_tls_session_serves_another_name() -> None:
    receiver = Receiver()
    hooks = channel(receiver, {"a.example.com": [PUBLIC], "b.example.com": [PUBLIC]})

    await hooks.deliver(delivery("https://a.example.com/"))
    await hooks.deliver(delivery("http://b.example.com/"))

    assert receiver.requests[0].headers["connection"] == "close"
    assert "connection" not in receiver.requests[1].headers


def test_signature_is_the_scheme_nurtures_own_call_webhook_accepts(frozen_now: datetime) -> None:
    body = b'{"caller":"+79990000000"}'
    stamp = str(int(frozen_now.timestamp()))

    assert verify_signature(stamp, sign(SECRET, stamp, body), body, SECRET) == frozen_now
    with pytest.raises(Unauthorized):
        verify_signature(stamp, sign("wrong", stamp, body), body, SECRET)


def test_verify_refuses_stale_future_and_malformed_timestamps(frozen_now: datetime) -> None:
    body = b"{}"
    stamp = int(frozen_now.timestamp())
    good = sign(SECRET, stamp, body)

    assert verify(SECRET, stamp, body, good, frozen_now.timestamp() + 300)
    assert not verify(SECRET, stamp, body, good, frozen_now + timedelta(seconds=301))
    assert not verify(SECRET, stamp, body, good, frozen_now - timedelta(seconds=301))
    assert not verify(SECRET, f"{stamp}.0", body, sign(SECRET, f"{stamp}.0", body), frozen_now)
    assert not verify(SECRET, stamp, body, good.removeprefix("sha256="), frozen_now)
    assert verify(SECRET, str(stamp), body, good.upper().replace("SHA256=", "sha256="), frozen_now)


# --- what each answer comes to -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "state", "retry_after"),
    [
        (200, {}, SENT, None),
        (202, {}, SENT, None),
        (204, {}, SENT, None),
        (408, {}, DEFERRED, None),
        (429, {"retry-after": "120"}, DEFERRED, 120.0),
        (503, {"retry-after": "Mon, 02 Mar 2026 09:35:00 GMT"}, DEFERRED, 300.0),
        (503, {"retry-after": "9999999"}, DEFERRED, RETRY_CAP),
        (500, {}, DEFERRED, None),
        (502, {"retry-after": "soon"}, DEFERRED, None),
        (400, {}, FAILED, None),
        (401, {}, FAILED, None),
        (404, {}, FAILED, None),
        (410, {}, FAILED, None),
        (422, {"retry-after": "60"}, FAILED, None),
    ],
)
async def test_receiver_status_decides_the_outcome(frozen_now: datetime, status: int, headers: dict[str, str],
                                                   state: str, retry_after: float | None) -> None:
    receiver = Receiver(lambda request: httpx.Response(status, headers=headers, text="x" * 500))

    outcome = await channel(receiver, {"hooks.example.com": [PUBLIC]}).deliver(delivery("https://hooks.example.com/"))

    assert (outcome.state, outcome.retry_after) == (state, retry_after)
    assert outcome.response == f"{status} " + "x" * 200
    assert outcome.provider_id is None


async def test_a_redirect_is_not_followed_and_fails_naming_where_it_pointed() -> None:
    receiver = Receiver(lambda request: httpx.Response(302, headers={"location": "http://169.254.169.254/latest/"}))

    outcome = await channel(receiver, {"hooks.example.com": [PUBLIC]}).deliver(delivery("https://hooks.example.com/"))

    assert outcome.state == FAILED
    assert outcome.reason is not None and "http://169.254.169.254/latest/" in outcome.reason
    assert len(receiver.requests) == 1


class Interrupted(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"accep"
        raise httpx.ReadTimeout("the rest never came")


async def test_a_2xx_whose_body_breaks_off_is_still_sent() -> None:
    receiver = Receiver(lambda request: httpx.Response(200, stream=Interrupted()))

    outcome = await channel(receiver, {"hooks.example.com": [PUBLIC]}).deliver(delivery("https://hooks.example.com/"))

    assert (outcome.state, outcome.response) == (SENT, "200 accep")


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (httpx.ConnectError("Connection refused"), DEFERRED),
        (httpx.ConnectTimeout("timed out"), DEFERRED),
        (httpx.PoolTimeout("no connection free"), DEFERRED),
        (httpx.ReadTimeout("timed out"), UNKNOWN),
        (httpx.WriteTimeout("timed out"), UNKNOWN),
        (httpx.ReadError("Connection reset by peer"), UNKNOWN),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), UNKNOWN),
    ],
)
async def test_transport_errors_defer_before_sending_and_are_unknown_after(error: Exception, state: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    outcome = await channel(Receiver(fail), {"hooks.example.com": [PUBLIC]}).deliver(
        delivery("https://hooks.example.com/"))

    assert outcome.state == state
    assert outcome.response is not None and str(error) in outcome.response


async def test_a_name_that_does_not_resolve_is_deferred_and_nothing_is_sent() -> None:
    receiver = Receiver()

    outcome = await channel(receiver, {}).deliver(delivery("https://gone.example.com/"))

    assert outcome.state == DEFERRED
    assert outcome.reason is not None and "gone.example.com" in outcome.reason
    assert receiver.requests == []


async def test_a_resolver_that_hangs_is_cut_off_by_the_timeout() -> None:
    async def hang(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return [PUBLIC]

    receiver = Receiver()
    hooks = WebhookChannel(SECRET, client=receiver.client, resolver=hang, timeout=0.05)

    outcome = await hooks.deliver(delivery("https://slow.example.com/"))

    assert outcome.state == DEFERRED
    assert receiver.requests == []


async def test_data_that_is_not_json_fails_without_a_request() -> None:
    receiver = Receiver()

    outcome = await channel(receiver, {"hooks.example.com": [PUBLIC]}).deliver(
        delivery("https://hooks.example.com/", {"when": object()}))

    assert outcome.state == FAILED
    assert receiver.requests == []


# --- addresses a webhook may never reach -------------------------------------------------------

SSRF = [
    ("http://127.0.0.1/", {}, "loopback"),
    ("http://127.0.0.1:6379/", {}, "loopback"),
    ("http://localhost/", {"localhost": ["::1"]}, "loopback"),
    ("http://10.1.2.3/", {}, "private"),
    ("http://192.168.0.10/admin", {}, "private"),
    ("http://172.16.5.4/", {}, "private"),
    ("http://169.254.169.254/latest/meta-data/", {}, "link-local"),
    ("http://[::ffff:127.0.0.1]/", {}, "loopback"),
    ("http://[::ffff:a9fe:a9fe]/", {}, "link-local"),
    ("http://[64:ff9b::a9fe:a9fe]/", {}, "link-local"),
    ("http://[2002:c0a8:1::]/", {}, "private"),
    ("http://[::1]:8080/", {}, "loopback"),
    ("http://[fe80::1]/", {}, "link-local"),
    ("http://[fd00::1]/", {}, "private"),
    ("http://100.64.0.1/", {}, "shared"),
    ("http://0.0.0.0/", {}, "unspecified"),
    ("http://0/", {}, "unspecified"),
    ("http://[::]/", {}, "unspecified"),
    ("http://224.0.0.251/", {}, "multicast"),
    ("http://240.0.0.1/", {}, "reserved"),
    ("http://2130706433/", {}, "loopback"),
    ("http://0x7f000001/", {}, "loopback"),
    ("http://0x7f.1/", {}, "loopback"),
    ("http://0x7F.0.0.1/", {}, "loopback"),
    ("http://017700000001/", {}, "loopback"),
    ("http://0177.1/", {}, "loopback"),
    ("http://127.1/", {}, "loopback"),
    ("http://127.0.0.1./", {}, "loopback"),
    ("http://0xa9.254.169.254/", {}, "link-local"),
    ("https://mixed.example.com/", {"mixed.example.com": [PUBLIC, "10.0.0.5"]}, "private"),
    ("https://rebind.example.com/", {"rebind.example.com": ["169.254.169.254"]}, "link-local"),
    ("https://cgnat.example.com/", {"cgnat.example.com": ["100.100.100.200"]}, "shared"),
]


@pytest.mark.parametrize(("url", "table", "kind"), SSRF)
async def test_non_public_addresses_are_refused_before_any_request(url: str, table: dict[str, list[str]],
                                                                   kind: str) -> None:
    receiver = Receiver()

    outcome = await channel(receiver, table).deliver(delivery(url))

    assert outcome.state == FAILED
    assert outcome.reason is not None and outcome.reason.startswith("refused:") and kind in outcome.reason
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/",
        "hooks.example.com/in",
        "http://user:secret@hooks.example.com/",
        "http:///in",
        "http://hooks.example.com:0/",
        "http://hooks.example.com:99999/",
        "http://0177.0.0.1/",  # four parts with a leading zero: httpx refuses it outright
        "http://1.2.3.4.5/",
        "http://256.1/",
        "http://09.1/",
        "http://%31%32%37.0.0.1/",
        "http://hooks.example.123/",
        "http://a_b-.example.com/",
        "https://" + "a" * 500 + ".com/",
    ],
)
async def test_urls_that_are_not_plain_http_to_a_valid_host_fail_without_a_request(url: str) -> None:
    receiver = Receiver()
    asked: list[str] = []
    hooks = WebhookChannel(SECRET, client=receiver.client, resolver=names({}, asked))

    outcome = await hooks.deliver(delivery(url))

    assert outcome.state == FAILED
    assert receiver.requests == [] and asked == []
    with pytest.raises(Invalid) as refused:
        check_url(url)
    assert refused.value.field == "url"


async def test_a_name_resolving_to_a_public_ip_is_sent_to_that_ip() -> None:
    receiver = Receiver()
    asked: list[str] = []
    hooks = WebhookChannel(SECRET, client=receiver.client, resolver=names({"hooks.example.com": [PUBLIC]}, asked))

    outcome = await hooks.deliver(delivery("https://hooks.example.com/in"))

    assert outcome.state == SENT
    assert asked == ["hooks.example.com"]  # looked up once, by us
    assert receiver.requests[0].url.host == PUBLIC
    assert receiver.requests[0].headers["host"] == "hooks.example.com"


async def test_allow_listed_loopback_is_sent_for_local_testing() -> None:
    receiver = Receiver()
    hooks = channel(receiver, {"localhost": ["127.0.0.1"]}, allow=["127.0.0.1/32"])

    literal = await hooks.deliver(delivery("http://127.0.0.1:8080/hook"))
    named = await hooks.deliver(delivery("http://localhost:8080/hook"))
    other = await hooks.deliver(delivery("http://127.0.0.2:8080/hook"))

    assert (literal.state, named.state, other.state) == (SENT, SENT, FAILED)
    assert [str(r.url) for r in receiver.requests] == ["http://127.0.0.1:8080/hook"] * 2
    assert [r.headers["host"] for r in receiver.requests] == ["127.0.0.1:8080", "localhost:8080"]


async def test_allow_list_covers_an_ipv4_mapped_spelling_of_an_allowed_address() -> None:
    receiver = Receiver()

    outcome = await channel(receiver, allow=["10.0.0.0/8"]).deliver(delivery("http://[::ffff:10.1.1.1]/"))

    assert outcome.state == SENT


async def test_public_ipv4_behind_mapped_and_nat64_prefixes_is_reachable() -> None:
    receiver = Receiver()
    hooks = channel(receiver)

    assert (await hooks.deliver(delivery("http://[::ffff:93.184.216.34]/"))).state == SENT
    assert (await hooks.deliver(delivery("http://[64:ff9b::5db8:d822]/"))).state == SENT
    assert (await hooks.deliver(delivery(f"http://{PUBLIC}/"))).state == SENT


async def test_the_system_resolver_is_used_by_default_and_localhost_is_refused() -> None:
    receiver = Receiver()
    hooks = WebhookChannel(SECRET, client=receiver.client)

    outcome = await hooks.deliver(delivery("http://localhost:8080/"))

    assert outcome.state == FAILED
    assert outcome.reason is not None and "loopback" in outcome.reason
    assert receiver.requests == []


# --- checking a URL as it is saved -------------------------------------------------------------


def test_check_url_returns_the_url_as_it_will_be_used() -> None:
    assert check_url("  https://Hooks.Example.com/in?x=1#frag ") == "https://hooks.example.com/in?x=1"
    assert check_url("https://bücher.example/hook") == "https://xn--bcher-kva.example/hook"
    assert check_url(f"http://{PUBLIC}:8080/") == f"http://{PUBLIC}:8080/"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://169.254.169.254/", "link-local"),
        ("http://100.64.0.1/", "shared"),
        ("http://10.0.0.1/", "private"),
        ("http://localhost:3000/", "loopback"),
        ("http://api.localhost/", "loopback"),
    ],
)
def test_check_url_refuses_non_public_literal_hosts_naming_the_class(url: str, kind: str) -> None:
    with pytest.raises(Invalid) as refused:
        check_url(url)

    assert refused.value.field == "url"
    assert kind in refused.value.message


def test_check_url_accepts_what_the_allow_list_permits() -> None:
    assert check_url("http://127.0.0.1:8080/hook", ["127.0.0.1/32"]) == "http://127.0.0.1:8080/hook"
    assert check_url("http://localhost:8080/hook", ["127.0.0.1/32"]) == "http://localhost:8080/hook"
    with pytest.raises(Invalid):
        check_url("http://10.0.0.1/", ["127.0.0.1/32"])


async def test_close_closes_only_a_client_the_channel_made() -> None:
    receiver = Receiver()
    lent = channel(receiver)
    own = WebhookChannel(SECRET)

    await lent.close()
    await own.close()

    assert not receiver.client.is_closed
    assert own._client.is_closed
