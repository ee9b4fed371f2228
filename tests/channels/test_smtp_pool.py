"""The SMTP relay adapter against real aiosmtpd servers: what arrives, what each reply comes to in the
ledger, connections reused and replaced, STARTTLS and AUTH, the 421 pause and the pacing."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from channels.base import Delivery
from channels.email.smtp import SmtpPool, TokenBucket, parse_smtp_url
from channels.ledger import DEFERRED, FAILED, SENT, UNKNOWN
from core.errors import Invalid

PASSWORD = "s3cr#t/p@ss:w%rd"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    over_tls: bool


class Relay:
    """aiosmtpd handler that takes mail like a relay, with the refusals the tests need, chosen by the
    recipient: busy@ 450, gone@ 550, @throttled.example 421 (while `throttle`), spam@ 554 at the end of
    DATA, slow@ no answer at the end of DATA, plain@ a 250 without a queue id."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.rcpts: list[str] = []
        self.sessions: set[Any] = set()  # client addresses that said EHLO: one per connection
        self.servers: list[Any] = []
        self.transactions: Counter[Any] = Counter()
        self.quits = 0
        self.throttle = True
        self.drop_next_reused_mail = False

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.sessions.add(session.peer)
        self.servers.append(server)
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.drop_next_reused_mail and self.transactions[session.peer]:
            # The server went away while the connection idled: no reply, the connection just ends.
            self.drop_next_reused_mail = False
            server.transport.close()
            await asyncio.Event().wait()  # cancelled with the connection
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        self.rcpts.append(address)
        local, _, domain = address.partition("@")
        if domain == "throttled.example" and self.throttle:
            return "421 4.7.0 try later"
        if local == "busy":
            return "450 4.2.1 mailbox busy"
        if local == "gone":
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        local = envelope.rcpt_tos[0].partition("@")[0]
        if local == "slow":
            await asyncio.Event().wait()  # never set: the end of DATA is never answered
        if local == "spam":
            return "554 5.7.1 message refused as spam"
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                      session.ssl is not None))
        self.transactions[session.peer] += 1
        if local == "plain":
            return "250 Message accepted"
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"


class Accounts:
    """aiosmtpd authenticator: one account, `mailer` with PASSWORD; remembers the mechanisms tried."""

    def __init__(self) -> None:
        self.mechanisms: list[str] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        self.mechanisms.append(mechanism)
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            b"mailer", PASSWORD.encode()
        )
        return AuthResult(success=ok, handled=False)


class FakeTime:
    """A clock that moves only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, until)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start a relay: serve(handler, **aiosmtpd SMTP options) -> port; all stopped after the test."""
    controllers: list[Controller] = []

    def start(handler: Any, **options: Any) -> int:
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        controllers.append(controller)
        return int(controller.port)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def relay() -> Relay:
    return Relay()


@pytest.fixture
def relay_url(serve: Any, relay: Relay) -> str:
    return f"smtp://127.0.0.1:{serve(relay)}"


@pytest.fixture
async def pools() -> AsyncIterator[list[SmtpPool]]:
    opened: list[SmtpPool] = []
    yield opened
    for pool in opened:
        await pool.close()


def message(n: int, recipient: str = "lead@example.org") -> Delivery:
    raw = (
        f"From: News <news@company.example>\r\nTo: {recipient}\r\nSubject: Issue {n}\r\n"
        f"Message-ID: <{n}@company.example>\r\n\r\nHello,\r\n.a line that starts with a dot\r\n"
        + "x" * 70 + "\r\n"
    ).encode()
    return Delivery(uuid.uuid4(), recipient, raw=raw, envelope_from=f"bounce-{n}@company.example")


async def test_twenty_messages_over_two_connections_arrive_whole_with_their_envelopes(
    relay: Relay, relay_url: str, pools: list[SmtpPool]
) -> None:
    pool = SmtpPool(relay_url, connections=2)
    pools.append(pool)
    sent = [message(n, f"lead{n}@example.org") for n in range(20)]

    outcomes = await asyncio.gather(*(pool.deliver(d) for d in sent))

    assert [o.state for o in outcomes] == [SENT] * 20
    assert len(relay.sessions) <= 2
    got = {r.rcpt_tos[0]: r for r in relay.received}
    assert len(relay.received) == 20
    for delivery in sent:
        arrived = got[delivery.recipient]
        assert arrived.content == delivery.raw
        assert arrived.mail_from == delivery.envelope_from
        assert arrived.rcpt_tos == [delivery.recipient]


