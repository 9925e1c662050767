"""The blocking facade: ``qtasks.QueueTasks`` for scripts, Django, Flask and sync tasks.

It holds an asyncio app and runs its coroutines on the loop the app lives on: the worker's loop
inside a worker, otherwise a private loop in a daemon thread. Nothing here is a second
implementation; every method is one call into :class:`qtasks.app.QueueTasks`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from qtasks.app import QueueTasks as AsyncQueueTasks
from qtasks.messages import Record
from qtasks.protocols import DeadLetter
from qtasks.tasks import Router, SyncTask, task_decorator

T = TypeVar("T")


def call(app: AsyncQueueTasks, coro: Coroutine[Any, Any, T]) -> T:
    """Run one of the app's coroutines to completion from synchronous code."""
    loop = app._loop if app._loop is not None and not app._loop.is_closed() else None
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None and (loop is None or loop is running):
        coro.close()
        raise RuntimeError(
            "a blocking qtasks call was made inside a running event loop; "
            "await the async API instead (qtasks.asyncio.QueueTasks, AsyncRouter, AsyncTask)"
        )
    return asyncio.run_coroutine_threadsafe(coro, loop or _portal(app)).result()


def _portal(app: AsyncQueueTasks) -> asyncio.AbstractEventLoop:
    if app._portal is None or app._portal.is_closed():
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True, name=f"qtasks-{app.name}").start()
        app._portal = loop
    return app._portal


class QueueTasks:
    """A qtasks application with a blocking API; same arguments as the asyncio app."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.core = AsyncQueueTasks(*args, **kwargs)

    def task(self, func: Any = None, /, **options: Any) -> Any:
        """Register a function as a task; the handle's ``add_task`` blocks."""
        return task_decorator(self.core, SyncTask, func, options)

    def include_router(self, router: Router) -> None:
        self.core.include_router(router)

    def add_task(self, task_name: str, *args: Any, **kwargs: Any) -> Record:
        return call(self.core, self.core.add_task(task_name, *args, **kwargs))

    def get(self, task_id: Any) -> Record | None:
        return call(self.core, self.core.get(task_id))

    def wait(self, task_id: Any, timeout: float) -> Record:
        return call(self.core, self.core.wait(task_id, timeout))

    def cancel(self, task_id: Any, reason: str = "") -> bool:
        return call(self.core, self.core.cancel(task_id, reason))

    def purge(self, queue: str = "default") -> int:
        return call(self.core, self.core.purge(queue))

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return call(self.core, self.core.dead_letters(limit))

    def replay(self, dead_id: str | None = None) -> int:
        return call(self.core, self.core.replay(dead_id))

    def start(self) -> None:
        call(self.core, self.core.start())

    def stop(self) -> None:
        """Stop the components (and the private loop, if one was started)."""
        if self.core._loop is not None and not self.core._loop.is_closed():
            call(self.core, self.core.stop())
        portal, self.core._portal = self.core._portal, None
        if portal is not None:
            portal.call_soon_threadsafe(portal.stop)

    def run_forever(self, **options: Any) -> None:
        self.core.run_forever(**options)

    def __getattr__(self, name: str) -> Any:  # name, config, tasks, routers, broker, storage...
        return getattr(self.core, name)

    def __repr__(self) -> str:
        return f"<qtasks.QueueTasks {self.core.name!r} tasks={len(self.core.tasks)}>"
