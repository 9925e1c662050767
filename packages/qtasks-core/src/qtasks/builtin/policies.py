"""Default answers of the decide-hooks (``trylast``: any plugin overrides them)."""

from __future__ import annotations

import random
from typing import Any

from qtasks.errors import Retry
from qtasks.hookspecs import hookimpl


@hookimpl(trylast=True)
def qtasks_retry_delay(run: Any, exc: BaseException) -> float:
    """Retry while attempts remain: ``Retry`` always, other exceptions if listed in
    ``retry_on_exc`` (any exception when it is empty). Exponential backoff with equal jitter:
    attempt n waits between b*2^(n-1)/2 and b*2^(n-1) seconds (``retry_backoff`` b, default 1 s,
    capped by ``retry_backoff_max``, default 300 s)."""
    spec = run.task
    if spec is None or run.message.attempt > spec.retry:
        return -1.0
    if isinstance(exc, Retry) and exc.after is not None:
        return float(exc.after)
    if not isinstance(exc, Retry) and spec.retry_on_exc and not isinstance(exc, spec.retry_on_exc):
        return -1.0
    base = float(spec.extra.get("retry_backoff", 1.0))
    ceiling: float = min(float(spec.extra.get("retry_backoff_max", 300.0)), base * 2 ** (run.message.attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
