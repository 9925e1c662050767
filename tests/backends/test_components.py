"""What every server backend's plugin does alike, in one process: it imports no client library
until it is used, and a server that refuses, is away or refuses the login is named by its URL
with the password masked. What only one backend has is in its own directory's
test_components.py."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import qtasks_kafka.client
import qtasks_postgres.database
import qtasks_redis.client
from qtasks.asyncio import QueueTasks
from qtasks.errors import ConfigError
from qtasks.testing import running_worker
from qtasks_kafka import KafkaUnavailable
from qtasks_postgres import PostgresUnavailable
from qtasks_redis import RedisUnavailable

from tests.backends.kit import MARKS
from tests.servers import free_port, postgres_server, redis_server


@dataclass(frozen=True)
class Client:
    """How one backend's plugin reaches its server, and how it says it cannot."""

    label: str  #: in "cannot connect to <label> at <url>"
    package: str
    library: str  #: the client library, imported only once the plugin is used
    unavailable: type[Exception]
    retries: ModuleType  #: where STARTUP_WAIT is
    url: str  #: a URL with ``{auth}`` and ``{port}``
    worker_user: str  #: the user name in the worker test's URL
    storage: str | None = None  #: the app's storage (Kafka keeps none)
    worker_env: tuple[tuple[str, str], ...] = ()
    #: a server with a password of its own (``password=``), and what a wrong one is told
    server: Callable[..., AbstractContextManager[Any]] | None = None
    masked: str = ""  #: the server's URL, masked (``{port}``)
    wrong_password: tuple[str, ...] = ("{masked}",)


CLIENTS = {
    "redis": Client(
        "Redis",
        "qtasks_redis",
        "redis",
        RedisUnavailable,
        qtasks_redis.client,
        "redis://{auth}@127.0.0.1:{port}/0",
        worker_user="",
        server=redis_server,
        masked="redis://:***@127.0.0.1:{port}/0",
    ),
    "postgres": Client(
        "PostgreSQL",
        "qtasks_postgres",
        "asyncpg",
        PostgresUnavailable,
        qtasks_postgres.database,
        "postgresql://{auth}@127.0.0.1:{port}/db",
        worker_user="qtasks",
        server=postgres_server,
        masked="postgresql://postgres:***@127.0.0.1:{port}/postgres",
        wrong_password=("PostgreSQL at {masked} refused the login", "password authentication failed"),
    ),
    "kafka": Client(
        "Kafka",
        "qtasks_kafka",
        "aiokafka",
        KafkaUnavailable,
        qtasks_kafka.client,
        "kafka://{auth}@127.0.0.1:{port}",
        worker_user="qtasks",
        storage="memory",
        worker_env=(("QTASKS_STORAGE", "sqlite"),),
    ),
}


def clients(*names: str) -> list[Any]:
    return [pytest.param(CLIENTS[name], marks=MARKS.get(name, []), id=name) for name in names or CLIENTS]


@pytest.mark.parametrize("client", clients())
def test_importing_the_plugin_does_not_import_its_client_library(client: Client) -> None:
    code = f"import sys, {client.package}, {client.package}.plugin; print({client.library!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("client", clients())
async def test_refused_connection_names_the_url_without_its_password(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client.retries, "STARTUP_WAIT", 0.3)  # tried again this long (the worker test waits the 3 s)
    port = free_port()  # nothing listens there
    app = QueueTasks(broker=client.url.format(auth="user:hunter2", port=port), storage=client.storage)
    with pytest.raises(client.unavailable) as caught:
        await app.start()
    message = str(caught.value)
    assert f"cannot connect to {client.label} at {client.url.format(auth='user:***', port=port)}" in message
    assert "hunter2" not in message and "hunter2" not in repr(caught.value.__cause__)


