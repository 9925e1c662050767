"""The component contracts: small Protocols that every broker, storage and serializer meets.

``qtasks.testing.contract`` holds the test suites that check them; every backend runs them.
Components carry bytes and records; the policies (leases, retries, dead-lettering, time
limits) live in the worker, so every backend gets them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from qtasks.messages import Record

#: Capabilities a broker may declare in ``Broker.capabilities``.
PRIORITY = "priority"  #: lower ``priority`` is delivered first within a queue
DELAY = "delay"  #: ``eta`` is honoured: a message is not delivered before it
LEASE = "lease"  #: an unacked delivery comes back when its lease lapses; ``extend`` works
DEAD_LETTER = "dead_letter"  #: ``dead_letter``, ``dead_letters`` and ``purge_dead`` work


@runtime_checkable
class Serializer(Protocol):
    """Turns plain data into bytes and back. ``default`` converts unknown objects or raises."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the broker needs to route a message; ``body`` is opaque to it."""

    id: str
    queue: str
    body: bytes
    priority: int = 0
    eta: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the worker gave up on, with the reason."""

    id: str  #: broker-assigned id of the dead letter (for ``replay``)
    queue: str
    body: bytes
    reason: str
    died_at: float


class Delivery(Protocol):
    """One leased message handed to a worker. (Methods are shown as ``async def``; any method
    returning an awaitable — a future, say — meets the contract.)

    Exactly one of ``ack``, ``nack``, ``dead_letter`` or ``ack_with`` (below) settles it. A
    delivery whose lease has lapsed may have been given to another worker; settling it then must
    not disturb that other delivery (``extend`` returns False to say the lease is lost).
    """

    body: bytes
    #: How many times this message has been handed out, this time included.
    count: int
    # Optional, read with getattr: ``fresh`` is True if the broker saw, atomically with handing
    # the message out, that its task record was not final. The worker then calls the function at
    # once and stores ``running`` only if the call yields (a call that ends in its first step goes
    # straight to its final record), instead of calling after that save came back. A cancel that
    # lands meanwhile acts as one on a running task.
    # Optional, read with getattr: ``ack_with`` (None if the broker cannot) is an async
    # ``(record, ttl) -> bool`` that stores the task's record (as ``Storage.save``) and acks the
    # message in one atomic step, for a broker that shares its backend with the storage. The worker
    # settles a success or cancelled outcome with it instead of a save followed by ``ack``.

    async def ack(self) -> None:
        """The message is done: remove it."""

    async def nack(self, delay: float = 0.0, body: bytes | None = None) -> None:
        """Return the message to its queue, visible after ``delay`` s, with ``body`` if given."""

    async def extend(self, lease: float) -> bool:
        """Keep the message invisible to others for ``lease`` more seconds; False if lost."""

    async def dead_letter(self, reason: str) -> None:
        """Move the message to the dead-letter store with ``reason``."""


class Broker(Protocol):
    """Moves message bytes between producers and workers, at least once."""

    #: Which of PRIORITY, DELAY, LEASE, DEAD_LETTER this broker provides.
    capabilities: frozenset[str]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, envelope: Envelope) -> None:
        """Store the message durably in ``envelope.queue``."""

    async def fetch(self, queues: Sequence[str], limit: int, lease: float, wait: float) -> list[Delivery]:
        """Lease up to ``limit`` ready messages, waiting up to ``wait`` s for the first one.

        Ready means: ``eta`` passed and no live lease. Lower priority first, then publish order.
        Returns an empty list when nothing came. Must be safe to cancel: a cancelled fetch loses
        nothing (whatever it had leased comes back).
        """

    async def depth(self, queue: str) -> int:
        """Messages in ``queue`` that are not settled (ready, delayed or leased)."""

    async def purge(self, queue: str) -> int:
        """Delete every message of ``queue``; returns how many."""

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters that have not expired."""

    async def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        """Delete the dead letters with these ids (all when None); returns how many."""


class Storage(Protocol):
    """Keeps task records, hands them out and wakes waiters.

    ``save`` follows two rules that make concurrent writers safe: a record whose stored status is
    final (success, error, cancelled, dead) is never overwritten, and a ``new`` record is only
    inserted, never written over an existing one. Every record expires ``ttl`` seconds after it
    was saved.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def save(self, record: Record, ttl: float) -> bool:
        """Write the record unless a rule forbids it; True if it was written."""

    async def get(self, task_id: str) -> Record | None: ...

    async def wait(self, task_id: str, timeout: float) -> Record | None:
        """Return the record once its status is final; None if ``timeout`` passes first.

        Wakes when the record is saved (push where the backend can), not on a fixed poll.
        """

    async def delete(self, task_id: str) -> bool: ...
