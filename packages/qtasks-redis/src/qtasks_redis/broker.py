"""``redis`` broker: leased, at-least-once delivery with priorities, delays and dead letters.

Every state change is one atomic step (a Lua script of ``lua/``, or a push onto a list), so
there is no moment at which a crash loses a message: a message is always in exactly one of its
queue's ``ready`` and ``later`` sorted sets (``later`` holds delayed messages and leased ones,
scored by their deadline) or, until its first claim, in its ``posted`` list; the claim script
moves whatever fell due back to ``ready`` before it hands anything out. A lease is fenced by a
token, so a worker whose lease lapsed can neither settle nor renew the message that another
worker now holds.

A fetch is one round trip whether or not it has to wait: ``BLPOP`` on the queues' wake lists
pipelined with the claim script, which the server runs the moment the ``BLPOP`` returns (woken
by a publish, or timed out because something delayed falls due). The wait is cut short at the
earliest due time the last claim reported, so delays and lapsed leases need no polling.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qtasks.log import get_logger
from qtasks.messages import Record
from qtasks.protocols import DEAD_LETTER, DELAY, LEASE, PRIORITY, DeadLetter, Envelope
from redis.exceptions import ResponseError

from qtasks_redis.client import RedisClient, evalsha
from qtasks_redis.keys import QueueKeys, escape_id
from qtasks_redis.scripts import script

if TYPE_CHECKING:
    from qtasks_redis.storage import RedisStorage

log = get_logger("qtasks.redis")


def ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _none(_: Any) -> None:
    return None


class RedisDelivery:
    """One leased message; each settlement is one script, fenced by the lease token.

    Like :meth:`RedisBroker.publish`, the settlements return asyncio futures rather than
    coroutines: awaiting them is the same, and ``asyncio.gather`` (the heartbeat renews every
    lease at once) takes them without a task each.
    """

    __slots__ = ("_broker", "_keys", "_seq", "_token", "body", "count", "fresh")

    def __init__(
        self, broker: RedisBroker, keys: QueueKeys, seq: bytes, token: str, body: bytes, count: int, fresh: int
    ) -> None:
        self._broker, self._keys, self._seq, self._token = broker, keys, seq, token
        self.body, self.count, self.fresh = body, count, fresh == 1

    @property
    def ack_with(self) -> Callable[[Record, float], asyncio.Future[bool]] | None:
        """Delivery.ack_with, when the app's storage is on this client: the record and the ack
        in one script (``save.lua``), no round trip for the ack of its own."""
        return self._ack_with if self._broker.storage is not None else None

    @property
    def lease(self) -> tuple[tuple[str, str], tuple[bytes, str]]:
        """Its queue's keys and its lease, as ``save.lua`` takes them to ack it."""
        return (self._keys.later, self._keys.msgs), (self._seq, self._token)

    def _ack_with(self, record: Record, ttl: float) -> asyncio.Future[bool]:
        assert self._broker.storage is not None
        return self._broker.storage.save(record, ttl, ack=self)

    def ack(self) -> asyncio.Future[None]:
        args = (self._seq, self._token)
        return self._broker.client.script("ack", (self._keys.later, self._keys.msgs), args, _none)

    def nack(self, delay: float = 0.0, body: bytes | None = None, unclaim: bool = False) -> asyncio.Future[None]:
        """Delivery.nack; ``unclaim``: it was never handed out (a cancelled fetch's claim), so its
        delivery count goes back down as well."""
        k = self._keys
        args = (self._seq, self._token, ms(delay), "0" if body is None else "1", body or b"", "1" if unclaim else "0")
        return self._broker.client.script("nack", (k.ready, k.later, k.msgs, k.wake), args, _none)

    def extend(self, lease: float) -> asyncio.Future[bool]:
        args = (self._seq, self._token, ms(lease))
        return self._broker.client.script("extend", (self._keys.later, self._keys.msgs), args, bool)

    def dead_letter(self, reason: str) -> asyncio.Future[None]:
        broker, k = self._broker, self._keys
        args = (self._seq, self._token, reason, k.name, ms(broker.dead_letter_ttl))
        return broker.client.script("dead_letter", (k.later, k.msgs, *broker.client.keys.dead), args, _none)


