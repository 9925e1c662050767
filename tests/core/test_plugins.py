"""Plugin discovery, order, failures and the component registry."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pluggy
import pytest
import qtasks
from qtasks.asyncio import QueueTasks
from qtasks.config import Config
from qtasks.errors import DuplicateComponentError, PluginLoadError
from qtasks.plugins import BUILTIN_PLUGINS, build, describe

from tests.core.distributions import install_distribution

GOOD_PLUGIN = """
import qtasks
from qtasks.builtin.memory import MemoryBroker

@qtasks.hookimpl
def qtasks_register_components(registry):
    registry.add_broker("example", lambda request: MemoryBroker(), schemes=("example",))

@qtasks.hookimpl
def qtasks_inject_headers(message, headers):
    headers["x-example"] = "yes"
"""
BROKEN_PLUGIN = "import no_such_module_for_qtasks_tests\n"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    return site


def test_builtins_register_through_the_same_hook_as_add_ons() -> None:
    plugins = build(Config(autoload_plugins=False))
    providers = {(e.slot, e.name): e.provider for e in plugins.registry.entries.values()}
    assert providers[("broker", "sqlite")] == "sqlite"
    assert providers[("storage", "memory")] == "memory"
    assert providers[("serializer", "json")] == "json"
    assert {name for name, origin in plugins.origins.items() if origin == "builtin"} == set(BUILTIN_PLUGINS)


def test_installed_distribution_is_discovered_and_used(site: Path) -> None:
    install_distribution(
        site, "qtasks-example", "1.2.3", {"example": "qtasks_example_plugin"}, {"qtasks_example_plugin": GOOD_PLUGIN}
    )
    app = QueueTasks(broker="example://anything", storage="memory")
    assert app.plugins.origins["example"] == "qtasks-example 1.2.3"
    row = next(r for r in describe(app.plugins) if r["name"] == "example")
    assert row["hooks"] == ["qtasks_inject_headers", "qtasks_register_components"]
    assert row["components"] == ["broker:example example://"]

    async def submit() -> dict[str, str]:
        async with app:
            record = await app.add_task("anything", 1)
            (delivery,) = await app.broker.fetch(["default"], 1, 5.0, 1.0)
            return app.decode(delivery.body).headers | {"id": record.id}

    headers = asyncio.run(submit())
    assert headers["x-example"] == "yes"


def test_call_order_explicit_then_entry_points_then_builtins(site: Path) -> None:
    calls: list[str] = []
    install_distribution(
        site,
        "qtasks-order",
        "0.1",
        {"order": "qtasks_order_plugin"},
        {"qtasks_order_plugin": "import qtasks\n@qtasks.hookimpl\ndef qtasks_retry_delay(run, exc):\n    return 7.0\n"},
    )

    class Explicit:
        @qtasks.hookimpl
        def qtasks_retry_delay(self, run: object, exc: BaseException) -> None:
            calls.append("explicit")

    explicit = Explicit()
    plugins = build(Config(), [explicit])
    order = [impl.plugin_name for impl in reversed(plugins.hook.qtasks_retry_delay.get_hookimpls())]
    assert order == [plugins.pm.get_name(explicit), "order", "policies"]
    # explicit answers None, the add-on answers first, the builtin default is never asked
    assert plugins.hook.qtasks_retry_delay(run=None, exc=ValueError()) == 7.0
    assert calls == ["explicit"]


def test_failing_entry_point_is_reported_with_distribution_and_fix(site: Path) -> None:
    install_distribution(
        site, "qtasks-broken", "9.9", {"broken": "qtasks_broken_plugin"}, {"qtasks_broken_plugin": BROKEN_PLUGIN}
    )
    plugins = build(Config())  # building never raises: introspection must keep working
    (failure,) = plugins.failures
    text = str(failure)
    assert "Could not load qtasks plugin 'broken' (qtasks_broken_plugin) from qtasks-broken 9.9" in text
    assert "ModuleNotFoundError: No module named 'no_such_module_for_qtasks_tests'" in text
    assert "QTASKS_DISABLE_PLUGINS=broken" in text

    app = QueueTasks(storage="memory", broker="memory")
    with pytest.raises(PluginLoadError, match=r"qtasks-broken 9\.9"):
        asyncio.run(app.start())

    disabled = QueueTasks(broker="memory", storage="memory", disable_plugins=("broken",))
    assert disabled.plugins.failures == []


def test_injected_entry_point_failure_is_recorded() -> None:
    ep = EntryPoint(name="ghost", value="qtasks_ghost_module_missing", group="qtasks")
    plugins = build(Config(), entry_points=[ep])
    (failure,) = plugins.failures
    assert failure.name == "ghost" and failure.distribution == "unknown distribution"
    assert isinstance(failure.error, ModuleNotFoundError)


def test_plugin_with_a_bad_hook_is_rolled_back_and_reported(site: Path) -> None:
    source = "import qtasks\n@qtasks.hookimpl\ndef qtasks_task_outcome(run, outcome, unexpected):\n    pass\n"
    install_distribution(site, "qtasks-badhook", "1.0", {"badhook": "qtasks_badhook"}, {"qtasks_badhook": source})
    plugins = build(Config())
    (failure,) = plugins.failures
    assert isinstance(failure.error, pluggy.PluginValidationError)
    assert plugins.pm.get_plugin("badhook") is None


def test_misspelled_hook_fails_at_startup() -> None:
    class Typo:
        @qtasks.hookimpl
        def qtasks_task_outcom(self, run: object) -> None: ...

    with pytest.raises(pluggy.PluginValidationError, match="qtasks_task_outcom"):
        build(Config(autoload_plugins=False), [Typo()])


def test_duplicate_component_names_both_providers() -> None:
    class Clash:
        @qtasks.hookimpl
        def qtasks_register_components(self, registry: object) -> None:
            registry.add_broker("sqlite", lambda request: None)  # type: ignore[attr-defined]

    with pytest.raises(DuplicateComponentError, match="'sqlite' is registered by both 'sqlite' and"):
        build(Config(autoload_plugins=False), [Clash()])


def test_builtin_can_be_disabled_but_essential_ones_cannot() -> None:
    plugins = build(Config(autoload_plugins=False, disable_plugins=("memory", "policies")))
    assert plugins.pm.get_plugin("memory") is None
    assert plugins.pm.get_plugin("policies") is not None


def test_qtasks_plugins_cli_lists_and_survives_a_broken_plugin(site: Path, tmp_path: Path) -> None:
    install_distribution(
        site, "qtasks-broken", "9.9", {"broken": "qtasks_broken_plugin"}, {"qtasks_broken_plugin": BROKEN_PLUGIN}
    )
    install_distribution(
        site, "qtasks-example", "1.2.3", {"example": "qtasks_example_plugin"}, {"qtasks_example_plugin": GOOD_PLUGIN}
    )
    env = {"PYTHONPATH": str(site)}
    import os

    out = subprocess.run(
        [sys.executable, "-m", "qtasks", "plugins", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["example"]["origin"] == "qtasks-example 1.2.3"
    assert rows["example"]["components"] == ["broker:example example://"]
    assert "No module named 'no_such_module_for_qtasks_tests'" in rows["broken"]["error"]
    assert rows["sqlite"]["origin"] == "builtin"
    text = subprocess.run(
        [sys.executable, "-m", "qtasks", "plugins"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    ).stdout
    assert "FAILED: Could not load qtasks plugin 'broken'" in text
