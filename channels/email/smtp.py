"""Outgoing mail through an SMTP relay (NURTURE_SMTP_URL=smtp://… or smtps://…): a pool of persistent
connections, paced for the whole pool and per recipient domain, that tells what each message came to
in the ledger's words (channels.base)."""

from __future__ import annotations

import asyncio
import math
import re
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from aiosmtplib import SMTP, SMTPException, SMTPHeloError, SMTPResponseException

from channels.base import Delivery
from channels.ledger import DEFERRED, FAILED, SENT, UNKNOWN, Outcome
from core.errors import Invalid
from core.logging import get_logger

StartTls = Literal["auto", "require", "off"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

MAX_RESPONSE = 1000
FIRST_PAUSE = 60.0  # seconds a recipient domain rests after a 421; doubled on each further 421
MAX_PAUSE = 3600.0
MAX_DOMAIN_BUCKETS = 10_000  # past this, idle per-domain buckets are forgotten

# The queue id in the final reply: Postfix/Sendmail "queued as 4Xyz", Exim "id=1tAbc-000123-Xy".
_QUEUE_ID = re.compile(r"(?:queued as|\bid=)\s*<?([\w.@-]+)", re.IGNORECASE)
_HOST = re.compile(r"[^\s\x00-\x1f\x7f/?#@]+")
_ENCODE_HINT = "characters such as / ? # @ : in the user name or password must be percent-encoded (e.g. %40 for @)"

log = get_logger("nurture.smtp")


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to connect, as an smtp_url says it."""

    host: str
    port: int
    implicit_tls: bool = False  # smtps://: TLS from the first byte
    starttls: StartTls = "auto"  # auto: when offered; require: never send without it; off: never
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_smtp_url(url: str) -> SmtpTarget:
    """smtp://[user:password@]host[:port][?starttls=auto|require|off] (port 25) or smtps://…host[:port]
    (implicit TLS, port 465), user and password percent-encoded. Raises Invalid (field smtp_url) with a
    message that repeats nothing of the URL but its scheme, so a password never lands in a log."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise _bad("smtp_url is not a well-formed URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        shown = f" (not {scheme}://)" if scheme.isalnum() else ""
        raise _bad(f"smtp_url must begin with smtp:// or smtps://{shown}")
    if parts.fragment or "#" in url or parts.path not in ("", "/"):
        raise _bad(f"smtp_url is scheme://user:password@host:port only; {_ENCODE_HINT}")
    try:
        port = parts.port
    except ValueError:
        raise _bad(f"smtp_url needs a port from 1 to 65535 after the host; {_ENCODE_HINT}") from None
    host = parts.hostname or ""
    if not _HOST.fullmatch(host):
        raise _bad("smtp_url needs a host, e.g. smtp://user:password@mail.example.com:587")
    if port == 0:
        raise _bad("smtp_url needs a port from 1 to 65535 after the host")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and username is None:
        raise _bad("smtp_url has a password but no user name")
    starttls: StartTls = "off" if scheme == "smtps" else "auto"
    options = parse_qsl(parts.query, keep_blank_values=True)
    if options:
        if [key for key, _ in options] != ["starttls"] or options[0][1] not in ("auto", "require", "off"):
            raise _bad(f"smtp_url takes one option, starttls=auto, require or off; {_ENCODE_HINT}")
        if scheme == "smtps":
            raise _bad("smtps:// is TLS from the first byte; starttls applies to smtp:// only")
        starttls = cast(StartTls, options[0][1])
    return SmtpTarget(
        host=host, port=port or (465 if scheme == "smtps" else 25), implicit_tls=scheme == "smtps",
        starttls=starttls, username=username, password=password,
    )


def _bad(message: str) -> Invalid:
    return Invalid(message, field="smtp_url")


class TokenBucket:
    """At most `rate` takes a second, evenly spaced (a token bucket one token deep, so no burst after
    a quiet spell). A take that comes early waits its turn, in order of arrival; nothing is dropped."""

    def __init__(self, rate: float, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf  # when the next token is there

    @property
    def idle(self) -> bool:
        return self._next <= self._clock()

    async def take(self) -> None:
        # A reservation, not a check-then-sleep: concurrent takers get successive slots without a lock.
        now = self._clock()
        at = max(self._next, now)
        self._next = at + self.interval
        if at > now:
            await self._sleep(at - now)


@dataclass
class _Pause:
    seconds: float = 0.0  # the length of the latest pause; the next 421 doubles it
    until: float = -math.inf
    response: str | None = None


class _Stale(Exception):
    """A reused connection turned out closed before MAIL FROM was accepted: nothing was sent."""


class SmtpPool:
    """The email channel over one relay. At most `connections` connections, opened when needed and
    kept for the next message; a message waits (first come, first served) for a free one.

    `rate` (messages a second for the pool) and `domain_rate` (per recipient domain) pace messages
    before they take a connection; 0 is no limit. A 421 pauses the recipient domain: its messages are
    DEFERRED at once, with `retry_after`, for 60 s, doubling on each further 421 up to an hour, back to
    60 s once a message to it is taken after the pause. `clock` and `sleep` are for tests."""

    name = "email"

    def __init__(
        self, url: str, *, connections: int = 4, rate: float = 0.0, domain_rate: float = 0.0,
        timeout: float = 30.0, tls_context: ssl.SSLContext | None = None, local_hostname: str | None = None,
        clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
    ) -> None:
        if connections < 1 or rate < 0 or domain_rate < 0 or timeout <= 0:
            raise ValueError("connections must be at least 1, rates at least 0 and the timeout positive")
        self.target = parse_smtp_url(url)
        self.timeout = timeout
        uses_tls = self.target.implicit_tls or self.target.starttls != "off"
        # One context for every connection: building one loads the system's CA certificates.
        self._tls = tls_context or (ssl.create_default_context() if uses_tls else None)
        self._local_hostname = local_hostname
        self._clock = clock
        self._sleep = sleep
        self._size = connections
        self._idle: list[SMTP | None] = [None] * connections  # None: a slot whose connection is not open
        self._waiters: deque[asyncio.Future[SMTP | None]] = deque()
        self._rate = TokenBucket(rate, clock, sleep) if rate else None
        self._domain_rate = domain_rate
        self._domain_buckets: dict[str, TokenBucket] = {}
        self._pauses: dict[str, _Pause] = {}
        self._closed = False

    async def deliver(self, delivery: Delivery) -> Outcome:
        if self._closed:
            raise RuntimeError("the SMTP pool is closed")
        domain = delivery.recipient.rpartition("@")[2].lower()
        if self._pauses and (paused := self._paused(domain)):
            return paused
        if self._domain_rate:
            await self._domain_bucket(domain).take()
        if self._rate is not None:
            await self._rate.take()
        if self._closed:
            raise RuntimeError("the SMTP pool is closed")
        smtp = await self._take()
        if self._closed:
            self._give(smtp)
            raise RuntimeError("the SMTP pool is closed")
        # A 421 may have come while this message waited for its turn.
        if self._pauses and (paused := self._paused(domain)):
            self._give(smtp)
            return paused
        kept: SMTP | None = None
        try:
            outcome, kept = await self._send(smtp, delivery, domain)
        finally:
            self._give(kept)
        if outcome.state == SENT and self._pauses:
            self._resume(domain)
        return outcome

    async def close(self) -> None:
        """Let the messages in flight finish, then QUIT every connection. `deliver` raises afterwards."""
        if self._closed:
            return
        self._closed = True
        held = [await self._take() for _ in range(self._size)]
        await asyncio.gather(*(_quit(smtp) for smtp in held if smtp is not None))

    # The connections: a slot is handed straight to the longest waiter, so no newcomer jumps the queue.

    async def _take(self) -> SMTP | None:
        if self._idle:  # only ever non-empty when nobody waits
            return self._idle.pop()  # the most recently used first: the others may idle out unharmed
        waiter: asyncio.Future[SMTP | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot, then cancelled: pass it on
                self._give(waiter.result())
            raise

    def _give(self, smtp: SMTP | None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(smtp)
                return
        self._idle.append(smtp)

    # One message.

    async def _send(self, smtp: SMTP | None, delivery: Delivery, domain: str) -> tuple[Outcome, SMTP | None]:
        """The transaction on `smtp`, opened first when it is not connected. Returns the outcome and the
        connection when it may be reused; a connection in an unknown state is closed."""
        reused = smtp is not None and smtp.is_connected
        try:
            if not reused:
                opened = await self._open(domain)
                if isinstance(opened, Outcome):
                    return opened, None
                smtp = opened
            assert smtp is not None
            try:
                outcome = await self._transact(smtp, delivery, domain, reused)
            except _Stale:
                # The server dropped the idle connection; nothing was taken, so one fresh try is safe.
                opened = await self._open(domain)
                if isinstance(opened, Outcome):
                    return opened, None
                smtp = opened
                outcome = await self._transact(smtp, delivery, domain, False)
        except BaseException:  # cancelled mid-conversation: the connection cannot be trusted
            if smtp is not None:
                smtp.close()
            raise
        return outcome, smtp if smtp.is_connected else None

    async def _open(self, domain: str) -> SMTP | Outcome:
        target = self.target
        smtp = SMTP(
            hostname=target.host, port=target.port, use_tls=target.implicit_tls,
            start_tls=False if target.starttls == "off" else None, tls_context=self._tls,
            local_hostname=self._local_hostname, timeout=self.timeout,
        )
        stage = "connection"
        try:
            await smtp.connect()  # greeting; EHLO and STARTTLS when offered (unless off)
            if target.starttls == "require" and smtp.get_transport_info("sslcontext") is None:
                smtp.close()
                # DEFERRED, not FAILED: the message is fine; the relay (or someone in between stripping
                # STARTTLS) is not, and the message should go once that is mended.
                return Outcome(DEFERRED, reason="the server does not offer STARTTLS, which smtp_url requires")
            if smtp.is_ehlo_or_helo_needed:
                try:
                    await smtp.ehlo()
                except SMTPHeloError:
                    await smtp.helo()
            if target.username is not None:
                stage = "AUTH"  # only ever after STARTTLS when the URL requires it: checked above
                await smtp.login(target.username, target.password or "")
        except SMTPResponseException as exc:
            smtp.close()
            return self._refused(exc.code, exc.message, stage, domain)
        except (SMTPException, OSError) as exc:  # refused, timed out, reset, TLS handshake or certificate
            smtp.close()
            return Outcome(DEFERRED, reason=_short(f"{stage} to {target.host}:{target.port} failed: {exc}"))
        except BaseException:
            smtp.close()
            raise
        self._local_hostname = smtp.local_hostname  # aiosmtplib looks up the FQDN once, not per connection
        return smtp

    async def _transact(self, smtp: SMTP, delivery: Delivery, domain: str, reused: bool) -> Outcome:
        sender, recipient, raw = delivery.envelope_from, delivery.recipient, delivery.raw
        options = [f"SIZE={len(raw)}"] if "size" in smtp.esmtp_extensions else []
        encoding = "ascii"
        if not (sender.isascii() and recipient.isascii()):
            if "smtputf8" not in smtp.esmtp_extensions:
                return Outcome(FAILED, reason="the server takes no non-ASCII address (no SMTPUTF8)")
            options.append("SMTPUTF8")
            encoding = "utf-8"
        stage = "MAIL FROM"
        try:
            await smtp.mail(sender, options=options, encoding=encoding)
            stage = "RCPT TO"
            await smtp.rcpt(recipient, encoding=encoding)
        except SMTPResponseException as exc:
            outcome = self._refused(exc.code, exc.message, stage, domain)
            await _after_refusal(smtp, exc.code)
            return outcome
        except ValueError:  # aiosmtplib checks an address before sending it: nothing went out
            await _reset(smtp)
            return Outcome(FAILED, reason=f"the {stage} address cannot go on an SMTP command line")
        except (SMTPException, OSError) as exc:
            smtp.close()
            if reused and stage == "MAIL FROM" and isinstance(exc, ConnectionError):
                raise _Stale from exc
            return Outcome(DEFERRED, reason=_short(f"connection lost at {stage}, before the message was sent: {exc}"))
        try:
            reply = await smtp.data(raw)
        except SMTPResponseException as exc:
            if 400 <= exc.code < 600:  # a definite answer to DATA or to the end of the message
                outcome = self._refused(exc.code, exc.message, "DATA", domain)
                await _after_refusal(smtp, exc.code)
                return outcome
            smtp.close()
            return Outcome(UNKNOWN, response=_reply(exc.code, exc.message),
                           reason="no valid reply after the message was sent; it may have arrived")
        except (SMTPException, OSError):
            # The body may have reached the server, and a reply may have been lost: never send it again.
            smtp.close()
            return Outcome(UNKNOWN, reason="no reply after the message was sent; it may have arrived")
        found = _QUEUE_ID.search(reply.message)
        return Outcome(SENT, response=_reply(reply.code, reply.message),
                       provider_id=found.group(1).rstrip(".") if found else None)

    # What a refusal says, and the pauses that 421s start.

    def _refused(self, code: int, message: str, stage: str, domain: str) -> Outcome:
        response = _reply(code, message)
        if code == 421:
            wait = self._pause(domain, response)
            return Outcome(DEFERRED, response=response, retry_after=wait,
                           reason=f"the server asked to slow down (421 at {stage}); {domain} paused")
        if 400 <= code < 500:
            return Outcome(DEFERRED, response=response, reason=f"{stage} refused for now ({code})")
        if 500 <= code < 600:
            return Outcome(FAILED, response=response, reason=f"{stage} refused ({code})")
        return Outcome(DEFERRED, response=response, reason=f"unexpected reply at {stage}, before the message was sent")

    def _pause(self, domain: str, response: str) -> float:
        now = self._clock()
        pause = self._pauses.setdefault(domain, _Pause())
        # Messages that were already under way meet the same 421: one pause, not one doubling each.
        if pause.until <= now:
            pause.seconds = min(pause.seconds * 2, MAX_PAUSE) if pause.seconds else FIRST_PAUSE
            pause.until = now + pause.seconds
            log.warning("smtp domain paused", domain=domain, seconds=pause.seconds, response=response)
        pause.response = response
        return pause.until - now

    def _paused(self, domain: str) -> Outcome | None:
        pause = self._pauses.get(domain)
        if pause is None or (left := pause.until - self._clock()) <= 0:
            return None
        return Outcome(DEFERRED, response=pause.response, retry_after=left,
                       reason=f"deliveries to {domain} are paused after a 421")

    def _resume(self, domain: str) -> None:
        # Only a success after the pause counts: one already under way when the 421 came proves little.
        pause = self._pauses.get(domain)
        if pause is not None and pause.until <= self._clock():
            del self._pauses[domain]

    def _domain_bucket(self, domain: str) -> TokenBucket:
        bucket = self._domain_buckets.get(domain)
        if bucket is None:
            if len(self._domain_buckets) >= MAX_DOMAIN_BUCKETS:
                for idle in [name for name, known in self._domain_buckets.items() if known.idle]:
                    del self._domain_buckets[idle]
            bucket = self._domain_buckets[domain] = TokenBucket(self._domain_rate, self._clock, self._sleep)
        return bucket


async def _after_refusal(smtp: SMTP, code: int) -> None:
    """Ready a connection for the next message after a refused transaction, or close it."""
    if code == 421 or not 400 <= code < 600:  # 421: the server is closing it; other codes: out of step
        smtp.close()
    else:
        await _reset(smtp)


async def _reset(smtp: SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.rset()
    except (SMTPException, OSError):
        smtp.close()


async def _quit(smtp: SMTP) -> None:
    try:
        await smtp.quit()
    except (SMTPException, OSError):
        pass
    finally:
        smtp.close()


def _reply(code: int, message: str) -> str:
    return f"{code} {message}"[:MAX_RESPONSE]


def _short(reason: str) -> str:
    return reason[:200]