async def test_sent_outcome_carries_the_final_reply_and_the_queue_id(
    relay: Relay, relay_url: str, pools: list[SmtpPool]
) -> None:
    pool = SmtpPool(relay_url)
    pools.append(pool)

    queued = await pool.deliver(message(1))
    plain = await pool.deliver(message(2, "plain@example.org"))

    assert queued.state == SENT
    assert queued.response == "250 2.0.0 Ok: queued as Q1"
    assert queued.provider_id == "Q1"
    assert plain.state == SENT
    assert plain.response == "250 Message accepted"
    assert plain.provider_id is None


async def test_waiting_messages_take_the_connection_in_the_order_they_came(
    relay: Relay, relay_url: str, pools: list[SmtpPool]
) -> None:
    pool = SmtpPool(relay_url, connections=1)
    pools.append(pool)
    sent = [message(n, f"lead{n}@example.org") for n in range(30)]

    await asyncio.gather(*(pool.deliver(d) for d in sent))

    assert [r.rcpt_tos[0] for r in relay.received] == [d.recipient for d in sent]
    assert len(relay.sessions) == 1


async def test_busy_mailbox_4xx_is_deferred_and_the_connection_goes_on(
    relay: Relay, relay_url: str, pools: list[SmtpPool]
) -> None:
    pool = SmtpPool(relay_url, connections=1)
    pools.append(pool)

    busy = await pool.deliver(message(1, "busy@example.org"))
    after = await pool.deliver(message(2))

    assert busy.state == DEFERRED
    assert busy.response == "450 4.2.1 mailbox busy"
    assert busy.retry_after is None
    assert busy.reason and "RCPT TO" in busy.reason
    assert after.state == SENT
    assert len(relay.sessions) == 1  # RSET, not a new connection
    assert [r.rcpt_tos for r in relay.received] == [["lead@example.org"]]


async def test_unknown_user_5xx_and_a_refused_body_are_failed(
    relay: Relay, relay_url: str, pools: list[SmtpPool]
) -> None:
    pool = SmtpPool(relay_url, connections=1)
    pools.append(pool)

    gone = await pool.deliver(message(1, "gone@example.org"))
    spam = await pool.deliver(message(2, "spam@example.org"))
    after = await pool.deliver(message(3))

    assert (gone.state, gone.response) == (FAILED, "550 5.1.1 no such user")
    assert (spam.state, spam.response) == (FAILED, "554 5.7.1 message refused as spam")
    assert after.state == SENT
    assert len(relay.received) == 1


async def test_421_pauses_the_domain_without_asking_the_server_while_others_still_go(
    relay: Relay, relay_url: str, pools: list[SmtpPool]
) -> None:
    clock = FakeTime()
    pool = SmtpPool(relay_url, clock=clock, sleep=clock.sleep)
    pools.append(pool)

    first = await pool.deliver(message(1, "ann@throttled.example"))
    asked = len(relay.rcpts)
    clock.now += 10
    held = await pool.deliver(message(2, "bob@throttled.example"))
    elsewhere = await pool.deliver(message(3, "carl@open.example"))

    assert first.state == DEFERRED
    assert first.response == "421 4.7.0 try later"
    assert first.retry_after == 60
    assert held.state == DEFERRED
    assert held.retry_after == pytest.approx(50)
    assert held.response == "421 4.7.0 try later"
    assert relay.rcpts[asked:] == ["carl@open.example"]  # bob never reached the server
    assert elsewhere.state == SENT

    clock.now += 51  # the pause is over; the server still says 421: twice as long
    again = await pool.deliver(message(4, "bob@throttled.example"))
    assert (again.state, again.retry_after) == (DEFERRED, 120)

    clock.now += 121
    relay.throttle = False
    assert (await pool.deliver(message(5, "bob@throttled.example"))).state == SENT
    relay.throttle = True
    reset = await pool.deliver(message(6, "dan@throttled.example"))
    assert (reset.state, reset.retry_after) == (DEFERRED, 60)  # a success started the count afresh


async def test_end_of_data_never_answered_is_unknown_and_not_sent_again(
    relay: Relay, relay_url: str, pools: list[SmtpPool]
) -> None:
    pool = SmtpPool(relay_url, connections=1, timeout=0.5)
    pools.append(pool)

    lost = await pool.deliver(message(1, "slow@example.org"))
    after = await pool.deliver(message(2))

    assert lost.state == UNKNOWN
    assert lost.reason and "may have arrived" in lost.reason
    assert [r for r in relay.rcpts if r.startswith("slow@")] == ["slow@example.org"]  # tried once
    assert after.state == SENT
    assert len(relay.sessions) == 2  # the silent connection was not reused