@pytest.mark.parametrize("client", clients())
def test_worker_command_refused_at_start_is_a_clear_error(client: Client, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "tasks_app.py").write_text("from qtasks.asyncio import QueueTasks\napp = QueueTasks()\n")
    url = client.url.format(auth=f"{client.worker_user}:s3cret", port=port)
    env = {"QTASKS_BROKER": url, **dict(client.worker_env), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "qtasks", "worker", "-A", "tasks_app:app", "--log-format", "none"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    masked = client.url.format(auth=f"{client.worker_user}:***", port=port)
    assert f"cannot connect to {client.label} at {masked}" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def bad_urls(name: str, *cases: tuple[str, str]) -> list[Any]:
    return [pytest.param(url, words, CLIENTS[name].storage, marks=MARKS.get(name, [])) for url, words in cases]


@pytest.mark.parametrize(
    ("url", "words", "storage"),
    [
        *bad_urls("redis", ("redis://:pa55@127.0.0.1:notaport/0", "redis://:***@127.0.0.1:notaport/0")),
        *bad_urls(
            "postgres",
            (
                "postgresql://u:pa55@127.0.0.1:notaport/db",
                "bad PostgreSQL URL 'postgresql://u:***@127.0.0.1:notaport/db'",
            ),
            ("postgresql://u:pa55@127.0.0.1/db?prefix=Bad-Name", "bad prefix 'Bad-Name'"),
            ("postgresql://u:pa55@127.0.0.1/db?schema=1x", "bad schema '1x'"),
            ("postgresql://u:pa55@127.0.0.1/db?pool_size=0", "bad pool_size '0'"),
        ),
        *bad_urls(
            "kafka",
            ("kafka://u:pa55@127.0.0.1:notaport", "bad Kafka URL 'kafka://u:***@127.0.0.1:notaport'"),
            ("kafka://u:pa55@127.0.0.1:9092?partitions=0", "bad partitions '0'"),
            ("kafka://u:pa55@127.0.0.1:9092?prefix=bad/name", "bad prefix 'bad/name'"),
            ("kafka://u:pa55@127.0.0.1:9092?sesion_timeout_ms=1", "unknown option 'sesion_timeout_ms'"),
            ("kafka://u:pa55@127.0.0.1:9092?sasl_mechanism=GSSAPI", "bad sasl_mechanism 'GSSAPI'"),
            ("kafka://u:pa55@", "bad Kafka URL 'kafka://u:***@': no host"),
        ),
    ],
)
async def test_a_bad_url_is_a_config_error_with_the_password_masked(url: str, words: str, storage: str | None) -> None:
    app = QueueTasks(broker=url, storage=storage)
    with pytest.raises(ConfigError) as caught:
        await app.start()
    assert words in str(caught.value) and "pa55" not in str(caught.value)


@pytest.mark.parametrize("client", clients("redis", "postgres"))
async def test_a_password_protected_server_works_and_a_wrong_password_is_named_masked(client: Client) -> None:
    assert client.server is not None
    with client.server(password="pw-0123") as server:
        app = QueueTasks(broker=server.url)

        @app.task
        async def double(x: int) -> int:
            return 2 * x

        async with app, running_worker(app):
            assert (await app.add_task("double", 4, timeout=10)).returning == 8
        wrong = QueueTasks(broker=server.url.replace("pw-0123", "nope-999"))
        with pytest.raises(client.unavailable) as caught:
            await wrong.start()
        message = str(caught.value)
        for words in client.wrong_password:
            assert words.format(masked=client.masked.format(port=server.port)) in message
        assert "nope-999" not in message and "pw-0123" not in message


@pytest.mark.parametrize("client", clients("redis", "postgres"))
async def test_commands_fail_clearly_while_the_server_stays_away(client: Client) -> None:
    """Waited for RECONNECT_FOR (3 s), then an error naming the server, its password masked."""
    assert client.server is not None
    with client.server(password="pw-away") as server:
        app = QueueTasks(broker=server.url)
        async with app:
            assert await app.broker.depth("q") == 0
            server.stop()
            start = time.monotonic()
            with pytest.raises(client.unavailable) as caught:
                await app.broker.depth("q")
            assert time.monotonic() - start < 10
            assert client.masked.format(port=server.port) in str(caught.value)
            assert "pw-away" not in str(caught.value)
            server.start()
            assert await app.broker.depth("q") == 0
