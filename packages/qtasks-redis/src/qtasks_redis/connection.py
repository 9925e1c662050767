"""One Redis connection as an asyncio protocol: commands out at once, replies matched in order.

redis-py opens the connection and does the handshake (TCP, TLS or Unix socket; AUTH, SELECT),
then :func:`open_pipe` takes its transport over with a :class:`Pipe`. From then on the first
two writes of an event-loop turn leave at once (the server starts on them while the caller
goes on; a submit is two: its message, then its record), and whatever else is issued in the
same turn, by any task, is written together at the start of the next turn (one system call
however many). Replies are parsed as they arrive
(hiredis when installed, else a small RESP2 parser) and handed to the waiting futures in order,
right in ``data_received``. No task of the client's own sits between a caller and the socket:
that is what keeps the framework close to the raw client.

Replies that nobody waits for (pub/sub messages) go to ``on_push``. When the connection is lost
every command in flight fails with :class:`RedisUnavailable`: whether it ran is unknown, so the
caller decides (the worker retries idempotent settlements; a producer sees the error).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from qtasks.errors import QtasksError
from redis.exceptions import ResponseError

Command = tuple[Any, ...]
Convert = Callable[[Any], Any] | None
#: A command in flight: its arguments, the future for its reply, how often it was sent before,
#: and what turns the reply into the future's result (None: the reply as it is).
Entry = tuple[Command, "asyncio.Future[Any]", int, Convert]


def part(reply: Any) -> Any:
    """The ``convert`` of each command of a group (:meth:`RedisClient.group`) but the last: its
    reply settles the group's future only if it is an error."""
    return reply


#: Writes an event-loop turn makes at once (see the module docstring); the rest wait for its end.
EAGER_WRITES = 2

#: Error replies of a server that is up but not serving yet (or no longer): retried as outages.
TRANSIENT = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


class RedisUnavailable(QtasksError, ConnectionError):
    """Redis cannot be reached (or refused us); the message names the URL, password masked."""


class ProtocolError(Exception):
    """The server sent something that is not RESP2."""


def pack(commands: Sequence[Command]) -> bytes:
    """Commands in the Redis protocol; arguments are bytes, str, int or float.

    redis-py's packer handles more types and options, and costs as much as the rest of a
    command's client-side work; this one is all this package needs (and hiredis's, in C, when
    installed: see :func:`packer`).
    """
    out: list[bytes] = []
    for args in commands:
        out.append(b"*%d\r\n" % len(args))
        for arg in args:
            kind = type(arg)
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode()
            elif kind is int:
                data = b"%d" % arg
            elif kind is float:
                data = repr(arg).encode()
            else:
                raise TypeError(f"cannot send {kind.__name__} to Redis")
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def packer() -> Callable[[Sequence[Command]], bytes]:
    try:
        from hiredis import pack_command
    except ImportError:
        return pack
    return lambda commands: b"".join([pack_command(args) for args in commands])


class _Incomplete(Exception):
    pass


