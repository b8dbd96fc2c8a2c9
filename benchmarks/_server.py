"""A minimal keep-alive HTTP/1.1 server for the loopback benchmarks.

Runs in its own process (``python -m benchmarks._server``), prints its port on stdout,
answers every request with a fixed 200 response (``Content-Length: 2``, body ``ok``)
and sets TCP_NODELAY on each connection, so no response waits for a delayed ACK.
Deliberately tiny so that the server is never the bottleneck of the comparison.
It only understands requests without a body (GET/HEAD), which is all the benchmarks send.

On Linux with two or more CPUs the server is pinned to the last CPU and the benchmark
process to the others while the server runs: left to the scheduler, the two processes
sometimes share a core, and a run's throughput then swings by a fifth from one run to
the next whichever client it measures.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    b"Cache-Control: no-store\r\n\r\nok"
)


class _Protocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(RESPONSE)


async def _main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


@contextmanager
def server_process() -> Iterator[str]:
    """Start the server in a child process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._server"], stdout=subprocess.PIPE, text=True
    )
    restore = _pin(proc.pid)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if restore is not None:
            os.sched_setaffinity(0, restore)


def _pin(server: int) -> set[int] | None:
    """Pin ``server`` to the last CPU and this process to the others; returns this
    process's CPUs before, or None when there is nothing to pin (not Linux, one CPU)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    mine = os.sched_getaffinity(0)
    if len(mine) < 2:
        return None
    last = max(mine)
    os.sched_setaffinity(server, {last})
    os.sched_setaffinity(0, mine - {last})
    return mine


def sync_rate(client: Any, url: str, n: int) -> float:
    """Requests/s of ``n`` sequential GETs of ``url`` through an httpx-like client."""
    start = time.perf_counter()
    for _ in range(n):
        client.get(url)
    return n / (time.perf_counter() - start)


async def async_rate(client: Any, url: str, n: int, concurrency: int) -> float:
    """Requests/s of ``n`` GETs of ``url`` by ``concurrency`` tasks sharing ``client``.

    Lives here, with no klayengo import, so that the sniffio probe can run it in a
    child process where ``sniffio`` is blocked (klayengo itself imports sniffio).
    """
    import anyio

    per_task = n // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            await client.get(url)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return per_task * concurrency / (time.perf_counter() - start)


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        asyncio.run(_main())
