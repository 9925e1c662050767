"""The ``qtasks`` command (also ``python -m qtasks``)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from qtasks.config import Config
from qtasks.plugins import build, describe

T = TypeVar("T")


def load_app(path: str) -> Any:
    """Import ``module:attribute`` (default attribute ``app``) with the cwd importable.

    A callable that is not an app is called (an app factory).
    """
    module_name, _, attr = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in (attr or "app").split("."):
        obj = getattr(obj, part)
    if callable(obj) and not hasattr(obj, "core"):
        obj = obj()
    return obj


def _parser(extra_commands: Any) -> argparse.ArgumentParser:
    app_opt = argparse.ArgumentParser(add_help=False)
    app_opt.add_argument("-A", "--app", "-app", dest="app", default=argparse.SUPPRESS, help="module:app")
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument("--log-format", choices=["auto", "console", "json", "none"], default="auto")
    logs.add_argument("--log-level", default="INFO")
    parser = argparse.ArgumentParser(prog="qtasks", parents=[app_opt], description="qtasks task queue")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[Any], int], text: str, *parents: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[app_opt, *parents], help=text)
        p.set_defaults(handler=handler)
        return p

    for name in ("worker", "run"):
        p = command(name, _worker, "run a worker" + (" (QTasks spelling)" if name == "run" else ""), logs)
        p.add_argument("--processes", "-p", type=int, default=1, help="worker processes, supervised")
        p.add_argument("--concurrency", "-c", type=int, help="tasks run at once per process")
        p.add_argument("--queues", "-Q", help="comma-separated queues (default: the app's)")
        p.add_argument("--lease", type=float, help="seconds a delivery is held between renewals")
        p.add_argument("--grace", type=float, help="seconds to finish running tasks on stop")
        p.add_argument("--beat", "-B", action="store_true", help="also run the app's schedules")

    command("scheduler", _scheduler, "fire the app's periodic tasks (safe to run several)", logs)
    command("plugins", _plugins, "list plugins: origin, hooks, components").add_argument("--json", action="store_true")
    command("inspect", _inspect, "show the app's tasks and components").add_argument("--json", action="store_true")

    p = command("enqueue", _enqueue, "submit a task by name")
    p.add_argument("name")
    p.add_argument("--args", default="[]", help="JSON list of positional arguments")
    p.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    p.add_argument("--priority", type=int)
    p.add_argument("--delay", type=float)
    p.add_argument("--wait", type=float, help="wait this many seconds for the result")

    command("purge", _purge, "delete the queued messages of a queue").add_argument("--queue", "-Q", default="default")

    p = command("dead", _dead, "dead letters: list, replay, purge")
    p.add_argument("action", choices=["list", "replay", "purge"])
    p.add_argument("id", nargs="?", help="dead letter id (replay)")
    p.add_argument("--all", action="store_true", help="replay every dead letter")
    p.add_argument("--limit", type=int, default=100)

    extra_commands(subparsers=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    plugins = build(Config.from_env())  # load failures are shown by `qtasks plugins`, not raised
    args = _parser(plugins.hook.qtasks_add_cli_commands).parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"qtasks {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _app(args: argparse.Namespace) -> Any:
    if not getattr(args, "app", None):
        raise SystemExit(f"qtasks {args.command}: -A module:app is required")
    return load_app(args.app).core


def _worker(args: argparse.Namespace) -> int:
    from qtasks.runner import exit_on_stop_signals, run_worker

    exit_on_stop_signals()
    options = {k: getattr(args, k) for k in ("concurrency", "lease", "grace") if getattr(args, k) is not None}
    if args.queues:
        options["queues"] = [q.strip() for q in args.queues.split(",") if q.strip()]
    options.update(log_format=args.log_format, log_level=args.log_level)
    return run_worker(_app(args), processes=args.processes, beat=args.beat, **options)


def _scheduler(args: argparse.Namespace) -> int:
    from qtasks.runner import exit_on_stop_signals, run_scheduler

    exit_on_stop_signals()
    return run_scheduler(_app(args), log_format=args.log_format, log_level=args.log_level)


def _plugins(args: argparse.Namespace) -> int:
    plugins = _app(args).plugins if getattr(args, "app", None) else build(Config.from_env())
    rows = describe(plugins)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if "error" in row:
            print(f"{row['name']:<12} {row['origin']:<24} FAILED: {row['error']}")
            continue
        print(f"{row['name']:<12} {row['origin']:<24} {row['module']}")
        if row["components"]:
            print(f"{'':<12} components: {', '.join(row['components'])}")
        print(f"{'':<12} hooks: {', '.join(row['hooks']) or '-'}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    app = _app(args)
    wanted = {k: v if isinstance(v, str | None) else repr(v) for k, v in app._wanted.items()}
    info = {
        "name": app.name,
        "broker": wanted["broker"],
        "storage": wanted["storage"],
        "queues": app.queues(),
        "tasks": [spec.describe() for spec in sorted(app.known_tasks().values(), key=lambda s: s.name)],
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"app {info['name']}: broker={info['broker'] or 'sqlite (default)'} storage={info['storage'] or '(default)'}")
    for task in info["tasks"]:
        options = ", ".join(
            f"{k}={v}" for k, v in task.items() if k not in ("name", "description") and v not in (None, [], False)
        )
        print(f"  {task['name']}: {options}")
    return 0


def _within(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(app)`` with the ``-A`` app started, then stopped."""
    app = _app(args)

    async def go() -> T:
        async with app:
            return await work(app)

    return asyncio.run(go())


def _enqueue(args: argparse.Namespace) -> int:
    def submit(app: Any) -> Any:
        call = json.loads(args.args), json.loads(args.kwargs)
        return app.add_task(args.name, *call[0], priority=args.priority, delay=args.delay, timeout=args.wait, **call[1])

    record = _within(args, submit)
    print(json.dumps(record.to_dict(), default=str))
    return 0 if record.status != "error" else 1


def _purge(args: argparse.Namespace) -> int:
    print(f"purged {_within(args, lambda app: app.purge(args.queue))} message(s) from {args.queue!r}")
    return 0


def _dead(args: argparse.Namespace) -> int:
    if args.action == "replay" and not args.id and not args.all:
        raise SystemExit("qtasks dead replay: give an ID or --all")
    if args.action == "list":
        for dead in _within(args, lambda app: app.dead_letters(args.limit)):
            print(json.dumps({"id": dead.id, "queue": dead.queue, "reason": dead.reason, "died_at": dead.died_at}))
    elif args.action == "replay":
        print(f"replayed {_within(args, lambda app: app.replay(None if args.all else args.id))} dead letter(s)")
    else:
        print(f"purged {_within(args, lambda app: app.purge_dead())} dead letter(s)")
    return 0
