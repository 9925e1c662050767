"""Task specs, task handles, pre-built calls and routers.

``@app.task`` / ``@router.task`` turn a function into a :class:`TaskSpec` (what the worker needs)
and return a handle: :class:`AsyncTask` (``await handle.add_task(...)``) or :class:`SyncTask`
(``handle.add_task(...)``). The function itself stays callable as ``handle.func``.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from qtasks.app import QueueTasks
    from qtasks.messages import Record

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A registered task: the function and its options. The worker's copy is authoritative."""

    name: str
    func: Callable[..., Any]
    priority: int = 0
    queue: str = "default"
    echo: bool = False
    max_time: float | None = None
    retry: int = 0
    retry_on_exc: tuple[type[BaseException], ...] = ()
    tags: tuple[str, ...] = ()
    description: str | None = None
    generate_handler: Callable[[Any], Any] | None = None
    decode: Callable[[Any], Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: ``async``, ``sync``, ``asyncgen`` or ``syncgen`` (derived from ``func``).
    kind: str = field(init=False, compare=False)
    signature: inspect.Signature = field(init=False, compare=False, repr=False)
    #: Per-task state of plugins (an analysis of the signature, ...), keyed by the plugin.
    stash: dict[str, Any] = field(init=False, compare=False, repr=False, default_factory=dict)
    #: Argument shapes (count, keyword names) known to bind: a shape binds alike whatever the values.
    shapes: set[tuple[Any, ...]] = field(init=False, compare=False, repr=False, default_factory=set)

    def __post_init__(self) -> None:
        func = self.func
        kind = (
            "asyncgen" if inspect.isasyncgenfunction(func) else "syncgen" if inspect.isgeneratorfunction(func) else None
        )
        object.__setattr__(self, "kind", kind or ("async" if inspect.iscoroutinefunction(func) else "sync"))
        object.__setattr__(self, "signature", inspect.signature(func))

    def check_arguments(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Raise TypeError unless the function takes these arguments; each shape is bound once."""
        if (shape := (len(args), *kwargs)) not in self.shapes:
            self.signature.bind(*([None] if self.echo else []), *args, **kwargs)
            if len(self.shapes) < 256:  # bounded: a function taking **kwargs may see many names
                self.shapes.add(shape)

    def describe(self) -> dict[str, Any]:
        plain = ("name", "kind", "queue", "priority", "echo", "max_time", "retry", "description")
        listed = {"retry_on_exc": [e.__name__ for e in self.retry_on_exc], "tags": list(self.tags)}
        return {**{key: getattr(self, key) for key in plain}, **listed, "signature": str(self.signature)}


def make_spec(func: Callable[..., Any], name: str | None = None, **options: Any) -> TaskSpec:
    options = {k: v for k, v in options.items() if v is not None}
    for key in ("retry_on_exc", "tags"):
        if key in options:
            options[key] = tuple(options[key])
    extra = options.pop("extra", {})
    known = {f.name for f in fields(TaskSpec) if f.init}
    extra = {**extra, **{k: options.pop(k) for k in list(options) if k not in known}}
    description = options.pop("description", None) or inspect.getdoc(func)
    return TaskSpec(name=name or func.__name__, func=func, description=description, extra=extra, **options)


class BaseTask:
    """A task handle. Calling it builds a :class:`TaskCall`; it does not run the function."""

    __slots__ = ("_owner", "spec")

    def __init__(self, spec: TaskSpec, owner: QueueTasks | Router) -> None:
        self.spec, self._owner = spec, owner

    @property
    def name(self) -> str:
        return self.spec.name

    task_name = name

    @property
    def func(self) -> Callable[..., Any]:
        return self.spec.func

    @property
    def app(self) -> QueueTasks:
        return self._owner._task_app()

    def __getattr__(self, item: str) -> Any:  # priority, echo, max_time, ... as in QTasks
        if item in TaskSpec.__dataclass_fields__:
            return getattr(self.spec, item)
        raise AttributeError(item)

    def __call__(self, *args: Any, priority: int | None = None, **kwargs: Any) -> TaskCall:
        return TaskCall(self, args, kwargs, priority)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.name!r}>"


class AsyncTask(BaseTask):
    """A handle whose ``add_task`` is awaited."""

    async def add_task(
        self, *args: Any, priority: int | None = None, timeout: float | None = None, **kwargs: Any
    ) -> Record:
        return await self.app.add_task(self.spec.name, *args, priority=priority, timeout=timeout, **kwargs)


class SyncTask(BaseTask):
    """A handle whose ``add_task`` blocks (for scripts, Django, Flask, sync tasks)."""

    def add_task(self, *args: Any, priority: int | None = None, timeout: float | None = None, **kwargs: Any) -> Record:
        from qtasks.sync import call

        app = self.app
        return call(app, app.add_task(self.spec.name, *args, priority=priority, timeout=timeout, **kwargs))


@dataclass(frozen=True, slots=True)
class TaskCall:
    """A pre-built call (``handle(1, 2)``): submit it later with ``add_task``, or chain it."""

    task: BaseTask
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    priority: int | None = None

    def add_task(self, *extra_args: Any, timeout: float | None = None, **options: Any) -> Any:
        """Submit with ``extra_args`` appended; same return as the handle's ``add_task``."""
        return self.task.add_task(
            *self.args, *extra_args, priority=self.priority, timeout=timeout, **self.kwargs, **options
        )


class Router:
    """Tasks declared away from the app; ``app.include_router(router)`` adds them.

    A router's handles use the app that included the router (the latest, if several did); in a
    process where no app included it, they use a client app configured from the environment
    (``QTASKS_BROKER``, ...).
    """

    handle_class: type[BaseTask] = SyncTask

    def __init__(self, *, queue: str | None = None) -> None:
        self.queue = queue
        self.tasks: dict[str, TaskSpec] = {}
        self._apps: list[weakref.ref[QueueTasks]] = []
        self._client: QueueTasks | None = None

    def _task_app(self) -> QueueTasks:
        for ref in reversed(self._apps):  # the app that included it last (for shared tasks: the newest)
            app = ref()
            if app is not None:
                return app
        if self._client is None:
            from qtasks.app import QueueTasks

            self._client = QueueTasks()
            self._client._adopt(self)
        return self._client

    def _attach(self, app: QueueTasks) -> None:
        self._apps = [ref for ref in self._apps if ref() is not None] + [weakref.ref(app)]

    def _register(self, spec: TaskSpec) -> None:
        if spec.name in self.tasks:
            raise ValueError(f"task {spec.name!r} is already registered on this router")
        if self.queue and spec.queue == "default":
            spec = replace(spec, queue=self.queue)
        self.tasks[spec.name] = spec
        for ref in self._apps:
            app = ref()
            if app is not None:
                app._register(spec)

    @overload
    def task(self, func: F, /) -> Any: ...

    @overload
    def task(self, name: str | None = None, /, **options: Any) -> Callable[[F], Any]: ...

    def task(self, func: Any = None, /, **options: Any) -> Any:
        """Register a function; usable bare (``@router.task``) or with options.

        Options: ``name, priority, queue, echo, max_time, retry, retry_on_exc, tags,
        description, generate_handler, decode``; others are kept in ``spec.extra``.
        """
        return task_decorator(self, self.handle_class, func, options)


class AsyncRouter(Router):
    """A router whose handles are awaited."""

    handle_class = AsyncTask


SyncRouter = Router


def task_decorator(owner: QueueTasks | Router, handle: type[BaseTask], func: Any, options: dict[str, Any]) -> Any:
    """The shared body of ``@app.task`` and ``@router.task`` (bare, named, or with options)."""
    if isinstance(func, str) or func is None:
        options.setdefault("name", func)

        def wrap(f: Callable[..., Any]) -> Any:
            return task_decorator(owner, handle, f, options)

        return wrap
    spec = make_spec(func, **options)
    owner._register(spec)
    return handle(spec, owner)


def shared_tasks_router() -> Router:
    """The router behind :func:`shared_task`; every app includes it."""
    return _SHARED


def shared_task(func: Any = None, /, *, awaiting: bool | None = None, **options: Any) -> Any:
    """Declare a task in a library without an app; every app sees it.

    The handle is awaited (:class:`AsyncTask`) for ``async def`` functions or ``awaiting=True``.
    The shared tasks live on one explicit router, :func:`shared_tasks_router`.
    """

    def wrap(f: Callable[..., Any]) -> Any:
        is_async = awaiting if awaiting is not None else inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
        return task_decorator(_SHARED, AsyncTask if is_async else SyncTask, f, dict(options))

    if isinstance(func, str):
        options.setdefault("name", func)
        return wrap
    return wrap if func is None else wrap(func)


_SHARED = Router()
