"""The worker: fetch leased deliveries, run them, settle them. One asyncio implementation.

Lease protocol (the same for every broker): a delivery is fetched with a short lease; while its
task runs, the heartbeat renews it every ``min(1 s, lease/4)``. If the worker dies, renewals
stop and another worker gets the message within one lease. A task's record is saved before its
delivery is acked, and a final record is never overwritten, so a redelivery after a crash sees
the finished record and is acked without running again.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import replace
from typing import Any, TypeVar

from qtasks.app import QueueTasks
from qtasks.calls import call, storable
from qtasks.errors import MalformedMessage, TaskCancelError
from qtasks.log import debug_enabled, get_logger
from qtasks.messages import Record, Status
from qtasks.plugins import enter_all
from qtasks.protocols import Delivery
from qtasks.runs import ACKED, QUIET, STATUS, Outcome, OutcomeKind, TaskContext, TaskRun, traceback_of

__all__ = ["Outcome", "OutcomeKind", "TaskContext", "TaskRun", "Worker"]

T = TypeVar("T")


class Worker:
    """Runs an app's tasks from its broker until :meth:`stop`.

    :param queues: queues to consume (default: the queues of the app's tasks).
    :param concurrency: tasks run at the same time (default ``Config.concurrency``).
    :param lease: seconds a delivery is held without renewal (default ``Config.lease``).
    :param grace: seconds to let running tasks finish on stop (default ``Config.grace``).
    """

    def __init__(
        self,
        app: Any,
        *,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        lease: float | None = None,
        grace: float | None = None,
    ) -> None:
        self.app: QueueTasks = app.core
        config = self.app.config
        self.queues = list(queues or self.app.queues())
        self.concurrency = concurrency or config.concurrency
        self.lease = lease or config.lease
        self.grace = config.grace if grace is None else grace
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.stash: dict[Any, Any] = {}
        self.counts = dict.fromkeys(OutcomeKind, 0)
        self.log = get_logger("qtasks.worker")
        self._runs: dict[asyncio.Task[None], TaskRun | None] = {}  # every delivery held
        self._calling = 0  # deliveries not yet past their call: what `concurrency` limits
        self._stopping = False
        self._fetcher: asyncio.Future[None] | None = None
        self._slot, self._hurry = asyncio.Event(), asyncio.Event()
        self.ready = asyncio.Event()  #: set once the worker has started and is about to fetch

    # ------------------------------------------------------------------ life

    async def run(self) -> None:
        """Start the app if needed, process messages until :meth:`stop`, then drain."""
        app = self.app
        async with AsyncExitStack() as stack:
            owns_app = app._stack is None
            await app.start()
            if owns_app:  # stopped last, after the worker lifespan hooks exit
                stack.push_async_callback(app.stop)
            await enter_all(stack, app.hook.qtasks_worker_lifespan(worker=self))
            self.log.info(
                "worker.started",
                worker=self.id,
                queues=self.queues,
                concurrency=self.concurrency,
                broker=type(app.broker).__name__,
                storage=type(app.storage).__name__,
                plugins=sorted(app.plugins.origins),
            )
            clean = contextvars.copy_context()
            self.ready.set()
            beat = asyncio.create_task(self._internal("heartbeat", self._heartbeat), context=clean.copy())
            try:
                await self._internal("fetch", lambda: self._fetch_loop(clean))
            finally:
                await self._drain()
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
            self.log.info("worker.stopped", worker=self.id, **{k.value: v for k, v in self.counts.items() if v})

    def stop(self) -> None:
        """Stop fetching and drain: running tasks get ``grace`` seconds, then go back to the
        broker. A second call returns them at once."""
        if self._stopping:
            self._hurry.set()
        self._stopping = True
        if self._fetcher is not None:
            self._fetcher.cancel()
        self._slot.set()

    async def _internal(self, kind: str, loop: Callable[[], Awaitable[None]]) -> None:
        async with AsyncExitStack() as stack:
            await enter_all(stack, self.app.hook.qtasks_internal_context(kind=kind, app=self.app))
            await loop()

    async def _fetch_loop(self, clean: contextvars.Context) -> None:
        backoff = 0.1
        while not self._stopping:
            # A run frees its slot when its call ends; storing its record and acking it overlap
            # with the next fetch. Held deliveries stay bounded at twice the concurrency.
            free = min(self.concurrency - self._calling, 2 * self.concurrency - len(self._runs))
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            self._fetcher = asyncio.ensure_future(self._fetch(free, clean))  # starts runs; they step first
            try:
                await self._fetcher
                backoff = 0.1
            except asyncio.CancelledError:
                if self._stopping:
                    break
                raise
            except Exception as exc:  # broker down: keep trying, never crash
                self.log.warning("broker.fetch_failed", error=f"{type(exc).__name__}: {exc}", retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._fetcher = None

    async def _fetch(self, free: int, clean: contextvars.Context) -> None:
        for delivery in await self.app.broker.fetch(self.queues, free, self.lease, 5.0):
            self._runs[asyncio.create_task(self._handle(delivery), context=clean.copy())] = None
            self._calling += 1

    async def _drain(self) -> None:
        pending = {t for t in self._runs if not t.done()}
        if pending:
            self.log.info("worker.draining", running=len(pending), grace=self.grace)
        deadline = time.monotonic() + self.grace
        while pending and not self._hurry.is_set() and (left := deadline - time.monotonic()) > 0:
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait([*pending, hurry], timeout=left, return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
            pending = {t for t in pending if not t.done()}
        for task in pending:
            task.cancel()  # _handle returns the message to the broker
        if pending:
            await asyncio.wait(pending, timeout=10)

    async def _heartbeat(self) -> None:
        interval = min(1.0, self.lease / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._beat(interval)
            except Exception:  # never let one bad beat end the renewals
                self.log.exception("heartbeat.failed")

    async def _beat(self, interval: float) -> None:
        """Renew the leases of runs older than one interval; interrupt the ones cancelled."""
        now = time.time()
        due = [r for r in self._runs.values() if r is not None and now - r.started_at >= interval]
        renewed = await asyncio.gather(*(r.delivery.extend(self.lease) for r in due), return_exceptions=True)
        for run, ok in zip(due, renewed, strict=True):
            if ok is not True and run.outcome is None:  # once settling, it may be acked already
                self.log.warning("lease.lost", task_id=run.message.id, error=repr(ok) if ok is not False else None)
        calling = [r for r in due if r.calling]
        records = await asyncio.gather(*(self.app.storage.get(r.message.id) for r in calling), return_exceptions=True)
        for run, record in zip(calling, records, strict=True):
            cancelled = isinstance(record, Record) and record.status == Status.CANCELLED
            if cancelled and run.calling and run.cancel_reason is None and run.handle is not None:
                run.cancel_reason = record.reason or "cancelled"  # type: ignore[union-attr]
                run.handle.cancel()

    # ------------------------------------------------------------------ one delivery

    async def _handle(self, delivery: Delivery) -> None:
        me = asyncio.current_task()
        assert me is not None
        calling = True
        try:
            try:
                if len(delivery.body) > self.app.config.max_payload:
                    raise MalformedMessage(f"{len(delivery.body)} bytes, over max_payload")
                message = self.app.decode(delivery.body)
            except MalformedMessage as exc:
                self.log.warning("message.malformed", reason=str(exc))
                await self._persist(delivery.dead_letter, f"malformed message: {exc}")
                return
            spec = self.app.lookup(message.name)
            run = TaskRun(message, spec, delivery, self, list(message.args), dict(message.kwargs), handle=me)
            self._runs[me] = run

            def called() -> None:
                nonlocal calling
                calling, self._calling = False, self._calling - 1
                self._slot.set()

            await self._execute(run, called)
        except asyncio.CancelledError:
            me.uncancel()
            await self._persist(delivery.nack, 0.0)  # stopping: give it back for another worker
        except Exception:
            self.log.exception("worker.internal_error")  # the lease lapses; it is delivered again
        finally:
            self._runs.pop(me, None)
            if calling:
                self._calling -= 1
            self._slot.set()

    async def _execute(self, run: TaskRun, called: Callable[[], None]) -> None:
        hook = self.app.hook
        async with AsyncExitStack() as stack:
            try:
                await enter_all(stack, hook.qtasks_execution_context(run=run))
                outcome = await self._run(run)
            except Exception as exc:
                outcome = Outcome(OutcomeKind.REJECTED, exc=exc, reason=f"{type(exc).__name__}: {exc}")
            called()
            run.outcome = outcome
            hook.qtasks_task_outcome(run=run, outcome=outcome)
            await self._settle(run, outcome)
            self.counts[outcome.kind] += 1
            quiet = outcome.kind in QUIET
            if not quiet or debug_enabled("qtasks.worker"):
                (self.log.debug if quiet else self.log.warning)(
                    "task.finished",
                    outcome=outcome.kind.value,
                    duration_s=round(time.time() - run.started_at, 6),
                    **({"reason": outcome.reason} if outcome.reason else {}),
                )

    async def _run(self, run: TaskRun) -> Outcome:
        spec, message = run.task, run.message
        if spec is None:
            return Outcome(OutcomeKind.REJECTED, reason=f"unknown task {message.name!r}: no such task in this worker")
        if run.delivery.count > self.app.config.max_deliveries:
            reason = f"delivered {run.delivery.count} times without finishing (max_deliveries)"
            return Outcome(OutcomeKind.DEAD_LETTER, reason=reason)
        try:
            spec.check_arguments(run.args, run.kwargs)
        except TypeError as exc:
            return Outcome(OutcomeKind.REJECTED, exc=exc, reason=f"wrong arguments: {exc}")
        if getattr(run.delivery, "fresh", False):  # see Delivery: call now; `running` once it yields
            asyncio.get_running_loop().call_soon(lambda: run.calling and self._running(run))  # no record if done
        elif not await self._persist(self.app.storage.save, self._running(run), self.app.config.result_ttl):
            stored = await self.app.storage.get(message.id)
            if stored is not None and stored.status == Status.CANCELLED:
                return Outcome(OutcomeKind.CANCELLED, reason=stored.reason)
            return Outcome(OutcomeKind.DUPLICATE)
        run.calling = True
        try:
            value = await call(run, spec)
            return Outcome(OutcomeKind.SUCCESS, value=storable(spec, value, self.app.serializer))
        except TaskCancelError as exc:
            return Outcome(OutcomeKind.CANCELLED, reason=exc.reason or "cancelled")
        except asyncio.CancelledError:
            if run.cancel_reason is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return Outcome(OutcomeKind.CANCELLED, reason=run.cancel_reason)
        except Exception as exc:
            delay = self.app.hook.qtasks_retry_delay(run=run, exc=exc)
            kind = OutcomeKind.RETRY if delay is not None and delay >= 0 else OutcomeKind.FAILURE
            return Outcome(kind, exc=exc, reason=f"{type(exc).__name__}: {exc}", retry_in=delay)
        finally:
            run.calling = False

    def _running(self, run: TaskRun) -> Record:  # saved here for a fresh delivery still calling
        record = Record.from_message(run.message, Status.RUNNING, worker=self.id, started_at=run.started_at)
        if run.calling:  # a call that ended in its first step goes straight to its final record
            saving = asyncio.ensure_future(self.app.storage.save(record, self.app.config.result_ttl))
            saving.add_done_callback(lambda f: f.cancelled() or f.exception())
        return record

    # ------------------------------------------------------------------ settling

    async def _settle(self, run: TaskRun, outcome: Outcome) -> None:
        delivery, message, kind = run.delivery, run.message, outcome.kind
        if kind is OutcomeKind.DUPLICATE:
            return await self._persist(delivery.ack)
        if kind is OutcomeKind.SUCCESS and (step := message.next_step(outcome.value)) is not None:
            await self._persist(self.app.submit, step)  # before this record: a crash reruns this step
        now, ack_with = time.time(), getattr(delivery, "ack_with", None) if kind in ACKED else None
        record = Record.from_message(
            message,
            STATUS[kind],
            worker=self.id,
            started_at=run.started_at,
            updated_at=now,
            finished_at=None if kind is OutcomeKind.RETRY else now,
            reason=outcome.reason,
            returning=outcome.value,
            traceback=traceback_of(outcome),
        )
        try:
            await self._persist(ack_with or self.app.storage.save, record, self.app.config.result_ttl)
        except OSError:
            raise  # the backend stayed away: the lease lapses and the message comes back
        except Exception as exc:  # this record can never be stored: keep the message, say why
            reason = f"record cannot be stored: {type(exc).__name__}: {exc}"
            self.log.warning("record.unstorable", task_id=message.id, reason=reason)
            failed = replace(record, status=Status.ERROR, returning=None, reason=reason)  # waiters get an end
            with suppress(Exception):  # ... if the storage takes this one
                await self._persist(self.app.storage.save, failed, self.app.config.result_ttl)
            await self._persist(delivery.dead_letter, reason)
            return
        if kind is OutcomeKind.RETRY:
            delay = outcome.retry_in or 0.0
            again = replace(
                message,
                attempt=message.attempt + 1,
                eta=now + delay,
                history=[*message.history, {"attempt": message.attempt, "error": outcome.reason, "at": now}],
            )
            await self.app.publish(again, lambda body: self._persist(delivery.nack, delay, body))
        elif kind not in ACKED:
            await self._persist(delivery.dead_letter, outcome.reason or kind.value)
        elif ack_with is None:  # else the save acked it
            await self._persist(delivery.ack)

    async def _persist(self, op: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Call a broker or storage operation, retrying while the backend is down (``OSError``)."""
        delay, deadline = 0.05, time.monotonic() + max(30.0, self.lease * 3)
        while True:
            try:
                return await op(*args)
            except OSError as exc:  # ConnectionError, TimeoutError: the backend is away; others raise
                if time.monotonic() > deadline:
                    raise
                self.log.warning("backend.retrying", op=getattr(op, "__qualname__", repr(op)), error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
