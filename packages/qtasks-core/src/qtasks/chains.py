"""Chains of pre-built calls: each step's result is the next step's last positional argument.

Chains are driven by the workers, not by the caller: the first message carries the steps
after it (``Message.chain``, ids assigned up front), and the worker that finishes a step
submits the next one before it stores the step's record. The caller may wait, or go away.
"""

from __future__ import annotations

from typing import Any

from qtasks.messages import STEP, Record, Status
from qtasks.tasks import AsyncTask, TaskCall


class Chain:
    """``chain(c1(1), c2(10))``: run ``c1(1)``, then ``c2(10, <c1's result>)``, and so on.

    ``add_task()`` submits the chain and returns the ids of its steps; ``get(timeout)`` also
    waits and returns the records of the steps that ran (a step that does not succeed ends the
    chain: its record is the last one). Both are awaited when every step is an async handle,
    and block otherwise. Each step is waited for up to ``timeout`` seconds.
    """

    def __init__(self, *calls: TaskCall) -> None:
        if not calls:
            raise ValueError("a chain needs at least one call")
        self.calls = calls
        self.app = calls[0].task.app

    async def submit(self) -> list[str]:
        first, *rest = [self.app.message_for(c.task.name, c.args, c.kwargs, c.priority, None) for c in self.calls]
        first.chain = [{key: getattr(step, key) for key in STEP} for step in rest]
        await self.app.submit(first)
        return [first.id, *(step.id for step in rest)]

    async def run(self, timeout: float = 50.0) -> list[Record]:
        records: list[Record] = []
        for task_id in await self.submit():
            records.append(await self.app.wait(task_id, timeout))
            if records[-1].status != Status.SUCCESS:
                break
        return records

    def add_task(self) -> Any:
        return self._call(self.submit())

    def get(self, timeout: float = 50.0) -> Any:
        return self._call(self.run(timeout))

    def _call(self, work: Any) -> Any:
        if all(isinstance(call.task, AsyncTask) for call in self.calls):
            return work
        from qtasks.sync import call

        return call(self.app, work)


def chain(*calls: TaskCall) -> Chain:
    return Chain(*calls)
