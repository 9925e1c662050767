"""Running workers as a program: OS signals and the supervised pool of worker processes.

This module is the only place that touches signal handlers; library code never does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import sys
import time
from typing import Any

from qtasks.log import configure_for_cli, get_logger
from qtasks.worker import Worker


def run_worker(
    app: Any,
    *,
    processes: int = 1,
    beat: bool = False,
    log_format: str = "auto",
    log_level: str = "INFO",
    **options: Any,
) -> int:
    """Run one worker (or ``processes`` supervised ones) until SIGINT/SIGTERM; exit code.
    ``beat=True`` also runs the scheduler (in the supervisor's first child only)."""
    configure_for_cli(log_format, log_level)
    if processes > 1:
        return supervise(app, processes, options, beat)
    return _serve(app, Worker(app, **options), beat)


def run_scheduler(app: Any, *, log_format: str = "auto", log_level: str = "INFO") -> int:
    """Run the app's scheduler alone until SIGINT/SIGTERM."""
    configure_for_cli(log_format, log_level)
    return _serve(app, None, True)


def exit_on_stop_signals() -> None:
    """Until a worker installs its graceful handlers, SIGTERM/SIGINT end the process at once with
    status 0: nothing has been fetched yet, so there is nothing to drain or lose."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))


def _serve(app: Any, worker: Worker | None, beat: bool) -> int:
    from qtasks.schedule import Scheduler

    scheduler = Scheduler(app) if beat else None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        services = [s for s in (worker, scheduler) if s is not None]
        await app.core.start()  # one start for both, so neither stops the app under the other
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: [s.stop() for s in services])
        try:
            await asyncio.gather(*(s.run() for s in services))
        finally:
            await app.core.stop()

    asyncio.run(main())
    return 0


def _child(app: Any, options: dict[str, Any], beat: bool) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    sys.exit(run_worker(app, log_format="none", beat=beat, **options))


def supervise(app: Any, processes: int, options: dict[str, Any], beat: bool = False) -> int:
    """Keep ``processes`` worker processes alive; restart any that dies; forward SIGTERM/SIGINT.

    Children are forked before any event loop exists, so each starts its app from scratch.
    A child that dies within a second of starting is restarted after a growing pause.
    """
    log = get_logger("qtasks.supervisor")
    ctx = multiprocessing.get_context("fork")
    children: dict[int, tuple[Any, float]] = {}
    pause: dict[int, float] = dict.fromkeys(range(processes), 0.0)
    signals: list[int] = []

    def start(slot: int) -> None:
        proc = ctx.Process(target=_child, args=(app, options, beat and slot == 0), name=f"qtasks-worker-{slot}")
        proc.start()
        children[slot] = (proc, time.monotonic())
        log.info("supervisor.started_child", slot=slot, pid=proc.pid)

    def on_signal(signum: int, _frame: Any) -> None:
        signals.append(signum)
        for proc, _ in children.values():
            proc.terminate()  # SIGTERM

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for slot in range(processes):
            start(slot)
        while not signals:
            time.sleep(0.2)
            for slot, (proc, born) in list(children.items()):
                if proc.is_alive() or signals:
                    continue
                log.warning("supervisor.child_died", slot=slot, pid=proc.pid, exitcode=proc.exitcode)
                pause[slot] = min(max(pause[slot] * 2, 0.5), 10.0) if time.monotonic() - born < 1 else 0.0
                time.sleep(pause[slot])
                start(slot)
        for proc, _ in children.values():
            proc.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("supervisor.stopped")
    return 0
