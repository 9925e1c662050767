"""The writes qtasks makes, and how a batch of them becomes one call of the ``apply`` function.

Every write is a small value (:class:`Publish`, :class:`Save`, :class:`Extend`, :class:`Nack`,
:class:`Bury`, :class:`Ack`, and :class:`Settle`: a save and an ack as one). The writes that
the tasks of one process issue in one event-loop turn are gathered
(``qtasks.batching.Coalescer``) and turned into the 22 arrays of one ``apply`` call: one
statement, one round trip, one transaction, however many writes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Publish:
    queue: str
    priority: int
    eta: float | None
    body: bytes
    task_id: str | None = None


@dataclass(frozen=True, slots=True)
class Save:
    id: str
    status: str
    data: bytes
    ttl: float


@dataclass(frozen=True, slots=True)
class Extend:
    seq: int
    token: uuid.UUID
    lease: float


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int
    token: uuid.UUID
    delay: float
    body: bytes | None


@dataclass(frozen=True, slots=True)
class Bury:
    seq: int
    token: uuid.UUID
    reason: str
    ttl: float


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    token: uuid.UUID


@dataclass(frozen=True, slots=True)
class Settle:
    """A record's save and a delivery's ack that stand or fall together (``Delivery.ack_with``):
    one write, so a batch sent again write by write never applies the one without the other."""

    save: Save
    ack: Ack


Write = Publish | Save | Extend | Nack | Bury | Ack | Settle
#: The apply function's parameters, per kind, in its order.
_FIELDS: tuple[tuple[type[Any], tuple[str, ...]], ...] = (
    (Publish, ("queue", "priority", "eta", "body", "task_id")),
    (Save, ("id", "status", "data", "ttl")),
    (Extend, ("seq", "token", "lease")),
    (Nack, ("seq", "token", "delay", "body")),
    (Bury, ("seq", "token", "reason", "ttl")),
    (Ack, ("seq", "token")),
)


def _save_in(write: Write) -> Save | None:
    """The record save that ``write`` makes, if any."""
    return write.save if isinstance(write, Settle) else write if isinstance(write, Save) else None


def _once(write: Write) -> tuple[type[Any], str | int] | None:
    """What ``write`` touches that one apply call may touch only once (see :func:`rounds`)."""
    if (save := _save_in(write)) is not None:
        return Save, save.id
    return (Extend, write.seq) if isinstance(write, Extend) else None


def rounds(writes: list[Write]) -> list[list[Write]]:
    """Split a batch, keeping its order, so that one call saves no record id twice and renews no
    lease twice: one ``INSERT ... ON CONFLICT`` cannot touch a row twice (a record saved twice in
    one turn -- a ``new`` record and a fast in-process worker's ``running`` -- goes out in two
    calls), and the call names a renewal by its seq alone (a lapsed holder and the row's new
    holder renewing in one turn would both read the new holder's success)."""
    found: list[list[Write]] = [[]]
    keys: set[tuple[type[Any], str | int]] = set()
    for write in writes:
        if (key := _once(write)) is not None:
            if key in keys:
                found.append([])
                keys.clear()
            keys.add(key)
        found[-1].append(write)
    return found


def arguments(writes: list[Write]) -> list[list[Any]]:
    """The apply function's 22 arrays for these writes."""
    parts = [part for w in writes for part in ((w.save, w.ack) if isinstance(w, Settle) else (w,))]
    columns: list[list[Any]] = []
    for kind, fields in _FIELDS:
        chosen = [w for w in parts if type(w) is kind]
        columns.extend([getattr(w, name) for w in chosen] for name in fields)
    return columns


def results(writes: list[Write], saved: list[str] | None, extended: list[int] | None) -> list[bool | None]:
    """What each write returns: whether a save was written, whether a lease was renewed (no seq
    is renewed twice in one call: :func:`rounds`)."""
    written, renewed = set(saved or ()), set(extended or ())
    out: list[bool | None] = []
    for write in writes:
        if (save := _save_in(write)) is not None:
            out.append(save.id in written)
        elif isinstance(write, Extend):
            out.append(write.seq in renewed)
        else:
            out.append(None)
    return out
