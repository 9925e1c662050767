"""Chains of pre-built calls: each step's result is the next step's last positional argument."""

from __future__ import annotations

from typing import Any

from qtasks.messages import Record, Status
from qtasks.tasks import AsyncTask, TaskCall


class Chain:
    """``chain(c1(1), c2(10))``: run ``c1(1)``, then ``c2(10, <c1's result>)``, and so on.

    ``get(timeout)`` returns the list of records, one per step that ran; a step that does not
    succeed ends the chain (its record is the last one). It is awaited when every step is an
    async handle, and blocks otherwise. Each step waits up to ``timeout`` seconds.
    """

    def __init__(self, *calls: TaskCall) -> None:
        if not calls:
            raise ValueError("a chain needs at least one call")
        self.calls = calls

    async def run(self, timeout: float = 50.0) -> list[Record]:
        records: list[Record] = []
        for call in self.calls:
            carried = (records[-1].returning,) if records else ()
            app = call.task.app
            priority = call.priority
            record = await app.add_task(
                call.task.name, *call.args, *carried, priority=priority, timeout=timeout, **call.kwargs
            )
            records.append(record)
            if record.status != Status.SUCCESS:
                break
        return records

    def get(self, timeout: float = 50.0) -> Any:
        if all(isinstance(call.task, AsyncTask) for call in self.calls):
            return self.run(timeout)
        from qtasks.sync import call

        return call(self.calls[0].task.app, self.run(timeout))


def chain(*calls: TaskCall) -> Chain:
    return Chain(*calls)