async def test_non_ascii_address_goes_with_smtputf8_and_fails_where_the_server_has_none(
    serve: Any, pools: list[SmtpPool]
) -> None:
    relay, old = Relay(), Relay()
    modern = SmtpPool(f"smtp://127.0.0.1:{serve(relay)}")
    dated = SmtpPool(f"smtp://127.0.0.1:{serve(old, enable_SMTPUTF8=False)}")
    pools.extend([modern, dated])

    taken = await modern.deliver(message(1, "лид@пример.рф"))
    refused = await dated.deliver(message(2, "лид@пример.рф"))

    assert taken.state == SENT
    assert [r.rcpt_tos for r in relay.received] == [["лид@пример.рф"]]
    assert refused.state == FAILED
    assert refused.reason and "SMTPUTF8" in refused.reason
    assert old.rcpts == []


async def test_server_down_is_deferred(pools: list[SmtpPool]) -> None:
    port = free_port()
    pool = SmtpPool(f"smtp://127.0.0.1:{port}", timeout=2)
    pools.append(pool)

    outcome = await pool.deliver(message(1))

    assert outcome.state == DEFERRED
    assert outcome.reason and f"127.0.0.1:{port}" in outcome.reason


async def test_connection_dropped_at_mail_from_after_idling_is_replaced_and_the_message_sent_once(
    relay: Relay, relay_url: str, pools: list[SmtpPool]
) -> None:
    pool = SmtpPool(relay_url, connections=1)
    pools.append(pool)
    assert (await pool.deliver(message(1))).state == SENT

    relay.drop_next_reused_mail = True
    outcome = await pool.deliver(message(2, "second@example.org"))

    assert outcome.state == SENT
    assert [r.rcpt_tos for r in relay.received] == [["lead@example.org"], ["second@example.org"]]
    assert len(relay.sessions) == 2


