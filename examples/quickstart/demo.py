"""`make demo`: start a worker process, submit tasks from this one, print what comes back.

Runs in a fresh temporary directory, so the SQLite file (the default, ./qtasks.db) is new.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="qtasks-demo-")
    os.chdir(workdir)
    sys.path.insert(0, str(HERE))
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    log = open("worker.log", "w")  # noqa: SIM115
    print(f"starting a worker: qtasks worker -A app:app   (in {workdir})")
    worker = subprocess.Popen(
        [sys.executable, "-m", "qtasks", "worker", "-A", "app:app", "--log-format", "json"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while "worker.started" not in Path("worker.log").read_text():
            if worker.poll() is not None or time.monotonic() > deadline:
                print(Path("worker.log").read_text())
                return 1
            time.sleep(0.05)

        from app import app, divide, echo, squares, too_slow, whoami
        from qtasks import TaskTimeoutError

        record = echo.add_task("Hello", timeout=10)
        print(f"echo('Hello')        -> status={record.status} returning={record.returning!r}")
        record = divide.add_task(1, 0, timeout=10)
        last_line = record.traceback.strip().splitlines()[-1]
        print(f"divide(1, 0)         -> status={record.status} traceback ends: {last_line}")
        record = squares.add_task(5, timeout=10)
        print(f"squares(5)           -> {record.returning}")
        record = too_slow.add_task(timeout=10)
        print(f"too_slow()           -> status={record.status}: {record.traceback.strip().splitlines()[-1]}")
        record = whoami.add_task(timeout=10)
        print(f"whoami()             -> {record.returning}")
        queued = echo.add_task("later")
        print(f"fire and forget      -> status={queued.status} id={queued.id}")
        print(f"app.get(id) later    -> status={app.wait(queued.id, 10).status}")
        try:
            app.add_task("echo", "x", timeout=0.000001)
        except TaskTimeoutError as exc:
            print(
                f"timeout              -> TaskTimeoutError for {exc.task_id}; result later: "
                f"{app.wait(exc.task_id, 10).returning!r}"
            )

        start = time.perf_counter()
        ids = [echo.add_task(str(i)).id for i in range(500)]
        results = [app.wait(i, 30) for i in ids]
        elapsed = time.perf_counter() - start
        assert all(r.status == "success" for r in results)
        print(f"500 tasks submitted and finished in {elapsed:.2f} s ({500 / elapsed:.0f} tasks/s, one worker process)")
        app.stop()
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        log.close()
        print(f"worker stopped with exit code {code} (SIGTERM: it drains, then exits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
