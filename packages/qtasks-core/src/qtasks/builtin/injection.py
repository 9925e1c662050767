"""``Depends`` and ``State``: values injected into task parameters, as an ordinary plugin.

``Depends(dependency, scope="task" | "worker")``, as a parameter default or inside
``Annotated[T, Depends(...)]``: the dependency is called (function, coroutine function, sync or
async generator, or something returning a context manager) and its value is passed to the task.
Task-scope dependencies are closed when the run ends, even when the task raised; worker-scope
ones are created once per worker process and closed when the worker stops.

A parameter annotated with a ``State`` subclass receives that class's one instance in this
worker process: a thread-safe key-value store shared by the tasks of the worker.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import typing
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

from qtasks.hookspecs import hookimpl


class Depends:
    """Inject the value of ``dependency`` into a task parameter (see the module docstring)."""

    def __init__(self, dependency: Callable[..., Any], *, scope: str = "task") -> None:
        if scope not in ("task", "worker"):
            raise ValueError(f"Depends scope must be 'task' or 'worker', not {scope!r}")
        self.dependency, self.scope = dependency, scope

    def __repr__(self) -> str:
        return f"Depends({getattr(self.dependency, '__name__', self.dependency)!r}, scope={self.scope!r})"


class State:
    """Per-worker key-value state; subclass it and annotate a task parameter with the subclass."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str | None = None, default: Any = None) -> Any:
        with self._lock:
            return dict(self._data) if key is None else self._data.get(key, default)

    def get_all(self) -> dict[str, Any]:
        return self.get()  # type: ignore[no-any-return]

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value

    def update(self, **values: Any) -> dict[str, Any]:
        with self._lock:
            self._data.update(values)
            return dict(self._data)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations (``from __future__ import annotations`` included); a parameter whose
    annotation cannot be resolved is left out rather than failing the others."""
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:
        hints = {}
        for name, annotation in getattr(func, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, func.__globals__) if isinstance(annotation, str) else annotation
            except Exception:
                continue
        return hints


def unannotated(hint: Any) -> Any:
    return getattr(hint, "__origin__", hint) if hasattr(hint, "__metadata__") else hint


def _injections(func: Callable[..., Any]) -> dict[str, Depends | type[State]]:
    """Which parameters of ``func`` are injected, and with what (string annotations resolved)."""
    hints = type_hints(func)
    found: dict[str, Depends | type[State]] = {}
    for name, param in inspect.signature(func).parameters.items():
        hint = hints.get(name)
        marks = [param.default, *getattr(hint, "__metadata__", ())]
        depends = next((m for m in marks if isinstance(m, Depends)), None)
        base = unannotated(hint)
        if depends is not None:
            found[name] = depends
        elif isinstance(base, type) and issubclass(base, State):
            found[name] = base
    return found


async def _enter(stack: AsyncExitStack, dependency: Callable[..., Any]) -> Any:
    if inspect.isasyncgenfunction(dependency):
        return await stack.enter_async_context(asynccontextmanager(dependency)())
    if inspect.isgeneratorfunction(dependency):
        return stack.enter_context(contextmanager(dependency)())
    value = dependency()
    if hasattr(value, "__aenter__"):
        return await stack.enter_async_context(value)
    if hasattr(value, "__enter__"):
        return stack.enter_context(value)
    return await value if inspect.isawaitable(value) else value


@asynccontextmanager
async def _inject(run: Any, wanted: dict[str, Depends | type[State]]) -> AsyncIterator[None]:
    worker_scope: dict[Any, Any] = run.worker.stash.setdefault(__name__, {})
    async with AsyncExitStack() as stack:
        for name, what in wanted.items():
            if name in run.kwargs:
                continue  # passed explicitly by the caller
            if isinstance(what, Depends) and what.scope == "task":
                run.kwargs[name] = await _enter(stack, what.dependency)
                continue
            key = what.dependency if isinstance(what, Depends) else what
            async with worker_scope.setdefault((_STACK, key), asyncio.Lock()):  # created once per worker
                if key not in worker_scope:
                    worker_stack = run.worker.stash[_STACK]
                    worker_scope[key] = (
                        await _enter(worker_stack, what.dependency) if isinstance(what, Depends) else what()
                    )
            run.kwargs[name] = worker_scope[key]
        yield


_STACK = f"{__name__}.stack"


@hookimpl
def qtasks_execution_context(run: Any) -> Any:
    if run.task is None:
        return None
    if __name__ not in run.task.stash:
        run.task.stash[__name__] = _injections(run.task.func)
    wanted = run.task.stash[__name__]
    return _inject(run, wanted) if wanted else None


@hookimpl
def qtasks_worker_lifespan(worker: Any) -> Any:
    @asynccontextmanager
    async def worker_scope() -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:  # closes worker-scope dependencies, last first
            worker.stash[_STACK] = stack
            yield

    return worker_scope()
