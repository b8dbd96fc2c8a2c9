"""Real ``redis-server`` instances on free loopback ports, started and stopped by the tests.

Tests that need one are skipped, with a message saying so, only when no
``redis-server`` binary exists (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
)
_START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process: ``start``, ``stop`` (kill), ``pause``/``resume`` (SIGSTOP)."""

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="klayengo-redis-")

    @property
    def url(self) -> str:
        auth = f"default:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
            "--loglevel",
            "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    reply = sock.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def command(self, *args: str) -> bytes:
        """Send one inline command and return the raw reply (for FLUSHALL and the like)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            if self.password:
                sock.sendall(f"AUTH {self.password}\r\n".encode())
                sock.recv(64)
            sock.sendall((" ".join(args) + "\r\n").encode())
            return sock.recv(4096)


def _require_binary() -> None:
    if REDIS_SERVER is None:
        pytest.skip(
            "no redis-server binary on PATH: install the redis-server package "
            "(.ci/run does) to run the Redis backend tests"
        )


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One server for the tests that do not stop it (each uses its own key prefix)."""
    _require_binary()
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(shared_redis: RedisServer) -> str:
    return shared_redis.url


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own, so tests on the shared server never see each other."""
    return f"kt:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, which it may stop, pause and restart."""
    _require_binary()
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.resume()
        server.stop()
