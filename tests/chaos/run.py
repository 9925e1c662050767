"""`make chaos`: the full crash drill (20,000 tasks per backend by default) and its table.

python -m tests.chaos.run [--tasks N] [--backends sqlite,redis,postgres,kafka] [--kill-every S]

kafka gets no server restart: the Tansu wheel keeps its data in memory only, so a restart
would lose everything, acknowledged or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.chaos.harness import Backend, Report, drill, table


@contextlib.contextmanager
def backend(name: str, workdir: Path) -> Iterator[Backend]:
    if name == "sqlite":
        yield Backend("sqlite", {"QTASKS_BROKER": f"sqlite:///{workdir / 'chaos.db'}"})
    elif name == "redis":
        from tests.servers import redis_server

        with redis_server(persistent=True) as server:  # fsync'd AOF: a restart keeps what was acked
            yield Backend("redis", {"QTASKS_BROKER": server.url}, lambda: server.restart(down_for=1.0))
    elif name == "postgres":
        from tests.servers import postgres_server

        with postgres_server() as pg:  # synchronous commit: a crash keeps what was acknowledged
            yield Backend("postgres", {"QTASKS_BROKER": pg.url}, lambda: pg.restart(down_for=1.0, sig=signal.SIGQUIT))
    elif name == "kafka":  # no restart: Tansu's storage is memory only, a restart loses everything
        from tests.servers import kafka_server

        with kafka_server() as kafka:
            yield Backend("kafka", {"QTASKS_BROKER": kafka.url, "QTASKS_STORAGE": f"sqlite:///{workdir / 'chaos.db'}"})
    else:
        raise SystemExit(f"unknown backend {name!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--backends", default="sqlite,redis,postgres,kafka")
    parser.add_argument("--kill-every", type=float, default=3.0)
    args = parser.parse_args()
    reports: list[Report] = []
    for name in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix=f"qtasks-chaos-{name}-") as tmp, backend(name, Path(tmp)) as chosen:
            reports.append(asyncio.run(drill(chosen, Path(tmp), args.tasks, kill_every=args.kill_every)))
        print(table(reports[-1:]), *reports[-1].worker_failures, sep="\n", flush=True)
    print("\n" + table(reports))
    bad = [r.backend for r in reports if r.lost or r.duplicates_unexplained or set(r.exit_codes) != {0}]
    if bad:
        print(f"FAILED: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
