"""Attribute values derived from qtasks objects, with metric cardinality kept bounded."""

from __future__ import annotations

from typing import Any

from qtasks_otel.semconv import OTHER


def messaging_system(broker: object) -> str:
    """``messaging.system`` from the broker's class, without importing any broker package:
    ``RedisBroker`` gives ``redis``, ``SqliteBroker`` ``sqlite``, ``MemoryBroker`` ``memory``."""
    name = type(broker).__name__
    if name.endswith("Broker") and name != "Broker":
        name = name[: -len("Broker")]
    return name.lower()


def error_type(exc: BaseException) -> str:
    """``error.type`` for an exception: its class, qualified by module unless it is a builtin."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def function_name(func: Any) -> str:
    """``code.function.name``: the fully qualified name of the task's function."""
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def bounded_task_name(name: str, known: bool) -> str:
    """A task name fit for a metric attribute: names the app does not declare become ``_OTHER``,
    since a producer can send any string as a task name."""
    return name if known else OTHER
