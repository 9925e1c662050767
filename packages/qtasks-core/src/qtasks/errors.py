"""Every error qtasks raises, with the facts as attributes and the message built from them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class QtasksError(Exception):
    """Base class of the errors qtasks raises."""


class ConfigError(QtasksError, ValueError):
    """The app's configuration cannot work (bad URL, missing capability, ...)."""


class UnknownComponentError(ConfigError):
    """No registered plugin provides the requested component."""

    def __init__(self, slot: str, spec: str, available: Iterable[str], hint: str = "") -> None:
        self.slot, self.spec, self.available = slot, spec, sorted(available)
        close = difflib.get_close_matches(spec, self.available, n=1)
        parts = [f"Unknown {slot} {spec!r}.", *(f"Did you mean {name!r}?" for name in close), *([hint] if hint else [])]
        parts.append(f"Available {slot}s: {', '.join(self.available) or 'none'}; see `qtasks plugins`.")
        super().__init__(" ".join(parts))


class DuplicateComponentError(ConfigError):
    """Two plugins registered the same component name or URL scheme."""

    def __init__(self, slot: str, name: str, providers: Sequence[str]) -> None:
        self.slot, self.name, self.providers = slot, name, tuple(providers)
        super().__init__(
            f"{slot} {name!r} is registered by both {providers[0]!r} and {providers[1]!r}; "
            f"disable one with QTASKS_DISABLE_PLUGINS={providers[1]}"
        )


@dataclass(frozen=True, slots=True)
class PluginLoadFailure:
    """One entry point that could not be loaded."""

    name: str
    value: str
    distribution: str
    version: str
    error: BaseException

    def __str__(self) -> str:
        return (
            f"Could not load qtasks plugin {self.name!r} ({self.value}) from "
            f"{self.distribution} {self.version}: {type(self.error).__name__}: {self.error}. "
            f"Fix the installation, or skip this plugin with QTASKS_DISABLE_PLUGINS={self.name}."
        )


class PluginLoadError(QtasksError):
    """One or more plugins failed to load; the app refuses to start without them."""

    def __init__(self, failures: Sequence[PluginLoadFailure]) -> None:
        self.failures = tuple(failures)
        super().__init__("\n".join(str(f) for f in failures))


class CapabilityError(ConfigError):
    """A message needs a feature (priority, delay, ...) that the broker does not have."""

    def __init__(self, broker: str, capability: str) -> None:
        self.broker, self.capability = broker, capability
        super().__init__(f"broker {broker!r} does not support {capability}")


class UnknownTaskError(QtasksError, LookupError):
    """The app knows no task by this name."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name, self.known = name, sorted(known)
        close = difflib.get_close_matches(name, self.known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown task {name!r}.{hint} Known tasks: {', '.join(self.known)}")


class MalformedMessage(QtasksError, ValueError):
    """Bytes from the broker that are not a valid qtasks message."""


class PayloadTooLarge(QtasksError, ValueError):
    """An encoded message is larger than ``Config.max_payload``."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(
            f"task {name!r}: encoded message is {size} bytes, over the limit of {limit} bytes "
            "(QTASKS_MAX_PAYLOAD); pass a reference to the data instead"
        )


class TaskTimeoutError(QtasksError, TimeoutError):
    """``add_task(..., timeout=)`` or ``wait`` gave up; the task may still finish later."""

    def __init__(self, task_id: str, timeout: float) -> None:
        self.task_id, self.timeout = task_id, timeout
        super().__init__(
            f"task {task_id} did not finish within {timeout:g} s; it may still run: "
            f"fetch its result later with app.get({task_id!r})"
        )


class TaskCancelError(QtasksError):
    """Raised inside a task (``self.ctx.cancel(reason)``) to end it with status ``cancelled``."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "cancelled")


class TimeLimitExceeded(QtasksError, TimeoutError):
    """A task ran past its ``max_time``."""

    def __init__(self, name: str, limit: float) -> None:
        super().__init__(f"time limit exceeded: task {name!r} ran longer than {limit:g} s")


class Retry(QtasksError):
    """Raise inside a task to ask for another attempt after ``after`` seconds (within ``retry``)."""

    def __init__(self, after: float | None = None, reason: str = "") -> None:
        self.after = after
        super().__init__(reason or "retry requested")
