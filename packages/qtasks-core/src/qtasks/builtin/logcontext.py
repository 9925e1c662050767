"""Binds ``task_id``, ``task_name``, ``attempt`` and ``queue`` to every log line of a run."""

from __future__ import annotations

from typing import Any

import structlog

from qtasks.hookspecs import hookimpl


@hookimpl(trylast=True)  # innermost: tracing contexts (tryfirst) are already active
def qtasks_execution_context(run: Any) -> None:
    # bound in the run's own contextvars context (one per delivery): the binding ends with the
    # run, so there is no context manager to enter and leave
    message = run.message
    structlog.contextvars.bind_contextvars(
        task_id=message.id, task_name=message.name, attempt=message.attempt, queue=message.queue
    )
