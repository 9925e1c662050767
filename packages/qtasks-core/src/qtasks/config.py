"""App configuration; the one place (with the CLI) that reads environment variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qtasks.errors import ConfigError

ENV_PREFIX = "QTASKS_"
#: Old QTasks names that keep working.
_ALIASES = {"MAX_TASKS_PROCESS": "concurrency", "DISABLED_PLUGINS": "disable_plugins"}


@dataclass(slots=True)
class Config:
    """Settings of one app. Every field can come from ``QTASKS_<FIELD>`` in the environment."""

    #: Broker by name (``"sqlite"``), URL (``"redis://host/0"``) or None for the default.
    broker: str | None = None
    #: Storage by name or URL; None follows the broker's URL when it has a storage, else sqlite.
    storage: str | None = None
    #: Serializer by name.
    serializer: str = "json"
    #: Path of the embedded SQLite database used when nothing else is configured.
    sqlite_path: str = "qtasks.db"
    #: Tasks one worker process runs at the same time.
    concurrency: int = 10
    #: Seconds a worker holds a delivery before another worker may take it; renewed while the
    #: task runs, so it only bounds how fast the tasks of a dead worker come back.
    lease: float = 10.0
    #: Seconds a stopping worker waits for running tasks before returning them to the broker.
    grace: float = 30.0
    #: Seconds a finished record (and a queued or running one, from its last change) is kept.
    result_ttl: float = 86_400.0
    #: Seconds a dead letter is kept.
    dead_letter_ttl: float = 7 * 86_400.0
    #: Deliveries after which a message that never finished is dead-lettered (poison message).
    max_deliveries: int = 10
    #: Largest encoded message, in bytes.
    max_payload: int = 1 << 20
    #: Entry-point plugins (or builtins) not to load, by name.
    disable_plugins: tuple[str, ...] = ()
    #: Load plugins from the ``qtasks`` entry-point group.
    autoload_plugins: bool = True
    #: Log every hook call (name, arguments, results) at debug level.
    trace_hooks: bool = False
    #: Free-form settings of the application, readable by tasks through ``self.ctx.get_config()``.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a config from ``QTASKS_*`` variables; explicit ``overrides`` win over them."""
        environ = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        names = fields | {alias: fields[target] for alias, target in _ALIASES.items()}
        values: dict[str, Any] = {}
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            f = names.get(key[len(ENV_PREFIX) :].lower()) or names.get(key[len(ENV_PREFIX) :])
            if f is not None and f.name != "extra":
                values[f.name] = _cast(key, raw, f.type)
        if unknown := overrides.keys() - fields.keys():
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _cast(key: str, raw: str, annotation: Any) -> Any:
    text = str(annotation)
    try:
        if "bool" in text:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
        if text.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r}: {exc}") from exc
    return raw or None
