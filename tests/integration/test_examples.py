"""The QTasks extensibility-page example (examples/fastapi), run as written, in two processes."""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("broker", [None, "elsewhere"])
def test_fastapi_example_runs_as_written(spawn: Any, tmp_path: Path, broker: str | None) -> None:
    env = {"PYTHONPATH": str(ROOT)}
    if broker:
        env["QTASKS_BROKER"] = f"sqlite:///{tmp_path / 'elsewhere' / 'shared.db'}"
    server = spawn([sys.executable, "-m", "examples.fastapi.qtasks_app"], env=env, name="server")
    server.wait_for("worker.started")
    port = free_port()
    api = spawn([sys.executable, "-m", "uvicorn", "examples.fastapi.api:app", "--port", str(port)], env=env, name="api")
    assert get_json(f"http://127.0.0.1:{port}/") == {"result": 3}
    assert get_json(f"http://127.0.0.1:{port}/") == {"result": 3}
    assert server.stop() == 0, "the worker drains and exits cleanly"
    assert api.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its clean shutdown
    default_db = tmp_path / "qtasks.db"
    if broker:
        assert (tmp_path / "elsewhere" / "shared.db").exists() and not default_db.exists()
    else:
        assert default_db.exists()
