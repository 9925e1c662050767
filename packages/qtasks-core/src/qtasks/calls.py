"""Calling a task's function: async or sync (in a thread), generators collected, time limits
applied, and the result made into what the storage keeps."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from qtasks.errors import TimeLimitExceeded
from qtasks.runs import TaskContext, TaskRun
from qtasks.tasks import AsyncTask, SyncTask, TaskSpec

T = TypeVar("T")


async def call(run: TaskRun, spec: TaskSpec) -> Any:
    """Call the task's function with the run's arguments, within its time limit."""
    args = run.args
    if spec.echo:
        handle = (AsyncTask if spec.kind.startswith("async") else SyncTask)(spec, run.app)
        setattr(handle, "ctx", TaskContext(run))  # noqa: B010 - handles get a ctx only when echoed
        args = [handle, *args]
    func, kind, kwargs = spec.func, spec.kind, run.kwargs
    if kind == "async":
        work: Awaitable[Any] = func(*args, **kwargs)
    elif kind == "asyncgen":
        work = _collect(spec, func(*args, **kwargs))
    elif kind == "syncgen":
        work = _collect(spec, in_thread(lambda: list(func(*args, **kwargs))))
    else:
        work = in_thread(lambda: func(*args, **kwargs))
    if spec.max_time is None:
        return await work
    limit = asyncio.timeout(spec.max_time)
    try:
        async with limit:
            return await work
    except TimeoutError:
        if limit.expired():
            raise TimeLimitExceeded(spec.name, spec.max_time) from None
        raise


async def _collect(spec: TaskSpec, values: Any) -> list[Any]:
    items = [v async for v in values] if hasattr(values, "__aiter__") else await values
    if spec.generate_handler is None:
        return list(items)
    out = []
    for item in items:
        result = spec.generate_handler(item)
        out.append(await result if inspect.isawaitable(result) else result)
    return out


def storable(spec: TaskSpec, value: Any, serializer: Any) -> Any:
    """The result as the storage will keep it; a result that cannot be stored is an error."""
    if spec.decode is not None:
        value = spec.decode(value)
    if value is None or isinstance(value, (str, int, bool)):  # a float may be NaN: the serializer decides
        return value
    try:
        return serializer.loads(serializer.dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"result of task {spec.name!r} cannot be stored: {exc}") from exc


def in_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` in a new daemon thread with a copy of the current context.

    Daemon threads, not a pool: a sync task that overruns its time limit is abandoned, and an
    abandoned thread must never keep the process from exiting.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            fut.set_result(value) if ok else fut.set_exception(value)

    def target() -> None:
        outcome: tuple[bool, Any]
        try:
            outcome = (True, ctx.run(fn))
        except BaseException as exc:  # handed to the awaiting task
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, daemon=True, name="qtasks-sync-task").start()
    return fut
