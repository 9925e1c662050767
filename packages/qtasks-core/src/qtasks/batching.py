"""Group commit for backends: calls made while a flush is running go out together in the next one.

A backend that writes one round trip per call (an ack, a record) wraps the write in a
:class:`Coalescer`; under load the calls of many concurrent tasks share one transaction or
pipeline, and with one caller it costs one extra event-loop turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await submit(item)`` returns ``flush(items)[i]`` for the batch the item went out in."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int = 1000) -> None:
        self._flush, self._max = flush, max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return await fut

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let the callers of this loop turn join the first batch
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                try:
                    results = await self._flush([item for item, _ in batch])
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        except BaseException:
            for _, fut in self._pending:
                fut.cancel()
            self._pending = []
            raise
        finally:
            self._runner = None
