"""Every hook in hookspecs.py fires once, in the documented process, with the documented
arguments; wrap hooks exit in reverse order. A meta-test keeps this file complete."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import qtasks
from qtasks import hookspecs
from qtasks.asyncio import QueueTasks
from qtasks.cli import main as cli_main
from qtasks.registry import Registry
from qtasks.schedule import Scheduler
from qtasks.testing import running_worker
from qtasks.worker import OutcomeKind, TaskRun, Worker

from tests.conftest import qtasks_cli
from tests.core.distributions import install_distribution

CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="-")


class Recorder:
    """Records every hook call as (hook, detail); wrap hooks record enter and exit."""

    def __init__(self, tag: str = "r") -> None:
        self.tag, self.calls = tag, []  # type: list[tuple[str, Any]]

    def wrap(self, hook: str, detail: Any = None) -> Any:
        @contextmanager
        def cm() -> Iterator[None]:
            self.calls.append((f"{hook}:enter", detail))
            try:
                yield
            finally:  # a loop that is cancelled exits its context with CancelledError
                self.calls.append((f"{hook}:exit", detail))

        return cm()

    def names(self, prefix: str) -> list[str]:
        return [name for name, _ in self.calls if name.startswith(prefix)]


def test_every_hookspec_has_a_test_and_a_documented_process() -> None:
    specs = [name for name in dir(hookspecs) if name.startswith("qtasks_")]
    assert len(specs) == 11
    for name in specs:
        assert f"test_hook_{name}" in globals(), f"no test_hook_{name}"
        doc = getattr(hookspecs, name).__doc__
        assert "**When:**" in doc and ":param" in doc, f"{name} is not documented"


def test_hook_qtasks_register_components() -> None:
    seen: list[Registry] = []

    class Plugin:
        @qtasks.hookimpl
        def qtasks_register_components(self, registry: Registry) -> None:
            seen.append(registry)

    plugin = Plugin()
    app = QueueTasks(plugins=[plugin])
    assert seen == [], "nothing happens at construction"
    app.plugins  # noqa: B018 - building the plugin manager is what fires the hook
    app.plugins  # noqa: B018 - and only once per app
    (registry,) = seen
    assert registry.provider == app.plugins.pm.get_name(plugin), "the registry knows who is calling"
    assert isinstance(registry, Registry)


def test_hook_qtasks_add_cli_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = (
        "import os, qtasks\n"
        "@qtasks.hookimpl\n"
        "def qtasks_add_cli_commands(subparsers):\n"
        "    p = subparsers.add_parser('pid')\n"
        "    p.set_defaults(handler=lambda args: print(os.getpid()) or 0)\n"
    )
    site = install_distribution(
        tmp_path / "site", "qtasks-pid", "0.1", {"pid": "qtasks_pid_cmd"}, {"qtasks_pid_cmd": source}
    )
    monkeypatch.syspath_prepend(str(site))
    assert cli_main(["pid"]) == 0
    assert capsys.readouterr().out == f"{os.getpid()}\n", "runs in the CLI's own process"


async def test_hook_qtasks_app_lifespan() -> None:
    log: list[str] = []

    def plugin(tag: str) -> Any:
        class Plugin:
            @qtasks.hookimpl
            def qtasks_app_lifespan(self, app: QueueTasks) -> Any:
                @asynccontextmanager
                async def cm() -> AsyncIterator[None]:
                    log.append(f"{tag} enter broker={type(app.broker).__name__}")
                    yield
                    log.append(f"{tag} exit")

                return cm()

        return Plugin()

    app = QueueTasks(broker="memory", storage="memory", plugins=[plugin("A"), plugin("B")])

    @app.task
    async def noop() -> None: ...

    await noop.add_task()  # a producer starts its app too
    assert log == ["B enter broker=MemoryBroker", "A enter broker=MemoryBroker"]
    await app.stop()
    assert log[2:] == ["A exit", "B exit"]


async def run_one_worker(app: QueueTasks, *submit: str) -> Worker:
    async with app:
        worker = Worker(app)
        job = asyncio.create_task(worker.run())
        await worker.ready.wait()
        for name in submit:
            await app.add_task(name, timeout=5)
        worker.stop()
        await job
    return worker


async def test_hook_qtasks_worker_lifespan() -> None:
    rec = Recorder()

    class Plugin:
        @qtasks.hookimpl
        def qtasks_worker_lifespan(self, worker: Worker) -> Any:
            return rec.wrap("worker", worker.id)

        @qtasks.hookimpl
        def qtasks_execution_context(self, run: TaskRun) -> Any:
            return rec.wrap("run")

    app = QueueTasks(broker="memory", storage="memory", plugins=[Plugin()])

    @app.task
    async def noop() -> None: ...

    worker = await run_one_worker(app, "noop")
    assert rec.calls == [
        ("worker:enter", worker.id),
        ("run:enter", None),
        ("run:exit", None),
        ("worker:exit", worker.id),
    ]


async def test_hook_qtasks_internal_context() -> None:
    rec = Recorder()

    class Plugin:
        @qtasks.hookimpl
        def qtasks_internal_context(self, kind: str) -> Any:
            CURRENT.set("internal")  # must never leak into task executions
            return rec.wrap(kind)

    app = QueueTasks(broker="memory", storage="memory", plugins=[Plugin()])
    seen: list[str] = []

    @app.task
    async def probe() -> None:
        seen.append(CURRENT.get())

    await run_one_worker(app, "probe")
    assert sorted(rec.names("")) == ["fetch:enter", "fetch:exit", "heartbeat:enter", "heartbeat:exit"]
    assert seen == ["-"], "a task never runs inside an internal context"
    scheduler = Scheduler(app, [])
    scheduler.stop()
    await scheduler.run()
    assert rec.names("schedule") == ["schedule:enter", "schedule:exit"]


async def test_hook_qtasks_publish_context() -> None:
    rec = Recorder()

    class Plugin:
        @qtasks.hookimpl
        def qtasks_publish_context(self, message: qtasks.Message, app: QueueTasks) -> Any:
            @contextmanager
            def cm() -> Iterator[None]:
                assert app is this_app
                rec.calls.append(("enter", (message.name, message.attempt)))
                try:
                    yield
                except Exception as exc:  # the send's exception reaches the context
                    rec.calls.append(("error", type(exc).__name__))
                    raise
                rec.calls.append(("exit", message.name))

            return cm()

    app = this_app = QueueTasks(broker="memory", storage="memory", plugins=[Plugin()])

    @app.task(retry=1, retry_backoff=0.01)
    async def flaky() -> None:
        raise RuntimeError("once")

    async with app, running_worker(app):
        record = await flaky.add_task(timeout=5)
    assert record.attempt == 2
    assert rec.calls == [
        ("enter", ("flaky", 1)),
        ("exit", "flaky"),  # the producer's send
        ("enter", ("flaky", 2)),
        ("exit", "flaky"),  # the retry, re-sent by the worker
    ]
    rec.calls.clear()

    async def broken(envelope: Any) -> None:
        raise ConnectionError("broker gone")

    async with app:
        app.broker.publish = broken
        with pytest.raises(ConnectionError):
            await flaky.add_task()
    assert rec.calls == [("enter", ("flaky", 1)), ("error", "ConnectionError")]


async def test_hook_qtasks_inject_headers() -> None:
    class Plugin:
        @qtasks.hookimpl
        def qtasks_inject_headers(self, message: qtasks.Message, headers: dict[str, str], app: QueueTasks) -> None:
            assert headers is message.headers
            headers["x-tenant"] = f"acme/{app.name}"

    app = QueueTasks(broker="memory", storage="memory", plugins=[Plugin()])

    @app.task
    async def tenant() -> None: ...

    async with app:
        await tenant.add_task()
        (delivery,) = await app.broker.fetch(["default"], 1, 5.0, 1.0)
        assert app.decode(delivery.body).headers == {"x-tenant": "acme/QueueTasks"}


async def test_headers_travel_with_retries_and_into_dead_letters() -> None:
    class Plugin:
        @qtasks.hookimpl
        def qtasks_inject_headers(self, message: qtasks.Message, headers: dict[str, str]) -> None:
            headers.setdefault("x-origin", f"attempt-{message.attempt}")

    seen: list[str] = []

    class Watch:
        @qtasks.hookimpl
        def qtasks_execution_context(self, run: TaskRun) -> None:
            seen.append(run.message.headers["x-origin"])

    app = QueueTasks(broker="memory", storage="memory", plugins=[Plugin(), Watch()])

    @app.task(retry=2, retry_backoff=0.01)
    async def fails() -> None:
        raise RuntimeError("no")

    async with app, running_worker(app):
        await fails.add_task(timeout=5)
        (dead,) = await app.dead_letters()
    assert seen == ["attempt-1"] * 3, "the producer's header is kept on every attempt"
    assert app.decode(dead.body).headers == {"x-origin": "attempt-1"}


async def test_hook_qtasks_encode_value() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    class Plugin:
        @qtasks.hookimpl
        def qtasks_encode_value(self, value: Any) -> Any:
            return {"cents": value.cents} if isinstance(value, Money) else None

    app = QueueTasks(broker="memory", storage="memory", plugins=[Plugin()])

    @app.task
    async def double(amount: dict[str, int]) -> Money:
        return Money(amount["cents"] * 2)

    async with app, running_worker(app):
        assert (await double.add_task(Money(21), timeout=5)).returning == {"cents": 42}


async def test_hook_qtasks_execution_context() -> None:
    log: list[str] = []

    def plugin(tag: str, **opts: Any) -> Any:
        class Plugin:
            @qtasks.hookimpl(**opts)
            def qtasks_execution_context(self, run: TaskRun) -> Any:
                @contextmanager
                def cm() -> Iterator[None]:
                    log.append(f"{tag} enter {run.message.name}")
                    token = CURRENT.set(tag)
                    yield
                    CURRENT.reset(token)
                    log.append(f"{tag} exit {run.outcome.kind if run.outcome else None}")

                return cm()

        return Plugin()

    app = QueueTasks(
        broker="memory", storage="memory", plugins=[plugin("inner", trylast=True), plugin("outer", tryfirst=True)]
    )
    seen: list[str] = []

    @app.task
    async def in_async() -> None:
        seen.append(CURRENT.get())

    @app.task
    def in_thread() -> None:
        seen.append(CURRENT.get())

    async with app, running_worker(app):
        await in_async.add_task(timeout=5)
        await in_thread.add_task(timeout=5)
    assert seen == ["inner", "inner"], "the context is entered in the task, and copied into threads"
    assert log[:4] == ["outer enter in_async", "inner enter in_async", "inner exit success", "outer exit success"]
    assert len(log) == 8


async def test_hook_qtasks_retry_delay() -> None:
    asked: list[tuple[int, str]] = []

    class Plugin:
        @qtasks.hookimpl
        def qtasks_retry_delay(self, run: TaskRun, exc: BaseException) -> float | None:
            asked.append((run.message.attempt, type(exc).__name__))
            return None  # no opinion: the built-in policy decides

    app = QueueTasks(broker="memory", storage="memory", plugins=[Plugin()])

    @app.task(retry=1, retry_backoff=0.01)
    async def fails() -> None:
        raise OSError("x")

    async with app, running_worker(app):
        record = await fails.add_task(timeout=5)
    assert asked == [(1, "OSError"), (2, "OSError")] and record.attempt == 2


async def test_hook_qtasks_task_outcome() -> None:
    outcomes: list[tuple[str, str]] = []

    class Plugin:
        @qtasks.hookimpl
        def qtasks_task_outcome(self, run: TaskRun, outcome: Any) -> None:
            outcomes.append((run.message.name, outcome.kind.value))

    app = QueueTasks(broker="memory", storage="memory", plugins=[Plugin()])

    @app.task
    async def ok() -> int:
        return 1

    @app.task(retry=1, retry_backoff=0.01)
    async def bad() -> None:
        raise ValueError("v")

    @app.task(echo=True)
    async def quits(self: Any) -> None:
        self.ctx.cancel("bye")

    async with app, running_worker(app):
        await ok.add_task(timeout=5)
        await bad.add_task(timeout=5)
        await quits.add_task(timeout=5)
        await ok.add_task("unexpected argument", timeout=5)
    assert outcomes == [
        ("ok", "success"),
        ("bad", "retry"),
        ("bad", "failure"),
        ("quits", "cancelled"),
        ("ok", "rejected"),
    ]
    assert {k.value for k in OutcomeKind} >= {kind for _, kind in outcomes}


PROCESS_APP = """
import json, os
from contextlib import contextmanager
import qtasks
from qtasks.asyncio import QueueTasks

