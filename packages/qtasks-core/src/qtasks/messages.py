"""What travels on the wire (:class:`Message`) and what is stored about a task (:class:`Record`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from qtasks.errors import MalformedMessage

WIRE_VERSION = 1


class Status(StrEnum):
    """The status of a task record. ``status == "success"`` works, as in QTasks."""

    NEW = "new"  #: queued, not started yet
    RUNNING = "running"  #: a worker started it and has not finished it yet
    RETRY = "retry"  #: an attempt failed and another one is scheduled
    SUCCESS = "success"  #: the function returned; ``returning`` holds the value
    ERROR = "error"  #: the function raised (``traceback``), or could not be run (``reason``)
    CANCELLED = "cancelled"  #: cancelled before or while running (``reason``)
    DEAD = "dead"  #: the message could not be run at all and was dead-lettered (``reason``)

    @property
    def final(self) -> bool:
        """Whether nothing will change this record any more."""
        return self in FINAL


FINAL = frozenset({Status.SUCCESS, Status.ERROR, Status.CANCELLED, Status.DEAD})


@dataclass(slots=True)
class Message:
    """One task invocation on the wire. JSON by default, never pickle.

    ``headers`` are string pairs that plugins add (trace context, ...); they are kept through
    retries, delays, requeues and dead letters. ``priority``: lower runs first. ``eta``: epoch
    seconds before which the task must not start. ``history``: one short entry per failed earlier
    attempt. ``chain``: the steps to submit when this one succeeds (see :meth:`next_step`).
    """

    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    queue: str = "default"
    headers: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    attempt: int = 1
    eta: float | None = None
    created_at: float = field(default_factory=time.time)
    history: list[dict[str, Any]] = field(default_factory=list)
    chain: list[dict[str, Any]] = field(default_factory=list)

    def next_step(self, result: Any) -> Message | None:
        """The chain's next message, with ``result`` appended to its arguments; None at the end."""
        if not self.chain:
            return None
        step, *rest = self.chain
        return Message(**{**step, "args": [*step["args"], result]}, chain=rest)

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": WIRE_VERSION,
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
            "headers": self.headers,
            "priority": self.priority,
            "attempt": self.attempt,
            "eta": self.eta,
            "created_at": self.created_at,
            "history": self.history,
            "chain": self.chain,
        }

    @classmethod
    def from_wire(cls, data: Any) -> Message:
        """Validate decoded data strictly; raise :class:`MalformedMessage` naming the problem."""
        if type(data) is not dict:
            raise MalformedMessage(f"expected a JSON object, got {type(data).__name__}")
        if (version := data.pop("v", None)) != WIRE_VERSION:
            raise MalformedMessage(f"unsupported message version {version!r}")
        for key, value in data.items():
            types = _FIELD_TYPES.get(key)
            if types is None:
                unknown = sorted(set(data) - _FIELD_TYPES.keys())
                raise MalformedMessage(f"unknown field(s): {', '.join(map(repr, unknown))}")
            if type(value) not in types:  # exact: JSON gives no subclasses, and bool is no int here
                raise MalformedMessage(f"field {key!r} has the wrong type {type(value).__name__}")
        if missing := _REQUIRED - data.keys():
            raise MalformedMessage(f"missing field(s): {', '.join(sorted(missing))}")
        if not data["name"] or not data["id"]:
            raise MalformedMessage("empty task name or id")
        headers = data.get("headers")
        if headers and not all(type(k) is str and type(v) is str for k, v in headers.items()):
            raise MalformedMessage("headers must map strings to strings")
        if data.get("attempt", 1) < 1:
            raise MalformedMessage("attempt must be at least 1")
        for step in data.get("chain", ()):
            if type(step) is not dict or step.keys() != STEP or not step["id"] or not step["name"]:
                raise MalformedMessage(f"a chain step must be an object with exactly {', '.join(sorted(STEP))}")
            if wrong := [k for k, v in step.items() if type(v) not in _FIELD_TYPES[k]]:
                raise MalformedMessage(f"chain step field {wrong[0]!r} has the wrong type")
        return cls(**data)


_REQUIRED = {"id", "name", "args", "kwargs"}
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("id", "name", "queue"), (str,)),
    **dict.fromkeys(("args", "history", "chain"), (list,)),
    **dict.fromkeys(("kwargs", "headers"), (dict,)),
    **dict.fromkeys(("priority", "attempt"), (int,)),
    "eta": (float, int, type(None)),
    "created_at": (float, int),
}
#: The fields of a chain step (a message's ``chain`` entries).
STEP = frozenset({"id", "name", "args", "kwargs", "queue", "priority"})


@dataclass(slots=True)
class Record:
    """What the storage keeps about one task; ``add_task`` and ``get`` return it."""

    id: str
    name: str
    status: Status = Status.NEW
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    attempt: int = 1
    returning: Any = None
    traceback: str | None = None
    reason: str | None = None
    worker: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uuid(self) -> uuid.UUID:
        """The id as a :class:`uuid.UUID` (QTasks names it ``uuid``)."""
        return uuid.UUID(self.id)

    @property
    def task_name(self) -> str:
        return self.name

    @property
    def cancel_reason(self) -> str | None:
        return self.reason if self.status == Status.CANCELLED else None

    @classmethod
    def from_message(cls, message: Message, status: Status = Status.NEW, **changes: Any) -> Record:
        return cls(
            id=message.id,
            name=message.name,
            status=status,
            args=message.args,
            kwargs=message.kwargs,
            queue=message.queue,
            priority=message.priority,
            attempt=message.attempt,
            created_at=message.created_at,
            history=message.history,
            **changes,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
            "priority": self.priority,
            "attempt": self.attempt,
            "returning": self.returning,
            "traceback": self.traceback,
            "reason": self.reason,
            "worker": self.worker,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**{**data, "status": Status(data["status"])})
