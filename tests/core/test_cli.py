"""The qtasks command: inspect, enqueue, purge, dead letters, add-on commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from qtasks.cli import main

from tests.core.distributions import install_distribution

APP = """
from qtasks.asyncio import QueueTasks
app = QueueTasks()

@app.task(priority=2, retry=3, retry_on_exc=[KeyError], tags=["math"], description="Adds.")
async def add(a: int, b: int) -> int:
    return a + b

@app.task(queue="slow", max_time=5)
def crunch(n: int) -> int:
    return n
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cliapp.py").write_text(APP)
    return tmp_path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "qtasks", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_inspect_lists_tasks_with_their_options(project: Path) -> None:
    out = run("inspect", "-A", "cliapp:app", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["queues"] == ["default", "slow"]
    add = next(t for t in info["tasks"] if t["name"] == "add")
    expected = {
        "kind": "async",
        "queue": "default",
        "priority": 2,
        "retry": 3,
        "retry_on_exc": ["KeyError"],
        "tags": ["math"],
        "description": "Adds.",
    }
    assert {key: add[key] for key in expected} == expected
    assert "(a: int, b: int) -> int" in add["signature"]
    text = run("-A", "cliapp:app", "inspect").stdout
    assert "crunch: kind=sync, queue=slow, max_time=5, signature=(n: int) -> int" in text


def test_enqueue_purge_and_dead_letters(project: Path) -> None:
    out = run("enqueue", "-A", "cliapp:app", "add", "--args", "[1, 2]")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert (record["name"], record["status"], record["args"]) == ("add", "new", [1, 2])
    out = run("enqueue", "-A", "cliapp:app", "nope")
    assert out.returncode == 1 and "unknown task 'nope'" in out.stderr
    assert "purged 1 message(s)" in run("purge", "-A", "cliapp:app").stdout
    assert run("dead", "list", "-A", "cliapp:app").stdout == ""
    assert "give an ID or --all" in run("dead", "replay", "-A", "cliapp:app").stderr


def test_dead_letters_list_and_replay_through_the_cli(project: Path) -> None:
    import asyncio

    sys.path.insert(0, str(project))
    try:
        from cliapp import app  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(project))

    async def make_dead() -> str:
        async with app:
            record = await app.add_task("add", 1, 2)
            (delivery,) = await app.broker.fetch(["default"], 1, 5.0, 1.0)
            await delivery.dead_letter("boom")
            return record.id

    task_id = asyncio.run(make_dead())
    (line,) = run("dead", "list", "-A", "cliapp:app").stdout.splitlines()
    dead = json.loads(line)
    assert dead["reason"] == "boom" and dead["queue"] == "default"
    assert "replayed 1 dead letter(s)" in run("dead", "replay", dead["id"], "-A", "cliapp:app").stdout
    assert run("dead", "list", "-A", "cliapp:app").stdout == ""

    async def queued() -> tuple[str, int]:
        async with app:
            (delivery,) = await app.broker.fetch(["default"], 1, 5.0, 1.0)
            return app.decode(delivery.body).id, await app.broker.depth("default")

    assert asyncio.run(queued()) == (task_id, 1), "the replayed message is back in its queue"


def test_add_on_commands_come_through_the_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = """
import qtasks

def hello(args):
    print(f"hello {args.who}")
    return 0

@qtasks.hookimpl
def qtasks_add_cli_commands(subparsers):
    p = subparsers.add_parser("hello")
    p.add_argument("who")
    p.set_defaults(handler=hello)
"""
    site = install_distribution(
        tmp_path / "site", "qtasks-hello", "0.1", {"hello": "qtasks_hello"}, {"qtasks_hello": source}
    )
    monkeypatch.syspath_prepend(str(site))
    assert main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"


def test_missing_app_option_is_a_clear_error(project: Path) -> None:
    out = run("inspect")
    assert out.returncode != 0 and "-A module:app is required" in out.stderr