class Where:
    def _log(self, hook):
        with open("hooks.jsonl", "a") as f:
            f.write(json.dumps({"hook": hook, "pid": os.getpid()}) + "\\n")

    @qtasks.hookimpl
    def qtasks_publish_context(self, message):
        self._log("publish_context")

    @qtasks.hookimpl
    def qtasks_inject_headers(self, message, headers):
        self._log("inject_headers")

    @qtasks.hookimpl
    def qtasks_worker_lifespan(self, worker):
        self._log("worker_lifespan")

    @qtasks.hookimpl
    def qtasks_internal_context(self, kind):
        self._log("internal_context")

    @qtasks.hookimpl
    def qtasks_execution_context(self, run):
        self._log("execution_context")

    @qtasks.hookimpl
    def qtasks_task_outcome(self, run, outcome):
        self._log("task_outcome")

app = QueueTasks(plugins=[Where()])

@app.task
async def work() -> int:
    return os.getpid()
"""


async def test_hooks_fire_in_their_documented_processes(tmp_path: Path, spawn: Any) -> None:
    (tmp_path / "where_app.py").write_text(PROCESS_APP)
    worker = spawn(qtasks_cli("worker", "-A", "where_app:app", "--log-format", "json"), name="worker")
    worker.wait_for("worker.started")
    sys.path.insert(0, str(tmp_path))
    try:
        from where_app import app  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    record = await app.add_task("work", timeout=10)
    await app.stop()
    assert worker.stop() == 0
    calls = [json.loads(line) for line in (tmp_path / "hooks.jsonl").read_text().splitlines()]
    by_hook: dict[str, list[int]] = {}
    for call in calls:
        by_hook.setdefault(call["hook"], []).append(call["pid"])
    producer, worker_pid = os.getpid(), record.returning
    assert by_hook == {
        "publish_context": [producer],
        "inject_headers": [producer],
        "worker_lifespan": [worker_pid],
        "internal_context": [worker_pid, worker_pid],
        "execution_context": [worker_pid],
        "task_outcome": [worker_pid],
    }
