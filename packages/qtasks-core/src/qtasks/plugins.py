"""Building an app's plugin manager: built-ins, then entry points, then explicit plugins.

pluggy calls implementations last-registered-first, so explicit plugins run before entry-point
plugins, which run before the built-ins: anything installed can override a default. Nothing here
runs at import time; every app builds its own manager.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from typing import Any

import pluggy

from qtasks import hookspecs
from qtasks.config import Config
from qtasks.errors import PluginLoadFailure
from qtasks.log import get_logger
from qtasks.registry import Registry

#: Built-in plugins, registered through the same door as add-ons. ``policies`` is essential:
#: it holds the default answers of the decide-hooks and cannot be disabled.
BUILTIN_PLUGINS = {
    "policies": "qtasks.builtin.policies",
    "json": "qtasks.builtin.serializers",
    "memory": "qtasks.builtin.memory",
    "sqlite": "qtasks.builtin.sqlite",
    "logcontext": "qtasks.builtin.logcontext",
    "injection": "qtasks.builtin.injection",
    "pydantic": "qtasks.builtin.pydantic",  # registered after injection, so it runs before it
}
ESSENTIAL = {"policies", "json"}


@dataclass
class Plugins:
    """An app's plugin manager with what discovery found."""

    pm: pluggy.PluginManager
    failures: list[PluginLoadFailure] = field(default_factory=list)
    #: plugin name -> "builtin" or "distribution version"
    origins: dict[str, str] = field(default_factory=dict)
    registry: Registry = field(default_factory=Registry)

    @property
    def hook(self) -> Any:
        return self.pm.hook


def build(config: Config, plugins: Sequence[object] = (), entry_points: Iterable[EntryPoint] | None = None) -> Plugins:
    """A new plugin manager for one app. Load failures are recorded, never raised here."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    result = Plugins(pm)
    disabled = set(config.disable_plugins) - ESSENTIAL
    for name, module in BUILTIN_PLUGINS.items():
        if name not in disabled:
            pm.register(importlib.import_module(module), name=name)
            result.origins[name] = "builtin"
    if config.autoload_plugins:
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=hookspecs.PROJECT)
        for ep in entry_points:
            if ep.name not in disabled:
                _load(result, ep)
    for plugin in plugins:
        registered = pm.register(plugin)
        result.origins[registered or repr(plugin)] = "explicit"
    pm.check_pending()
    if config.trace_hooks:
        _trace(pm)
    result.registry = _registry(pm, result.failures, frozenset(disabled))
    return result


def _load(result: Plugins, ep: EntryPoint) -> None:
    dist = getattr(ep, "dist", None)
    dist_name = str(dist.metadata["Name"]) if dist is not None else "unknown distribution"
    version = dist.version if dist is not None else "?"
    try:
        result.pm.register(ep.load(), name=ep.name)
    except Exception as exc:  # an add-on must not take the host down: record and go on
        if result.pm.get_plugin(ep.name) is not None:
            result.pm.unregister(name=ep.name)
        result.failures.append(PluginLoadFailure(ep.name, ep.value, dist_name, version, exc))
        return
    result.origins[ep.name] = f"{dist_name} {version}"


def _registry(pm: pluggy.PluginManager, failures: Sequence[PluginLoadFailure], disabled: frozenset[str]) -> Registry:
    # Register hooks are the one place where the core iterates implementations itself: each
    # gets a registry view bound to its plugin's name, so every component knows its provider.
    registry = Registry(failures=failures, disabled=disabled)
    for impl in pm.hook.qtasks_register_components.get_hookimpls():  # registration order
        impl.function(registry=registry.for_provider(impl.plugin_name))
    return registry


def _trace(pm: pluggy.PluginManager) -> None:
    log = get_logger("qtasks.hooks")

    def before(name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        log.debug("hook.call", hook=name, impls=[i.plugin_name for i in impls], args=list(kwargs))

    def after(outcome: pluggy.Result[Any], name: str, *_: object) -> None:  # also given impls and kwargs
        log.debug("hook.done", hook=name, error=repr(outcome.exception) if outcome.exception else None)

    pm.add_hookcall_monitoring(before, after)


def describe(plugins: Plugins) -> list[dict[str, Any]]:
    """One row per plugin: name, origin, hooks, components; then one row per failure."""
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "origin": plugins.origins.get(name, "?"),
            "module": getattr(plugin, "__name__", type(plugin).__name__),
            "hooks": sorted(c.name for c in plugins.pm.get_hookcallers(plugin) or []),
            "components": sorted(
                f"{e.slot}:{e.name}" + "".join(f" {s}://" for s in e.schemes)
                for e in plugins.registry.entries.values()
                if e.provider == name
            ),
        }
        for name, plugin in plugins.pm.list_name_plugin()
    ]
    rows.extend({"name": f.name, "origin": f"{f.distribution} {f.version}", "error": str(f)} for f in plugins.failures)
    return rows


async def enter_all(stack: AsyncExitStack | None, managers: Iterable[Any]) -> None:
    """Enter wrap-hook results (sync or async context managers, None skipped) in order."""
    for cm in managers:
        if cm is not None:
            assert stack is not None
            await stack.enter_async_context(cm) if hasattr(cm, "__aenter__") else stack.enter_context(cm)
