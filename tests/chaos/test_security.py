"""Security defaults (docs/security.md): no pickle, names resolved only against registered
tasks, no network socket opened by a worker, no secrets in logs or errors."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from qtasks.asyncio import QueueTasks

from tests.conftest import ROOT, qtasks_cli

UNSAFE = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|marshal|shelve|cloudpickle)\b|\beval\(|\bexec\(", re.M)


def test_no_pickle_or_eval_of_wire_data_in_any_package() -> None:
    offenders = []
    for path in (ROOT / "packages").rglob("*.py"):
        for match in UNSAFE.finditer(path.read_text()):
            line = path.read_text()[: match.start()].count("\n") + 1
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0).strip()}")
    # the one eval: resolving the *annotations* of the application's own task functions
    assert offenders == [f"packages/qtasks-core/src/qtasks/builtin/injection.py:{_eval_line()}: eval("]


def _eval_line() -> int:
    text = (ROOT / "packages/qtasks-core/src/qtasks/builtin/injection.py").read_text()
    return text[: text.index("eval(")].count("\n") + 1


async def test_task_names_resolve_only_against_registered_tasks(tmp_path: Path) -> None:
    app = QueueTasks(broker="memory", storage="memory")

    @app.task
    async def allowed() -> str:
        return "ok"

    from qtasks.messages import Message
    from qtasks.protocols import Envelope
    from qtasks.testing import running_worker

    async with app, running_worker(app):
        for name in ["os.system", "builtins.eval", "qtasks.app.QueueTasks", "__import__", "allowed.__class__"]:
            message = Message(name=name, args=["echo pwned > pwned"])
            await app.broker.publish(Envelope(message.id, "default", app.encode(message)))
            record = await app.wait(message.id, 5)
            assert record.status == "error" and "unknown task" in record.traceback
    assert not (tmp_path / "pwned").exists()


def _sockets(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _inet_inodes() -> set[int]:
    found = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/net/{table}")
        if path.exists():
            for row in path.read_text().splitlines()[1:]:
                found.add(int(row.split()[9]))
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc (Linux)")
def test_a_worker_opens_no_network_socket(tmp_path: Path, spawn: Any) -> None:
    (tmp_path / "quiet.py").write_text(
        "from qtasks.asyncio import QueueTasks\napp = QueueTasks()\n@app.task\nasync def t() -> None: ...\n"
    )
    proc = spawn(qtasks_cli("worker", "-A", "quiet:app", "--log-format", "json"), name="quiet")
    proc.wait_for("worker.started")
    sockets = _sockets(proc.popen.pid)
    assert not sockets & _inet_inodes(), "no TCP or UDP socket, listening or not"
    unix = Path("/proc/net/unix").read_text().splitlines()[1:]
    paths = [row.split()[-1] for row in unix if len(row.split()) >= 8 and int(row.split()[6]) in sockets]
    for path in paths:  # the embedded backend's wake-up sockets: private to this user
        directory = Path(path).parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and directory.stat().st_uid == os.getuid()
    proc.stop()


def test_a_worker_never_logs_its_broker_password(tmp_path: Path, spawn: Any) -> None:
    from qtasks import QueueTasks as BlockingApp

    from tests.servers import redis_server

    (tmp_path / "secret_app.py").write_text(
        "from qtasks.asyncio import QueueTasks\napp = QueueTasks()\n"
        "@app.task\nasync def t(x: str) -> str:\n    return x\n"
    )
    with redis_server(password="s3cret-pw-42") as server:
        env = {"QTASKS_BROKER": server.url, "QTASKS_TRACE_HOOKS": "1"}
        argv = qtasks_cli("worker", "-A", "secret_app:app", "--log-level", "debug", "--log-format", "json")
        proc = spawn(argv, env=env)
        proc.wait_for("worker.started")
        client = BlockingApp(broker=server.url)
        assert client.add_task("t", "hello", timeout=10).returning == "hello"
        client.stop()
        assert proc.stop() == 0
        output = proc.output
    assert "task.finished" in output and "hook.call" in output, "debug logging was on"
    assert "s3cret-pw-42" not in output


async def test_a_wakeup_directory_made_by_someone_else_is_not_used(tmp_path: Path) -> None:
    """The sqlite backend's wake-up sockets live in a directory named after the database; if one
    of that name exists and is not private (made first by another user, or opened up), nothing
    is bound or sent there: the backend polls instead, and still runs tasks."""
    from qtasks.builtin.wakeup import Wakeup

    db = tmp_path / "shared.db"
    wakeup = Wakeup(str(db))
    os.makedirs(wakeup.dir, mode=0o777)
    os.chmod(wakeup.dir, 0o777)  # the umask may have taken some of it
    planted = Path(wakeup.dir) / "done.1.x.y"
    planted.touch()  # a name a notifier would send to
    try:
        assert wakeup.listen("done", lambda _: None) is False
        assert sorted(os.listdir(wakeup.dir)) == ["done.1.x.y"], "no socket bound there"
        app = QueueTasks(broker=f"sqlite:///{db}")

        @app.task
        async def add(x: int, y: int) -> int:
            return x + y

        from qtasks.testing import running_worker

        async with app, running_worker(app):
            assert (await add.add_task(1, 2, timeout=10)).returning == 3
        assert sorted(os.listdir(wakeup.dir)) == ["done.1.x.y"]
    finally:
        planted.unlink()
        os.rmdir(wakeup.dir)
