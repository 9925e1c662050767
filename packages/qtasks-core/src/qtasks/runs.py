"""One run of a task: what hooks see (:class:`TaskRun`, :class:`Outcome`), what an echo task
sees (:class:`TaskContext`), and the traceback a failed run keeps. How a run calls the
function is in :mod:`qtasks.calls`."""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from qtasks.errors import TaskCancelError
from qtasks.log import get_logger
from qtasks.messages import Message, Record, Status
from qtasks.protocols import Delivery
from qtasks.tasks import TaskSpec

if TYPE_CHECKING:
    from qtasks.app import QueueTasks
    from qtasks.worker import Worker


class OutcomeKind(StrEnum):
    SUCCESS = "success"  #: the function returned
    FAILURE = "failure"  #: the function raised and will not be retried
    RETRY = "retry"  #: the function raised; another attempt is scheduled
    REJECTED = "rejected"  #: could not be run: unknown task, wrong or invalid arguments
    CANCELLED = "cancelled"  #: cancelled before or while running
    DEAD_LETTER = "dead_letter"  #: delivered too often without finishing (a poison message)
    DUPLICATE = "duplicate"  #: a redelivery of a task that had already finished; not run again


STATUS = {
    OutcomeKind.SUCCESS: Status.SUCCESS,
    OutcomeKind.FAILURE: Status.ERROR,
    OutcomeKind.RETRY: Status.RETRY,
    OutcomeKind.REJECTED: Status.ERROR,
    OutcomeKind.CANCELLED: Status.CANCELLED,
    OutcomeKind.DEAD_LETTER: Status.DEAD,
}


#: Outcomes whose delivery is acked once their record is stored (the others are nacked or
#: dead-lettered).
ACKED = {OutcomeKind.SUCCESS, OutcomeKind.CANCELLED}
#: Outcomes logged at debug level: a busy worker does not write a line per successful task.
QUIET = {OutcomeKind.SUCCESS, OutcomeKind.RETRY, OutcomeKind.CANCELLED, OutcomeKind.DUPLICATE}


@dataclass(slots=True)
class Outcome:
    """How a run ended: ``value`` on success, ``exc`` and ``reason`` otherwise."""

    kind: OutcomeKind
    value: Any = None
    exc: BaseException | None = None
    reason: str | None = None
    retry_in: float | None = None


@dataclass(slots=True, eq=False)
class TaskRun:
    """One delivered message being handled by a worker; what execution hooks receive."""

    message: Message
    task: TaskSpec | None
    delivery: Delivery
    worker: Worker
    args: list[Any]
    kwargs: dict[str, Any]
    stash: dict[Any, Any] = field(default_factory=dict)
    outcome: Outcome | None = None
    started_at: float = field(default_factory=time.time)
    cancel_reason: str | None = None
    calling: bool = False
    handle: asyncio.Task[Any] | None = None

    @property
    def app(self) -> QueueTasks:
        return self.worker.app


class TaskContext:
    """``self.ctx`` of an ``echo=True`` task: who am I, and what can I do about it."""

    def __init__(self, run: TaskRun) -> None:
        self._run = run
        self.task_id = self.task_uuid = run.message.id
        self.task_name = run.message.name
        self.attempt = run.message.attempt
        self.app = run.app
        self.worker_id = run.worker.id

    def get_config(self) -> Any:
        return self._run.app.config

    def get_logger(self, name: str | None = None) -> Any:
        return get_logger(name or f"qtasks.task.{self._run.message.name}")

    async def get_metadata(self) -> Record | None:
        return await self._run.app.get(self._run.message.id)

    def cancel(self, reason: str = "") -> NoReturn:
        """End this task now with status ``cancelled`` (never retried)."""
        raise TaskCancelError(reason)


def user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame outside qtasks and asyncio: the user's frames first."""
    skip = (str(Path(__file__).parent), str(Path(asyncio.__file__).parent), threading.__file__)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(skip):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def traceback_of(outcome: Outcome) -> str | None:
    """The user's traceback for a failed call; for a run that never got to the function, the
    reason (where users look for it)."""
    if outcome.kind in (OutcomeKind.REJECTED, OutcomeKind.DEAD_LETTER):
        return outcome.reason
    return user_traceback(outcome.exc) if outcome.exc is not None else None
