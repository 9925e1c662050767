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
    assert report.exit_codes and set(report.exit_codes) == {0}, report.worker_failures


async def test_redis_loses_nothing_under_kill_nine_and_a_server_restart(tmp_path: Path) -> None:
    from tests.servers import redis_server

    with redis_server(persistent=True) as server:  # fsync'd AOF: what was acknowledged survives
        backend = Backend("redis", {"QTASKS_BROKER": server.url}, lambda: server.restart(down_for=0.5))
        report = await drill(backend, tmp_path, 400, kill_every=1.0, slow_seconds=0.4)
    print("\n" + table([report]))
    assert report.kills >= 2 and report.restarts == 1
    assert report.lost == []
    assert report.duplicates_unexplained == 0
    assert report.exit_codes and set(report.exit_codes) == {0}, report.worker_failures


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
    assert report.exit_codes and set(report.exit_codes) == {0}, report.worker_failures


async def test_kafka_loses_nothing_under_kill_nine(tmp_path: Path) -> None:
    """No server restart: Tansu keeps its data in memory only, so a restarted server has lost
    everything. A kill hands the partitions over after the session timeout (1 s here); the
    rebalances it causes may also run a survivor's task again (``dup(other)``: at least once
    across rebalances), so only losses and exit codes are asserted."""
    from tests.servers import kafka_server

    with kafka_server() as server:
        env = {"QTASKS_BROKER": server.url, "QTASKS_STORAGE": f"sqlite:///{tmp_path / 'chaos.db'}"}
        report = await drill(Backend("kafka", env), tmp_path, 2000, kill_every=2.0, slow_seconds=0.4)
    print("\n" + table([report]))
    assert report.kills >= 2
    assert report.lost == []
    assert report.exit_codes and set(report.exit_codes) == {0}, report.worker_failures