async def test_idle_connection_the_server_closed_is_replaced_and_the_message_sent_once(
    serve: Any, pools: list[SmtpPool]
) -> None:
    relay = Relay()
    controller_port = serve(relay)
    pool = SmtpPool(f"smtp://127.0.0.1:{controller_port}", connections=1)
    pools.append(pool)
    assert (await pool.deliver(message(1))).state == SENT

    async def hang_up() -> None:  # on the server's loop: it reads nothing more once the transport closes
        for server in relay.servers:
            if server.transport is not None:
                server.transport.close()
        await asyncio.sleep(0)  # the socket is closed on the next turn of the loop

    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(hang_up(), relay.servers[0].loop))
    outcome = await pool.deliver(message(2, "second@example.org"))

    assert outcome.state == SENT
    assert [r.rcpt_tos for r in relay.received] == [["lead@example.org"], ["second@example.org"]]


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.pem", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return cert_path, key_path


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(the relay's context, a client context that trusts the relay's self-signed certificate)"""
    cert, key = self_signed(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def login_url(port: int, password: str = PASSWORD, starttls: str = "require") -> str:
    return f"smtp://mailer:{quote(password, safe='')}@127.0.0.1:{port}?starttls={starttls}"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_starttls_and_auth_deliver_over_tls(
    mechanism: str, serve: Any, tls: tuple[ssl.SSLContext, ssl.SSLContext], pools: list[SmtpPool]
) -> None:
    relay, accounts = Relay(), Accounts()
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    port = serve(relay, tls_context=tls[0], require_starttls=True, authenticator=accounts,
                 auth_require_tls=True, auth_exclude_mechanism=[other])
    pool = SmtpPool(login_url(port), tls_context=tls[1])
    pools.append(pool)

    outcome = await pool.deliver(message(1))

    assert outcome.state == SENT
    assert accounts.mechanisms == [mechanism]
    assert [r.over_tls for r in relay.received] == [True]


async def test_wrong_password_is_failed_with_535_and_the_password_is_nowhere(
    serve: Any, tls: tuple[ssl.SSLContext, ssl.SSLContext], pools: list[SmtpPool]
) -> None:
    relay = Relay()
    port = serve(relay, tls_context=tls[0], require_starttls=True, authenticator=Accounts(), auth_require_tls=True)
    wrong = "not-the-Pa55word"
    pool = SmtpPool(login_url(port, wrong, starttls="auto"), tls_context=tls[1])
    pools.append(pool)

    outcome = await pool.deliver(message(1))

    assert outcome.state == FAILED
    assert outcome.response and outcome.response.startswith("535")
    assert outcome.reason and "AUTH" in outcome.reason
    assert wrong not in repr(outcome) and quote(wrong, safe="") not in repr(outcome)
    assert relay.received == []


async def test_required_starttls_missing_defers_and_never_sends_the_password(
    serve: Any, pools: list[SmtpPool]
) -> None:
    relay, accounts = Relay(), Accounts()
    port = serve(relay, authenticator=accounts, auth_require_tls=False)  # offers AUTH in the clear
    pool = SmtpPool(login_url(port))
    pools.append(pool)

    outcome = await pool.deliver(message(1))

    # DEFERRED: the message is fine and goes once the relay offers STARTTLS again.
    assert outcome.state == DEFERRED
    assert outcome.reason == "the server does not offer STARTTLS, which smtp_url requires"
    assert accounts.mechanisms == []
    assert relay.rcpts == []


async def test_close_says_quit_and_deliver_afterwards_raises(
    relay: Relay, relay_url: str
) -> None:
    pool = SmtpPool(relay_url, connections=3)
    await asyncio.gather(*(pool.deliver(message(n)) for n in range(6)))

    await pool.close()

    assert relay.quits == len(relay.sessions) == 3
    with pytest.raises(RuntimeError):
        await pool.deliver(message(7))


async def test_token_bucket_spaces_takes_at_the_rate() -> None:
    clock = FakeTime()
    bucket = TokenBucket(5, clock, clock.sleep)

    for _ in range(11):
        await bucket.take()
    assert clock.now == pytest.approx(2.0)

    clock.now += 100  # a quiet spell earns no burst
    start = clock.now
    await asyncio.gather(*(bucket.take() for _ in range(11)))
    assert clock.now - start == pytest.approx(2.0)


async def test_pool_rate_paces_all_messages_and_domain_rate_each_domain(
    relay: Relay, relay_url: str, pools: list[SmtpPool]
) -> None:
    clock = FakeTime()
    paced = SmtpPool(relay_url, rate=5, clock=clock, sleep=clock.sleep)
    pools.append(paced)
    outcomes = [await paced.deliver(message(n)) for n in range(11)]
    assert {o.state for o in outcomes} == {SENT}
    assert clock.now == pytest.approx(2.0)

    clock = FakeTime()
    per_domain = SmtpPool(relay_url, domain_rate=2, clock=clock, sleep=clock.sleep)
    pools.append(per_domain)
    for n in range(3):  # a and b alternate: each domain is paced on its own
        await per_domain.deliver(message(n, f"x{n}@a.example"))
        await per_domain.deliver(message(n, f"y{n}@b.example"))
    assert clock.now == pytest.approx(1.0)
    assert len(relay.received) == 17


def test_smtp_urls_read_as_their_parts() -> None:
    plain = parse_smtp_url("smtp://mail.example.com")
    assert (plain.host, plain.port, plain.implicit_tls, plain.starttls) == ("mail.example.com", 25, False, "auto")
    assert plain.username is None and plain.password is None

    login = parse_smtp_url(f"smtp://u%40corp:{quote(PASSWORD, safe='')}@Relay.Example.com:587?starttls=require")
    assert (login.host, login.port, login.starttls) == ("relay.example.com", 587, "require")
    assert (login.username, login.password) == ("u@corp", PASSWORD)
    assert PASSWORD not in repr(login)

    implicit = parse_smtp_url("smtps://mailer:pw@smtp.example.com")
    assert (implicit.port, implicit.implicit_tls, implicit.starttls) == (465, True, "off")
    assert parse_smtp_url("smtp://host?starttls=off").starttls == "off"


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com",
        "smtp://",
        "smtp://user:hunter2@",
        "smtp://mail.example.com:99999",
        "smtp://mail.example.com:0",
        "smtp://user:hunter2@mail.example.com:abc",
        "smtp://mail.example.com?starttls=maybe",
        "smtp://mail.example.com?tls=1",
        "smtp://:hunter2@mail.example.com",
        "smtps://mail.example.com?starttls=require",
        "smtp://user:hun#ter2@mail.example.com",
        "smtp://user:hun/ter2@mail.example.com",
        "smtp://user:hun?ter2@mail.example.com",
        "smtp://mail.example.com/path",
    ],
)
def test_bad_smtp_url_is_invalid_on_smtp_url_without_the_password(url: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_smtp_url(url)
    assert caught.value.field == "smtp_url"
    assert caught.value.message
    assert "hunter2" not in caught.value.message and "ter2" not in caught.value.message
    with pytest.raises(Invalid):
        SmtpPool(url)