class RedisBroker:
    capabilities = frozenset({PRIORITY, DELAY, LEASE, DEAD_LETTER})

    def __init__(self, client: RedisClient, dead_letter_ttl: float = 7 * 86400.0) -> None:
        self.client, self.dead_letter_ttl = client, dead_letter_ttl
        #: The app's storage when it is on this client (see ``plugin.make_storage``): the claim
        #: then tells which deliveries are fresh (``records``), and each delivery's ``ack_with``
        #: saves the record and acks in one step.
        self.storage: RedisStorage | None = None
        #: per set of queues: loop time at which the first of their `later` entries falls due
        self._due: dict[tuple[str, ...], float | None] = {}

    @property
    def records(self) -> str:
        """The key prefix of the app's task records if they are on this client, else ''."""
        return "" if self.storage is None else self.client.keys.record("")

    async def start(self) -> None:
        await self.client.open()

    async def stop(self) -> None:
        await self.client.close()

    def publish(self, envelope: Envelope) -> asyncio.Future[None]:
        """Add the message to its queue. Returns an asyncio future, not a coroutine: it is sent
        the moment it is called, before ``add_task`` stores the record beside it.

        A message of priority 0 without an eta, or whose eta has passed (the common case), is
        appended to the queue's ``posted`` list, and a wake-up token left (at most one), in three
        plain commands rather than a script: it costs the server a tenth as much, and the next
        claim gives it its seq, in the order posted. They leave at once, in one write; the
        record's commands follow in another.
        """
        keys = self.client.keys
        k = keys.queue(envelope.queue)
        due = envelope.eta is None or envelope.eta <= time.time()  # posted: in publish order with the others
        if envelope.priority == 0 and due:
            entry = b"%s\n%s" % (escape_id(envelope.id).encode(), envelope.body)
            commands = (("RPUSH", k.posted, entry), ("RPUSH", k.wake, b"1"), ("LTRIM", k.wake, -1, -1))
            return self.client.group(commands, _none)
        eta = "" if envelope.eta is None else round(envelope.eta * 1000)
        args = (envelope.body, envelope.priority, eta, envelope.id)
        return self.client.script("publish", (keys.seq, k.ready, k.later, k.msgs, k.wake), args, _none)

    async def fetch(self, queues: Sequence[str], limit: int, lease: float, wait: float) -> list[Any]:
        keys = self.client.keys
        queue_keys = [keys.queue(q) for q in queues]
        token = secrets.token_hex(16)  # fences this claim's leases (a third of uuid4's cost)
        claim_keys = (keys.seq, *keys.dead, *itertools.chain.from_iterable(k.claim for k in queue_keys))
        claim_args = [max(limit, 1), ms(lease), token, ms(self.dead_letter_ttl), self.records, "0", *queues]
        wakes = [k.wake for k in queue_keys]
        memo = tuple(queues)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        first = True

        async def give_back(replies: list[Any]) -> None:
            if replies and isinstance(replies[-1], list):  # none: cancelled while connecting
                await asyncio.gather(*(d.nack(unclaim=True) for d in self._deliveries(queue_keys, token, replies[-1])))

        while True:
            now = loop.time()
            left = deadline - now
            if first and memo not in self._due:
                block = 0.0  # nothing known about these queues yet: look without waiting
            else:
                if not first and left <= 0:
                    return []
                due = self._due.get(memo)
                block = min(left, lease, math.inf if due is None else due - now)
            claim_args[5] = "1" if memo not in self._due else "0"  # first claim: repair keys
            claim = evalsha(script("claim"), claim_keys, claim_args)
            commands = [("BLPOP", *wakes, f"{block:.3f}"), claim] if block >= 0.001 else [claim]
            replies = await self.client.blocking(commands, block, give_back)
            reply = replies[-1]
            first = False
            unknown = isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")
            if unknown or (isinstance(reply, ResponseError) and claim_args[5] == "0"):
                if unknown:
                    await self.client.load_scripts()
                else:  # a key of the wrong type, say: the next claim repairs the keys first
                    log.warning("redis.claim_failed", error=str(reply), queues=list(queues))
                self._due.pop(memo, None)
                first = True  # the next round only looks, without waiting
                continue
            if isinstance(reply, Exception):
                raise reply
            self._due[memo] = loop.time() + reply[0] / 1000 if reply[0] >= 0 else None
            found = self._deliveries(queue_keys, token, reply)
            if found:
                return found

    def _deliveries(self, queue_keys: list[QueueKeys], token: str, reply: list[Any]) -> list[RedisDelivery]:
        return [
            RedisDelivery(self, queue_keys[reply[i] - 1], reply[i + 1], token, reply[i + 3], reply[i + 2], reply[i + 4])
            for i in range(1, len(reply), 5)
        ]

    async def depth(self, queue: str) -> int:
        k = self.client.keys.queue(queue)
        return int(await self.client.script("depth", (k.ready, k.later, k.inbox, k.posted), ()))

    async def purge(self, queue: str) -> int:
        k = self.client.keys.queue(queue)
        return int(await self.client.script("purge", (k.ready, k.later, k.msgs, k.inbox, k.wake, k.posted), ()))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        reply = await self.client.script("dead_letters", self.client.keys.dead, (limit,))
        found = []
        for i in range(0, len(reply), 3):
            queue, reason, died_ms = json.loads(reply[i + 2])
            found.append(DeadLetter(reply[i].decode(), queue, reply[i + 1], reason, died_ms / 1000))
        return found

    async def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        args = ("all",) if ids is None else ("ids", *ids)
        return int(await self.client.script("purge_dead", self.client.keys.dead, args))
