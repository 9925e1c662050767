"""The qtasks hook specifications. Read this file first.

qtasks is a small kernel (app, worker, message format, lease protocol) plus plugins. Everything a
backend or an extension does, it does through the hooks below; the built-in components and
behaviours register through exactly the same hooks as the add-ons that ``pip install`` brings.

Hook kinds, each with one fixed meaning:

* **register** -- collect-all; the plugin adds things to the object it is handed.
* **notify** -- collect-all; the return value is ignored. Runs on the event loop: must not block.
* **decide** -- ``firstresult``: the first non-None answer wins. The core's default answer is a
  built-in ``trylast`` implementation, so any plugin overrides it without special cases.
* **wrap** -- collect-all; each implementation returns a context manager (sync or async) or None.
  The core enters them in pluggy's call order (``tryfirst`` impls and later-registered plugins
  first, so they are outermost) and exits them in reverse order, even on errors. pluggy cannot
  wrap coroutines, which is why these hooks return context managers instead of being
  ``wrapper=True`` hooks.

One task, step by step
----------------------
In the **producer** (any process calling ``add_task``):

1. the app builds a :class:`~qtasks.messages.Message` (id, name, queue, args, kwargs, headers,
   priority, attempt=1, eta);
2. it enters every :func:`qtasks_publish_context`, then calls :func:`qtasks_inject_headers`;
3. it serializes the message, saves the ``new`` record and publishes the bytes to the broker.

In the **worker**:

4. the broker hands out a leased :class:`~qtasks.protocols.Delivery`; bytes that are not a valid
   message are dead-lettered with the reason (no task hook fires for them);
5. in a fresh asyncio task (its own contextvars) the worker enters every
   :func:`qtasks_execution_context` for the :class:`~qtasks.worker.TaskRun`;
6. it saves the ``running`` record and calls the function (sync functions in a thread), keeping
   the lease alive meanwhile;
7. on an exception it asks :func:`qtasks_retry_delay` whether and when to retry;
8. it calls :func:`qtasks_task_outcome`, stores the record and acks, nacks (retry) or
   dead-letters the delivery; then the execution contexts exit.

Lifetime hooks frame all of this: :func:`qtasks_app_lifespan` in every process that starts an
app, :func:`qtasks_worker_lifespan` once per worker process.

Plugin authors: implement hooks with ``@qtasks.hookimpl`` in a module and declare it in your
distribution's ``pyproject.toml``::

    [project.entry-points.qtasks]
    myplugin = "my_package.plugin"

Hook implementations must not give their parameters default values (pluggy does not pass them)
and may accept any subset of the documented parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from qtasks.app import QueueTasks
    from qtasks.messages import Message
    from qtasks.registry import Registry
    from qtasks.worker import Outcome, TaskRun, Worker

PROJECT = "qtasks"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# --------------------------------------------------------------------------- registration


@hookspec
def qtasks_register_components(registry: Registry) -> None:
    """Register component factories: brokers, storages and serializers.

    **When:** once per app, the first time the app needs its plugins (start, or ``qtasks
    plugins``), in whichever process builds the app.

    :param registry: call ``registry.add_broker(name, factory, schemes=(...))``,
        ``add_storage`` or ``add_serializer``. A factory takes a
        :class:`~qtasks.registry.ComponentRequest` and returns the component. Factories run
        only for the component the app selects, so import heavy client libraries inside them.

    Collects all results (return None). The core calls each implementation itself with a
    registry bound to that plugin, so it knows who provided what.
    """


@hookspec
def qtasks_add_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add subcommands to the ``qtasks`` command line.

    **When:** each time the ``qtasks`` CLI starts, in that process.

    :param subparsers: the ``argparse`` subparsers object. Add a parser and set its
        ``handler`` default: ``p.set_defaults(handler=fn)``; ``fn(args) -> int`` is the exit code.

    Collects all results (return None).
    """


# --------------------------------------------------------------------------- lifetimes


@hookspec
def qtasks_app_lifespan(app: QueueTasks) -> Any:
    """Wrap the life of a started app: connect clients, start and flush exporters.

    **When:** entered after the app's broker and storage have started, exited before they stop;
    in every process that starts the app (producers and workers alike).

    :param app: the app (``app.config``, ``app.broker``, ``app.storage`` are set).

    Return a context manager (sync or async) or None.
    """


@hookspec
def qtasks_worker_lifespan(worker: Worker) -> Any:
    """Wrap the life of one worker process: set up per-process SDKs, close worker-scoped state.

    **When:** entered in the worker process after the app has started and before the first
    message is fetched (after any fork); exited after the last in-flight task has finished or
    been returned to the broker. Use it to flush exporters so nothing is lost at shutdown.

    :param worker: the :class:`~qtasks.worker.Worker` (``worker.app``, ``worker.id``,
        ``worker.stash`` for per-worker plugin state).

    Return a context manager (sync or async) or None.
    """


