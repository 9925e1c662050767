"""Logging as a library: no global configuration, context bound per task, no arguments logged."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from qtasks.asyncio import QueueTasks
from qtasks.log import configure_for_cli, get_logger
from qtasks.testing import running_worker


@pytest.fixture(autouse=True)
def _reset_structlog() -> Any:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


async def test_tasks_log_with_bound_context_and_never_their_arguments(caplog: pytest.LogCaptureFixture) -> None:
    app = QueueTasks(broker="memory", storage="memory")

    @app.task(echo=True)
    async def secretive(self: Any, password: str) -> str:
        self.ctx.get_logger("myapp").info("working")
        return f"result-{password}"

    @app.task
    async def failing(password: str) -> None:
        raise ValueError("nope")

    caplog.set_level(logging.DEBUG)
    async with running_worker(app):
        ok = await secretive.add_task("hunter2", timeout=5)
        bad = await failing.add_task("hunter2", timeout=5)
    assert structlog.is_configured() is False, "a library never configures logging"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2" not in text, "arguments and results are not logged"
    working = next(r.getMessage() for r in caplog.records if r.name == "myapp")
    assert f"task_id='{ok.id}'" in working and "task_name='secretive'" in working and "attempt=1" in working
    failed = next(r for r in caplog.records if "failing" in r.getMessage() and r.levelno == logging.WARNING)
    assert f"task_id='{bad.id}'" in failed.getMessage() and "outcome='failure'" in failed.getMessage()


def test_an_app_configured_structlog_chain_is_used() -> None:
    structlog.configure(processors=[structlog.testing.LogCapture()], cache_logger_on_first_use=False)
    capture = structlog.get_config()["processors"][0]
    get_logger("qtasks.worker").info("event.name", key="value")
    assert capture.entries == [{"event": "event.name", "key": "value", "log_level": "info"}]


def test_cli_configuration_leaves_an_application_configuration_alone() -> None:
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        configure_for_cli("json")
        assert structlog.is_configured() is False
    finally:
        root.removeHandler(handler)


def test_worker_command_logs_json_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "logapp.py").write_text(
        "from qtasks.asyncio import QueueTasks\napp = QueueTasks(broker='memory', storage='memory')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "qtasks", "worker", "-A", "logapp:app"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.terminate()
    proc.wait(10)
    event = json.loads(line)
    assert event["event"] == "worker.started" and event["level"] == "info" and "timestamp" in event
