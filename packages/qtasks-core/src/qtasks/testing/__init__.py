"""Testing kit: run a real worker in-process on the memory components.

With the pytest plugin (installed with qtasks-core), override the ``qtasks_app`` fixture to
return your app and use ``qtasks_worker``::

    @pytest.fixture
    def qtasks_app():
        from myproject.tasks import app
        return app

    def test_add(qtasks_worker):
        assert add.add_task(1, 2, timeout=5).returning == 3

Outside pytest, ``with in_memory_worker(app):`` does the same, and ``async with
running_worker(app):`` runs a worker on the current event loop with the app's own components.
Backends check themselves with :mod:`qtasks.testing.contract`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from qtasks.worker import Worker

__all__ = ["in_memory_worker", "running_worker"]


@asynccontextmanager
async def running_worker(app: Any, **options: Any) -> AsyncIterator[Worker]:
    """Run a worker for ``app`` on the current loop while the block runs; drain on exit."""
    worker, job = await _start(app, options)
    try:
        yield worker
    finally:
        worker.stop()
        await job


@contextmanager
def in_memory_worker(app: Any, **options: Any) -> Iterator[Worker]:
    """Switch ``app`` to the memory broker and storage and run a worker for it in a background
    thread; the app's configuration is restored afterwards. Sync and async handles both work."""
    core = app.core
    if core._loop is not None and not core._loop.is_closed():
        asyncio.run_coroutine_threadsafe(core.stop(), core._loop).result()
    saved = dict(core._wanted)
    core._wanted.update(broker="memory", storage="memory")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="qtasks-test-worker")
    thread.start()
    try:
        worker, job = asyncio.run_coroutine_threadsafe(_start(core, options), loop).result(timeout=30)
        try:
            yield worker
        finally:
            loop.call_soon_threadsafe(worker.stop)
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(job, 60), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        core._wanted = saved
        core._loop = core._starting = None


async def _start(app: Any, options: dict[str, Any]) -> tuple[Worker, asyncio.Task[None]]:
    """A worker running on this loop, once it is ready to fetch."""
    worker = Worker(app, **options)
    job = asyncio.create_task(worker.run())
    ready = asyncio.ensure_future(worker.ready.wait())
    await asyncio.wait([job, ready], return_when=asyncio.FIRST_COMPLETED)
    if job.done():
        ready.cancel()
        job.result()  # it failed to start: raise why
    return worker, job
