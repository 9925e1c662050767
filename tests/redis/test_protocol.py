"""The wire format: the packers (hiredis's when installed) and the pure-Python reply parser (used
when hiredis is absent)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from qtasks.asyncio import QueueTasks
from qtasks.testing import running_worker
from qtasks_redis import connection
from qtasks_redis.connection import ProtocolError, PyReader, pack, packer
from redis.exceptions import ResponseError

REPLIES = (
    b"+OK\r\n-NOSCRIPT No matching script\r\n:42\r\n:-7\r\n$5\r\nhe\r\no\r\n$0\r\n\r\n$-1\r\n"
    b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n*0\r\n$-1\r\n*-1\r\n"
)
EXPECTED = [b"OK", "NOSCRIPT No matching script", 42, -7, b"he\r\no", b"", None, [b"a", [1, []], None], None]


def parse_all(reader: PyReader, data: bytes, chunk: int) -> list[object]:
    out: list[object] = []
    for i in range(0, len(data), chunk):
        reader.feed(data[i : i + chunk])
        while (reply := reader.gets()) is not False:
            out.append(str(reply) if isinstance(reply, ResponseError) else reply)
    return out


@pytest.mark.parametrize("chunk", [1, 2, 7, len(REPLIES)])
def test_pure_python_reader_parses_every_reply_type_in_any_chunking(chunk: int) -> None:
    assert parse_all(PyReader(), REPLIES, chunk) == EXPECTED


def test_pure_python_reader_agrees_with_hiredis() -> None:
    hiredis = pytest.importorskip("hiredis")  # an optional extra: compared when it is installed
    theirs = hiredis.Reader(protocolError=ProtocolError, replyError=ResponseError)
    assert parse_all(theirs, REPLIES, 3) == EXPECTED


def test_pure_python_reader_rejects_what_is_not_resp2() -> None:
    reader = PyReader()
    reader.feed(b"?what\r\n")
    with pytest.raises(ProtocolError):
        reader.gets()


@pytest.mark.parametrize("packs", [pack, packer()], ids=["python", "hiredis"])
def test_pack_writes_the_redis_protocol(packs: Callable[[list[tuple[Any, ...]]], bytes]) -> None:
    assert packs([("SET", b"k\r\n", 5, 1.5), ("PING",)]) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n$3\r\n1.5\r\n*1\r\n$4\r\nPING\r\n"
    )
    odd = ("EVALSHA", "f" * 40, 2, "ü", b"\x00\xff", -3, 10**19, 0.1, 1e20)
    assert packs([odd]) == pack([odd])
    for wrong in (None, True):
        with pytest.raises(TypeError):
            packs([("SET", wrong)])


@pytest.mark.redis
async def test_tasks_run_end_to_end_without_hiredis(redis_app_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "reply_reader", PyReader)
    monkeypatch.setattr(connection, "packer", lambda: pack)
    app = QueueTasks(broker=redis_app_url)

    @app.task
    async def join(*parts: str) -> str:
        return "-".join(parts)

    async with app, running_worker(app):
        assert isinstance(app.broker.client._pipe._reader, PyReader) and app.broker.client._pipe._pack is pack
        assert (await app.add_task("join", "a", "b", timeout=10)).returning == "a-b"
        records = [await app.add_task("join", str(i)) for i in range(200)]
        assert [(await app.wait(r.id, 10)).returning for r in records] == [str(i) for i in range(200)]


@pytest.mark.parametrize(
    "reply", [b"-LOADING Valkey is loading the dataset in memory\r\n", b"-BUSY script running\r\n"]
)
async def test_a_server_that_is_not_ready_is_an_outage_not_an_error(reply: bytes) -> None:
    import asyncio
    import socket

    ours, server = socket.socketpair()
    loop = asyncio.get_running_loop()
    _, pipe = await loop.create_connection(lambda: connection.Pipe("redis://test"), sock=ours)
    answer = pipe.send("PING")
    await asyncio.sleep(0.05)
    assert server.recv(64) == b"*1\r\n$4\r\nPING\r\n"
    server.sendall(reply)
    with pytest.raises(connection.RedisUnavailable, match="is not ready"):
        await asyncio.wait_for(answer, 5)  # retried by the worker and at start-up, like a lost server
    later = pipe.send("PING")
    server.sendall(b"-ERR wrong\r\n")
    with pytest.raises(ResponseError, match="ERR wrong"):  # other error replies stay errors
        await asyncio.wait_for(later, 5)
    server.close()


async def test_the_first_two_writes_of_a_turn_leave_at_once_and_the_rest_at_its_end() -> None:
    import asyncio
    import socket

    ours, server = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, pipe = await loop.create_connection(lambda: connection.Pipe("redis://test"), sock=ours)
    writes: list[bytes] = []
    write = transport.write
    transport.write = lambda data: (writes.append(bytes(data)), write(data))[1]  # type: ignore[method-assign]
    group = [(("SET", "k", "v"), loop.create_future(), 0, None), (("GET", "k"), loop.create_future(), 0, None)]
    pipe.resend(*group)  # a group: one write
    pipe.send("PING")
    assert writes == [pack([("SET", "k", "v"), ("GET", "k")]), pack([("PING",)])]
    pipe.send("ECHO", "a")
    pipe.send("ECHO", "b")
    assert len(writes) == 2  # held until the end of the turn ...
    await asyncio.sleep(0)
    assert writes[2:] == [pack([("ECHO", "a"), ("ECHO", "b")])]  # ... then together
    pipe.send("PING")  # a new turn: at once again
    assert writes[3:] == [pack([("PING",)])]
    pipe.close()
    server.close()