@hookspec
def qtasks_internal_context(kind: str, app: QueueTasks) -> Any:
    """Wrap the worker's own background loops, so tracing plugins can keep them quiet.

    **When:** entered once around each long-running internal loop, in its own asyncio task:
    ``kind`` is ``"fetch"`` (a worker polling the broker), ``"heartbeat"`` (a worker renewing
    leases and checking cancellations) or ``"schedule"`` (a scheduler waiting for its next
    slot). Task executions and the messages a scheduler publishes never inherit this context.

    :param kind: which loop.
    :param app: the app the loop belongs to.

    Return a context manager (sync or async) or None.
    """


# --------------------------------------------------------------------------- producer side


@hookspec
def qtasks_publish_context(message: Message, app: QueueTasks) -> Any:
    """Wrap the sending of one message (a new task, a retry, a scheduled run).

    **When:** in the process that publishes: the producer for ``add_task``, the worker for a
    retry (then inside the failed attempt's execution contexts) and the scheduler for periodic
    runs. The message is built but not serialized yet.

    :param message: the message about to be sent; ``message.headers`` may still be changed.
    :param app: the app sending it (its broker, its tasks).

    Return a context manager (sync or async) or None. An exception from the send reaches it.
    """


@hookspec
def qtasks_inject_headers(message: Message, headers: dict[str, str], app: QueueTasks) -> None:
    """Add string headers (trace context, tenant ids, ...) to a message about to be sent.

    **When:** inside every :func:`qtasks_publish_context`, just before serialization, in the
    publishing process. Headers travel with the message through retries, delays, requeues and
    dead letters.

    :param message: the message being sent.
    :param headers: the message's header dict; set ``str`` keys to ``str`` values.
    :param app: the app sending it.

    Collects all results (return None).
    """


@hookspec(firstresult=True)
def qtasks_encode_value(value: Any) -> Any:
    """Turn a value the serializer cannot encode into plain data (dicts, lists, str, numbers).

    **When:** whenever the serializer meets an object it does not know: task arguments in the
    producer, task results in the worker.

    :param value: the object.

    Stops at the first non-None result. Return None to leave the value to other plugins; if no
    plugin converts it, the caller gets a ``TypeError`` that names the argument.
    """


# --------------------------------------------------------------------------- worker side


@hookspec
def qtasks_execution_context(run: TaskRun) -> Any:
    """Wrap the execution of one delivered message: call, outcome, record and ack.

    **When:** in the worker, inside the asyncio task that handles the delivery (a fresh
    contextvars context per delivery, so spans and log bindings are right; sync functions run
    in a thread with a copy of it). Entered after the message is decoded and before the
    ``running`` record is stored; exited after the delivery is settled.

    :param run: the :class:`~qtasks.worker.TaskRun`. ``run.task`` is None for a task name this
        worker does not know. ``run.args`` and ``run.kwargs`` may be replaced to change what the
        function receives; ``run.stash`` holds per-run plugin state.

    Return a context manager (sync or async) or None. An exception raised while entering it
    rejects the run (status ``error``, not retried). Contexts see a normal exit: the task's own
    exception is in ``run.outcome``.
    """


@hookspec(firstresult=True)
def qtasks_retry_delay(run: TaskRun, exc: BaseException) -> float | None:
    """Decide whether, and after how many seconds, a failed attempt is retried.

    **When:** in the worker, after the task function raised ``exc`` (not for cancellations or
    rejected arguments). The built-in default retries exceptions listed in the task's
    ``retry_on_exc`` (any exception when the list is empty) while ``run.message.attempt`` is at
    most ``retry``, with exponential backoff and full jitter.

    :param run: the run that failed.
    :param exc: the exception.

    Stops at the first non-None result: seconds until the next attempt; a negative number means
    "do not retry".
    """


@hookspec
def qtasks_task_outcome(run: TaskRun, outcome: Outcome) -> None:
    """Observe how a run ended.

    **When:** in the worker, inside the run's execution contexts, after the outcome is known and
    before the record is stored and the delivery settled.

    :param run: the run.
    :param outcome: an :class:`~qtasks.worker.Outcome`; ``outcome.kind`` is one of ``success``,
        ``failure``, ``retry``, ``rejected``, ``cancelled``, ``dead_letter`` or ``duplicate``
        (a redelivery of a task that had already finished: acked, not run again).

    Collects all results (return None).
    """
