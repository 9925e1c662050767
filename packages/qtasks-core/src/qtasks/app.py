"""The app: tasks, components, plugins, and the producer side of the protocol.

There is one implementation, on asyncio (``qtasks.asyncio.QueueTasks``); ``qtasks.QueueTasks``
is a thin blocking facade over it (:mod:`qtasks.sync`). An app lives on the event loop that
started it; its async methods called from another loop or thread are carried over to that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

from qtasks.admin import Admin, home_loop
from qtasks.config import Config
from qtasks.errors import (
    CapabilityError,
    MalformedMessage,
    PayloadTooLarge,
    PluginLoadError,
    UnknownComponentError,
    UnknownTaskError,
)
from qtasks.messages import Message, Record
from qtasks.plugins import Plugins, build, enter_all
from qtasks.protocols import DELAY, PRIORITY, Envelope
from qtasks.tasks import AsyncTask, Router, TaskSpec, shared_tasks_router, task_decorator

_NO_STACK = contextlib.nullcontext(None)


class QueueTasks(Admin):
    """A qtasks application (asyncio). ``qtasks.QueueTasks`` is its blocking twin.

    :param name: shown in logs and ``qtasks inspect``.
    :param broker: a registered name (``"sqlite"``), a URL whose scheme picks the component
        (``"redis://host/0"``), or a broker object. Default: ``QTASKS_BROKER``, else ``"sqlite"``.
    :param storage: the same for the result storage. Default: ``QTASKS_STORAGE``, else the
        broker's URL when that backend also has a storage, else ``"sqlite"``.
    :param plugins: plugin objects to register in addition to the discovered ones.
    :param settings: any :class:`~qtasks.config.Config` field (``concurrency=20``, ...).
    """

    def __init__(
        self,
        name: str = "QueueTasks",
        broker: Any = None,
        storage: Any = None,
        *,
        broker_url: str | None = None,
        serializer: Any = None,
        config: Config | None = None,
        plugins: Iterable[object] = (),
        **settings: Any,
    ) -> None:
        self.name = name
        self.config = dataclasses.replace(config, **settings) if config else Config.from_env(**settings)
        self._wanted = {
            "broker": broker or broker_url or self.config.broker,
            "storage": storage or self.config.storage,
            "serializer": serializer or self.config.serializer,
        }
        self.tasks: dict[str, TaskSpec] = {}
        self.routers: list[Router] = []
        self.schedules: list[Any] = []  # qtasks.schedule.Schedule
        self.stash: dict[Any, Any] = {}
        self.broker = self.storage = self.serializer = None
        self._extra_plugins = list(plugins)
        self._plugins: Plugins | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Future[None] | None = None
        self._stack: AsyncExitStack | None = None
        self._portal: asyncio.AbstractEventLoop | None = None
        self._adopt(shared_tasks_router())  # as a shared task declared later is (schedules too)
        shared_tasks_router()._attach(self)

    @property
    def core(self) -> QueueTasks:
        """The asyncio app (itself; the sync facade returns the app it wraps)."""
        return self

    # ------------------------------------------------------------------ tasks

    def task(self, func: Any = None, /, **options: Any) -> Any:
        """Register a function as a task; bare (``@app.task``) or with options (see Router.task)."""
        return task_decorator(self, AsyncTask, func, options)

    def _task_app(self) -> QueueTasks:
        return self

    def _register(self, spec: TaskSpec) -> None:
        old = self.tasks.get(spec.name)  # a shared task of that name gives way (lookup() prefers the app's)
        if old is not None and old.func is not spec.func and old is not shared_tasks_router().tasks.get(spec.name):
            raise ValueError(f"task {spec.name!r} is already registered on app {self.name!r}")
        if old is None and ("every" in spec.extra or "cron" in spec.extra):
            self.schedule(spec.name, every=spec.extra.get("every"), cron=spec.extra.get("cron"))
        self.tasks[spec.name] = spec

    def schedule(
        self, task: Any, *args: Any, every: Any = None, cron: str | None = None, name: str = "", **kwargs: Any
    ) -> Any:
        """Run ``task`` (a handle or a name) with these arguments ``every`` timedelta or on a
        ``cron`` expression (UTC), fired by ``qtasks scheduler`` or ``qtasks worker --beat``.
        ``@app.task(every=...)`` / ``@app.task(cron=...)`` do the same without arguments."""
        from qtasks.schedule import Schedule

        entry = Schedule(task if isinstance(task, str) else task.name, every, cron, args, kwargs, name)
        if any(s.name == entry.name for s in self.schedules):
            raise ValueError(f"schedule {entry.name!r} is already declared")
        self.schedules.append(entry)
        return entry

    def include_router(self, router: Router) -> None:
        """Add a router's tasks (and those it gets later) to this app."""
        self._adopt(router)
        router._attach(self)
        self.routers.append(router)

    def _adopt(self, router: Router) -> None:
        for spec in router.tasks.values():
            self._register(spec)

    def lookup(self, name: str) -> TaskSpec | None:
        """The task registered under ``name`` here or as a shared task, else None."""
        return self.tasks.get(name) or shared_tasks_router().tasks.get(name)

    def known_tasks(self) -> dict[str, TaskSpec]:
        return {**shared_tasks_router().tasks, **self.tasks}

    def queues(self) -> list[str]:
        """The queues of the known tasks (what a worker consumes by default)."""
        return sorted({spec.queue for spec in self.known_tasks().values()} or {"default"})

    # ------------------------------------------------------------------ plugins and lifecycle

    @property
    def plugins(self) -> Plugins:
        """This app's plugin manager, built on first use (never at import or construction)."""
        if self._plugins is None:
            self._plugins = build(self.config, self._extra_plugins)
        return self._plugins

    @property
    def hook(self) -> Any:
        return self.plugins.hook

    async def start(self) -> None:
        """Resolve and start the components and enter the app lifespan hooks (idempotent)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._starting is not None:
            if self._starting.done():  # the hot path: every API call checks
                return self._starting.result()
            return await asyncio.shield(self._starting)
        if self._loop is not None and not self._loop.is_closed():
            raise RuntimeError(f"app {self.name!r} is running on another event loop")
        self._loop, self._starting = loop, loop.create_future()
        try:
            await self._start()
        except BaseException as exc:
            self._starting.set_exception(exc)
            self._starting.exception()  # retrieved: callers see it raised here
            self._loop = self._starting = None
            raise
        self._starting.set_result(None)

    async def _start(self) -> None:
        plugins = self.plugins
        if plugins.failures:
            raise PluginLoadError(plugins.failures)
        self.serializer = self._resolve("serializer", self._wanted["serializer"], None)
        self.broker = self._resolve("broker", self._wanted["broker"] or "sqlite", self.serializer)
        self.storage = self._resolve("storage", self._wanted["storage"] or self._default_storage(), self.serializer)
        stack = AsyncExitStack()
        try:
            await self.broker.start()
            stack.push_async_callback(self.broker.stop)
            await self.storage.start()
            stack.push_async_callback(self.storage.stop)
            await enter_all(stack, plugins.hook.qtasks_app_lifespan(app=self))
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    def _resolve(self, slot: str, wanted: Any, serializer: Any) -> Any:
        if not isinstance(wanted, str):
            return wanted
        encode = self._encode_value if slot == "serializer" else None
        broker = self.broker if slot == "storage" else None
        return self.plugins.registry.create(slot, wanted, self.config, serializer or encode, broker)

    def _default_storage(self) -> str:
        broker = self._wanted["broker"]
        if isinstance(broker, str):
            with contextlib.suppress(LookupError, UnknownComponentError):  # a broker-only add-on: sqlite
                self.plugins.registry.lookup("storage", broker)
                return broker
        return "sqlite"

    async def stop(self) -> None:
        """Exit the lifespan hooks and stop the components; the app can be started again."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        self._loop = self._starting = None

    async def __aenter__(self) -> QueueTasks:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ encoding

    def _encode_value(self, value: Any) -> Any:
        encoded = self.plugins.hook.qtasks_encode_value(value=value)
        if encoded is None:
            raise TypeError(f"Object of type {type(value).__name__} is not serializable")
        return encoded

    def encode(self, message: Message) -> bytes:
        """Serialize a message; a ``TypeError`` names the argument that cannot be encoded."""
        try:
            body: bytes = self.serializer.dumps(message.to_wire())
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(self._explain(message, exc)) from exc
        if len(body) > self.config.max_payload:
            raise PayloadTooLarge(message.name, len(body), self.config.max_payload)
        return body

    def _explain(self, message: Message, exc: Exception) -> str:
        spec = self.lookup(message.name)
        names = list(spec.signature.parameters)[int(spec.echo) :] if spec else []
        values = [(names[i] if i < len(names) else f"#{i}", v) for i, v in enumerate(message.args)]
        for label, value in [*values, *message.kwargs.items(), *message.headers.items()]:
            try:
                self.serializer.dumps(value)
            except (TypeError, ValueError, OverflowError) as err:
                return f"argument {label!r} of task {message.name!r} cannot be serialized: {err}"
        return f"task {message.name!r}: message cannot be serialized: {exc}"

    def decode(self, body: bytes) -> Message:
        """Parse message bytes; :class:`MalformedMessage` says what is wrong."""
        try:
            data = self.serializer.loads(body)
        except Exception as exc:
            raise MalformedMessage(f"cannot decode: {type(exc).__name__}: {exc}") from exc
        return Message.from_wire(data)

    # ------------------------------------------------------------------ producer API

    async def publish(self, message: Message, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Send a message through the publish hooks; ``send`` gets the encoded bytes."""
        hook = self.plugins.hook
        if not (hook.qtasks_publish_context.get_hookimpls() or hook.qtasks_inject_headers.get_hookimpls()):
            return await send(self.encode(message))  # no plugin watches submits: skip the calls
        managers = [cm for cm in hook.qtasks_publish_context(message=message, app=self) if cm is not None]
        async with AsyncExitStack() if managers else _NO_STACK as stack:
            await enter_all(stack, managers)
            hook.qtasks_inject_headers(message=message, headers=message.headers, app=self)
            await send(self.encode(message))

    def envelope(self, message: Message, body: bytes) -> Envelope:
        return Envelope(message.id, message.queue, body, message.priority, message.eta)

    @home_loop
    async def add_task(
        self,
        task_name: str,
        *args: Any,
        priority: int | None = None,
        timeout: float | None = None,
        delay: float | None = None,
        eta: datetime | float | None = None,
        **kwargs: Any,
    ) -> Record:
        """Queue a task. Without ``timeout`` return its ``new`` record at once; with one, wait
        up to ``timeout`` seconds for the final record or raise :class:`TaskTimeoutError`.

        ``delay`` (seconds) or ``eta`` (datetime or epoch seconds): do not start before then.
        """
        when = eta.timestamp() if isinstance(eta, datetime) else eta
        message = self.message_for(task_name, args, kwargs, priority, when if delay is None else time.time() + delay)
        record = await self.submit(message)
        return record if timeout is None else await self.wait(message.id, timeout)

    def message_for(
        self, task_name: str, args: Iterable[Any], kwargs: dict[str, Any], priority: int | None, eta: float | None
    ) -> Message:
        """The message that submits ``task_name``; an unknown name fails here if tasks are known."""
        spec = self.lookup(task_name)
        if spec is None and self.known_tasks():
            raise UnknownTaskError(task_name, self.known_tasks())
        queue = spec.queue if spec else "default"
        priority = spec.priority if priority is None and spec else priority or 0
        return Message(name=task_name, args=list(args), kwargs=kwargs, queue=queue, priority=priority, eta=eta)

    @home_loop
    async def submit(self, message: Message) -> Record:
        """Publish the message and store its ``new`` record; the record."""
        if message.priority and PRIORITY not in self.broker.capabilities:
            raise CapabilityError(type(self.broker).__name__, "priorities")
        if message.eta is not None and DELAY not in self.broker.capabilities:
            raise CapabilityError(type(self.broker).__name__, "delays (eta)")
        record = Record.from_message(message)

        async def send(body: bytes) -> None:
            # both at once, the message first (a worker starts on it sooner): the save rules make
            # the order irrelevant (a late `new` never overwrites what a fast worker already wrote)
            publishing = self.broker.publish(self.envelope(message, body))  # runs in this task
            saving = asyncio.ensure_future(self.storage.save(record, self.config.result_ttl))
            try:
                await publishing
            finally:
                await saving

        await self.publish(message, send)
        return record

    # ------------------------------------------------------------------ running

    def run_forever(self, **options: Any) -> None:
        """Run a worker in this process until SIGINT/SIGTERM (see ``qtasks worker``)."""
        from qtasks.runner import run_worker

        run_worker(self, **options)

    async def serve(self, **options: Any) -> None:
        """Run a worker on the current event loop until cancelled (embedding in an app)."""
        from qtasks.worker import Worker

        await Worker(self, **options).run()

    def __repr__(self) -> str:
        return f"<QueueTasks {self.name!r} tasks={len(self.tasks)}>"
