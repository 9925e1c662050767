"""The record headers qtasks writes, and reading them back leniently.

A record pushed onto a queue topic by anything else (no headers, odd values) is still a
message: defaults apply, and its body goes to the worker, which judges it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

ID = "qtasks-id"
PRIORITY = "qtasks-priority"
ETA = "qtasks-eta"  #: epoch seconds; not delivered before
COUNT = "qtasks-count"  #: deliveries of earlier copies of this message (nack re-produces)
QUEUE = "qtasks-queue"  #: dead letters: the queue it died in
REASON = "qtasks-reason"  #: dead letters: why
DIED_AT = "qtasks-died-at"  #: dead letters: epoch seconds
PURGED = "qtasks-purged"  #: dead-letter topic: a tombstone hiding the dead letter with this key


def decode(raw: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers as text (the last value of a repeated key wins)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in raw or ()}


def number(found: dict[str, str], name: str) -> float | None:
    try:
        value = float(found[name])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def eta(found: dict[str, str]) -> float | None:
    return number(found, ETA)


def count(found: dict[str, str]) -> int:
    value = number(found, COUNT)
    return max(0, min(int(value), 1 << 30)) if value is not None else 0
