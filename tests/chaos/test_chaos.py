"""The crash drill, small: a few hundred tasks per backend, workers SIGKILLed every second."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import Backend, drill, table

pytestmark = pytest.mark.integration


async def test_sqlite_loses_nothing_under_kill_nine(tmp_path: Path) -> None:
    backend = Backend("sqlite", {"QTASKS_BROKER": f"sqlite:///{tmp_path / 'chaos.db'}"})
    report = await drill(backend, tmp_path, 400, kill_every=1.0, slow_seconds=0.4)
    print("\n" + table([report]))
    assert report.kills >= 2
    assert report.lost == []
    assert report.duplicates_unexplained == 0
    assert report.exit_codes and set(report.exit_codes) == {0}, "the survivors stop gracefully"


async def test_redis_loses_nothing_under_kill_nine_and_a_server_restart(tmp_path: Path) -> None:
    from tests.servers import redis_server

    with redis_server(persistent=True) as server:  # fsync'd AOF: what was acknowledged survives
        backend = Backend("redis", {"QTASKS_BROKER": server.url}, lambda: server.restart(down_for=0.5))
        report = await drill(backend, tmp_path, 400, kill_every=1.0, slow_seconds=0.4)
    print("\n" + table([report]))
    assert report.kills >= 2 and report.restarts == 1
    assert report.lost == []
    assert report.duplicates_unexplained == 0
    assert report.exit_codes and set(report.exit_codes) == {0}, "the survivors stop gracefully"


async def test_postgres_loses_nothing_under_kill_nine_and_a_server_crash(tmp_path: Path) -> None:
    import signal

    from tests.servers import postgres_server

    with postgres_server() as server:  # synchronous commit: what was acknowledged survives a crash
        restart = lambda: server.restart(down_for=0.5, sig=signal.SIGQUIT)  # noqa: E731 - an immediate shutdown
        backend = Backend("postgres", {"QTASKS_BROKER": server.url}, restart)
        report = await drill(backend, tmp_path, 400, kill_every=1.0, slow_seconds=0.4)
    print("\n" + table([report]))
    assert report.kills >= 2 and report.restarts == 1
    assert report.lost == []
    assert report.duplicates_unexplained == 0
    assert report.exit_codes and set(report.exit_codes) == {0}, "the survivors stop gracefully"