class PyReader:
    """A RESP2 reply parser with hiredis.Reader's interface (``feed``; ``gets`` -> reply or False)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def gets(self) -> Any:
        try:
            reply, self._pos = self._parse(self._pos)
        except _Incomplete:
            return False
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        return reply

    def _parse(self, pos: int) -> tuple[Any, int]:
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        kind, line, pos = buf[pos], bytes(buf[pos + 1 : end]), end + 2
        if kind == 0x2B:  # + simple string
            return line, pos
        if kind == 0x2D:  # - error
            return ResponseError(line.decode(errors="replace")), pos
        if kind == 0x3A:  # : integer
            return int(line), pos
        if kind == 0x24:  # $ bulk string
            size = int(line)
            if size < 0:
                return None, pos
            if len(buf) < pos + size + 2:
                raise _Incomplete
            return bytes(buf[pos : pos + size]), pos + size + 2
        if kind == 0x2A:  # * array
            count = int(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise ProtocolError(f"unexpected reply type byte {kind!r}")


def reply_reader() -> Any:
    try:
        import hiredis
    except ImportError:
        return PyReader()
    return hiredis.Reader(protocolError=ProtocolError, replyError=ResponseError)


class Pipe(asyncio.Protocol):
    """A connection carrying pipelined commands; see the module docstring."""

    def __init__(self, shown: str, on_push: Callable[[Any], None] | None = None, eager: bool = True) -> None:
        self.shown, self._on_push, self._eager = shown, on_push, eager
        self._reader, self._pack = reply_reader(), packer()
        self._waiting: deque[Entry] = deque()
        self._corked: list[Command] | None = None
        self._eager_left = 0  # writes this turn may still make at once
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.lost = self._loop.create_future()
        #: Called with the entry of a ``NOSCRIPT`` reply instead of failing its future.
        self.on_unknown_script: Callable[[Entry], None] | None = None
        #: Called with the commands in flight when the connection is lost, instead of failing them.
        self.on_lost: Callable[[list[Entry], RedisUnavailable], None] | None = None
        #: The asyncio StreamWriter the transport came from: it closes the transport when
        #: collected, so it lives as long as the pipe.
        self.writer: Any = None

    @property
    def alive(self) -> bool:
        return self._transport is not None and not self.lost.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def send(self, *args: Any, convert: Convert = None) -> asyncio.Future[Any]:
        """Issue one command; the future gets its reply (an error reply as ResponseError),
        passed through ``convert`` if given."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self.resend((args, fut, 0, convert))
        return fut

    def resend(self, *entries: Entry) -> None:
        """Issue commands whose futures exist already (in one write if they are the first of
        this turn)."""
        if not self.alive:
            lost = RedisUnavailable(f"lost Redis at {self.shown}")
            for entry in entries:
                if not entry[1].done():
                    entry[1].set_exception(lost)
            return
        self._waiting.extend(entries)
        commands = [entry[0] for entry in entries]
        if self._corked is None:  # the first of this turn
            self._loop.call_soon(self._uncork)
            self._corked, self._eager_left = [], EAGER_WRITES if self._eager else 0
        if self._eager_left and not self._corked:
            self._eager_left -= 1
            assert self._transport is not None
            self._transport.write(self._pack(commands))
            return
        self._corked += commands

    def _uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and self._transport is not None and not self.lost.done():
            self._transport.write(self._pack(corked))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                self._dispatch(reply)
        except ProtocolError as exc:
            self.close(exc)

    def _dispatch(self, reply: Any) -> None:
        if not self._waiting:
            if self._on_push is not None:
                self._on_push(reply)
            return
        entry = self._waiting.popleft()
        fut, convert = entry[1], entry[3]
        if fut.done():
            return
        if isinstance(reply, ResponseError):
            if self.on_unknown_script is not None and str(reply).startswith("NOSCRIPT"):
                self.on_unknown_script(entry)
            elif str(reply).startswith(TRANSIENT):  # the server is (re)starting: an outage, not an error
                fut.set_exception(RedisUnavailable(f"Redis at {self.shown} is not ready: {reply}"))
            else:
                fut.set_exception(reply)
        elif convert is not part:
            fut.set_result(reply if convert is None else convert(reply))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisUnavailable(f"lost Redis at {self.shown}" + (f": {exc}" if exc else "")))

    def _fail(self, error: RedisUnavailable) -> None:
        if not self.lost.done():
            self.lost.set_result(error)
        waiting, self._waiting = self._waiting, deque()
        if self.on_lost is not None:
            self.on_lost(list(waiting), error)
            return
        for entry in waiting:
            if not entry[1].done():
                entry[1].set_exception(error)

    def close(self, exc: BaseException | None = None) -> None:
        """Drop the connection; commands in flight fail."""
        self._fail(RedisUnavailable(f"connection to {self.shown} closed" + (f": {exc}" if exc else "")))
        if self._transport is not None:
            self._transport.close()


async def open_pipe(factory: Any, shown: str, on_push: Callable[[Any], None] | None = None, eager: bool = True) -> Pipe:
    """A connection from redis-py's ``factory`` (a ConnectionPool), handed over to a :class:`Pipe`.

    ``eager``: make the first writes of a turn at once (else write with the rest of the turn).
    """
    conn = factory.make_connection()
    try:
        await conn.connect()
    except Exception as exc:
        raise RedisUnavailable(f"cannot connect to Redis at {shown}: {exc}") from exc
    writer = getattr(conn, "_writer", None)  # redis-py >= 4.2 keeps its asyncio StreamWriter here
    if writer is None:
        raise RedisUnavailable(f"cannot take over the connection to {shown}: unsupported redis-py version")
    pipe = Pipe(shown, on_push, eager)
    pipe.writer = writer
    transport = writer.transport
    transport.set_protocol(pipe)
    pipe.connection_made(transport)
    conn._writer = conn._reader = None  # the socket is the pipe's now: redis-py must not close it
    return pipe
