"""Periodic tasks: ``every=timedelta`` or cron expressions, each slot fired exactly once.

Every scheduler computes the same slots (``every`` slots are aligned to the Unix epoch, cron
slots are UTC minutes), and the run of a slot gets a task id derived from the schedule's name and
the slot time. The scheduler saves the ``new`` record before publishing; the storage inserts a
``new`` record only once, so however many schedulers run, one wins each slot and publishes it.
(A scheduler killed between that save and its publish loses the slot: at most once in that
window, exactly once otherwise.) Each run is an ordinary task with its own id and record.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Iterable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from qtasks.app import QueueTasks
from qtasks.log import get_logger
from qtasks.messages import Message, Record
from qtasks.plugins import enter_all

_NAMESPACE = uuid.UUID("6f1c6b3e-2d0a-4d35-9a59-8b1f0d2c7e41")
_NAMES = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10,
    "nov": 11, "dec": 12, "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
}  # fmt: skip


class Cron:
    """A five-field cron expression (minute hour day-of-month month day-of-week), in UTC.

    Fields take ``*``, numbers, ``a-b`` ranges, ``/step`` and comma lists; months and weekdays
    also take names (``jan``, ``mon``). Sunday is 0 or 7. When both day fields are restricted,
    a day matching either one matches (as in classic cron).
    """

    def __init__(self, expression: str) -> None:
        parts = expression.split()
        if len(parts) != 5:
            raise ValueError(f"cron {expression!r}: expected 5 fields, got {len(parts)}")
        bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
        self.expression = expression
        self.minutes, self.hours, self.days, self.months, weekdays = (
            _field(part, low, high, expression) for part, (low, high) in zip(parts, bounds, strict=True)
        )
        self.weekdays = {d % 7 for d in weekdays}
        self._any_day, self._any_weekday = parts[2] == "*", parts[4] == "*"

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        by_date, by_weekday = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        if self._any_day or self._any_weekday:
            return by_date and by_weekday
        return by_date or by_weekday

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment`` (an aware datetime)."""
        start = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(366 * 8):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        slot = day.replace(hour=hour, minute=minute)
                        if slot >= start:
                            return slot
            day += timedelta(days=1)
        raise ValueError(f"cron {self.expression!r} never fires")


def _field(text: str, low: int, high: int, expression: str) -> set[int]:
    values: set[int] = set()
    for item in text.lower().split(","):
        spec, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if spec == "*":
            first, last = low, high
        elif "-" in spec:
            first, last = map(_value, spec.split("-", 1))
        else:
            first = _value(spec)
            last = high if step_text else first
        if not low <= first <= last <= high or step < 1:
            raise ValueError(f"cron {expression!r}: {item!r} is out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


def _value(text: str) -> int:
    return _NAMES[text] if text in _NAMES else int(text)


@dataclass(frozen=True)
class Schedule:
    """One periodic task: ``task`` (a name) with ``args``/``kwargs``, every ``every`` or on
    ``cron``; ``name`` identifies its slots (default: the task name and the timing)."""

    task: str
    every: timedelta | None = None
    cron: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError(f"schedule of {self.task!r}: give exactly one of every= or cron=")
        if self.every is not None and self.every.total_seconds() <= 0:
            raise ValueError(f"schedule of {self.task!r}: every= must be positive")
        if self.cron is not None:
            Cron(self.cron).next_after(datetime.now(UTC))  # validate now (does it ever fire?), not at a tick
        if not self.name:
            object.__setattr__(self, "name", f"{self.task}@{self.cron or self.every}")

    def next_after(self, moment: float) -> float:
        if self.every is not None:
            period = self.every.total_seconds()
            slot = (int(moment // period) + 1) * period
            return slot if slot > moment else slot + period  # float division can land on `moment`
        assert self.cron is not None
        return Cron(self.cron).next_after(datetime.fromtimestamp(moment, UTC)).timestamp()

    def run_id(self, slot: float) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{self.name}|{slot:.3f}"))


class Scheduler:
    """Fires the app's schedules (``app.schedules``) until :meth:`stop`."""

    def __init__(self, app: Any, schedules: Iterable[Schedule] | None = None) -> None:
        self.app: QueueTasks = app.core
        self.schedules = list(self.app.schedules if schedules is None else schedules)
        self.fired = 0
        self.log = get_logger("qtasks.scheduler")
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        app = self.app
        async with AsyncExitStack() as stack:
            owns_app = app._stack is None
            await app.start()
            if owns_app:  # stopped last, after the internal context exits
                stack.push_async_callback(app.stop)
            clean = contextvars.copy_context()  # runs are published from here, not the quiet loop
            await enter_all(stack, app.hook.qtasks_internal_context(kind="schedule", app=app))
            self.log.info("scheduler.started", schedules=[s.name for s in self.schedules])
            await self._loop(clean)

    async def _loop(self, clean: contextvars.Context) -> None:
        now = time.time()
        slots = {s.name: s.next_after(now) for s in self.schedules}
        by_name = {s.name: s for s in self.schedules}
        while not self._stop.is_set():
            name = min(slots, key=slots.__getitem__, default=None)
            delay = (slots[name] - time.time()) if name else 3600.0
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(delay, 0))
                return
            if name is not None:
                await asyncio.create_task(self.fire(by_name[name], slots[name]), context=clean.copy())
                slots[name] = by_name[name].next_after(slots[name])

    async def fire(self, schedule: Schedule, slot: float) -> bool:
        """Submit the run of ``slot`` unless another scheduler already did; True if this one did."""
        app = self.app
        spec = app.lookup(schedule.task)
        queue, priority = (spec.queue, spec.priority) if spec else ("default", 0)
        message = Message(schedule.task, list(schedule.args), dict(schedule.kwargs), schedule.run_id(slot), queue)
        message.priority = priority
        if not await app.storage.save(Record.from_message(message), app.config.result_ttl):
            return False
        await app.publish(message, lambda body: app.broker.publish(app.envelope(message, body)))
        self.fired += 1
        self.log.info("scheduler.fired", schedule=schedule.name, task_id=message.id, slot=slot)
        return True
