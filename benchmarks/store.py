"""Store throughput: call rows persisted per second through ``StoreWriter``, next to the obvious
alternatives, on SQLite and PostgreSQL; then a batch at concurrency 64 against the sim server
with persistence on and off.

Part 1 feeds synthetic runs (a start, N calls, a decision) from 64 concurrent tasks the way a
fan-out does, and compares
  - ``StoreWriter``: one writer task, batched bulk upserts, committing from a worker thread,
    and as shipped (its commits move to its own process after ``PROCESS_AFTER`` operations);
  - one transaction per run (``Store.save_run`` at the end of each run);
  - per-row ORM ``session.add`` + ``commit`` (the obvious first implementation);
then how long the writer's own process takes to start, next to a child that opens the store
through SQLAlchemy, and on PostgreSQL the writer's staged upsert next to an executemany.
Part 2 runs the engine over a batch against ``tally sim-server`` on loopback (a subprocess),
recording every run and call through the writer both ways, between two batches that record
nothing, in rounds; each round gives a paired loss against those two, and their own
difference shows the noise of the measure.

Run: ``.venv/bin/python benchmarks/store.py`` (``--help`` for sizes; ``--no-postgres`` when
no server runs on 127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import Session  # noqa: E402

from core.errors import StoreError  # noqa: E402
from core.panel import Panel  # noqa: E402
from core.policy import Policy  # noqa: E402
from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult  # noqa: E402
from core.spec import RunSpec  # noqa: E402
from core.store import Store, StoreWriter  # noqa: E402
from core.store.commit import Call, Committer, Target  # noqa: E402
from core.store.tables import CallRecord, RunRecord, call_row, start_row  # noqa: E402
from core.store.upsert import WriteBatch  # noqa: E402
from core.store.writer import PROCESS_AFTER  # noqa: E402
from core.store.writer_process import WriterProcess  # noqa: E402
from core.task import Task  # noqa: E402

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
VOTES = 5
FANOUT = 64
SPEC = RunSpec(
    task=Task.for_labels(["regression", "no regression"], name="regression"),
    panel=Panel.build([f"sim:sim-{x}" for x in "abcde"], VOTES),
    policy=Policy(),
)


# -- databases ---------------------------------------------------------------------------------


@contextmanager
def fresh_database(backend: str, pg_url: str) -> Iterator[Store]:
    """An empty, migrated database that is thrown away afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{tmp}/bench.db")
            store.upgrade()
            try:
                yield store
            finally:
                store.close()
        return
    base = make_url(pg_url)
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = f"tally_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    store = Store(base.set(database=name).render_as_string(hide_password=False))
    try:
        store.upgrade()
        yield store
    finally:
        store.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- synthetic runs ----------------------------------------------------------------------------


def synthetic_runs(n_runs: int) -> list[RunResult]:
    """Runs of VOTES calls each, with realistic field sizes (a reply, tokens, times, cost)."""
    now = time.time()
    runs = []
    for r in range(n_runs):
        calls = [
            CallResult(
                slot=s,
                model=f"sim:sim-{'abcde'[s]}",
                sample=0,
                status=CallStatus.OK,
                answer="regression" if (r + s) % 3 else "no regression",
                raw=f'{{"answer": "regression", "why": "layout shift in item {r}, vote {s}"}}',
                latency_ms=300.0 + s,
                ttft_ms=80.0,
                tokens_in=412,
                tokens_out=18,
                cost_usd=0.00012,
                started_at=now,
                ended_at=now + 0.3,
            )
            for s in range(VOTES)
        ]
        runs.append(
            RunResult(
                run_id=f"bench-{r:07d}",
                input=f"Item {r}: does this page contain a regression? " + "x" * 200,
                spec=SPEC,
                decision=Decision(status=DecisionStatus.DECIDED, label="regression", margin=1.0),
                votes={"regression": 3, "no regression": 2},
                calls=calls,
                cost_usd=0.0006,
                latency_ms=310.0,
            )
        )
    return runs


async def through_writer(
    store: Store, runs: list[RunResult], process_after: int | None
) -> tuple[float, float]:
    """Wall time until everything is committed, and event-loop CPU per queued operation."""
    gate = anyio.CapacityLimiter(FANOUT)
    enqueue_cpu = 0.0

    async def one(run: RunResult) -> None:
        nonlocal enqueue_cpu
        async with gate:
            c0 = time.process_time()
            await writer.start_run(run.run_id, run.input, run.spec, source="batch")
            enqueue_cpu += time.process_time() - c0
            for call in run.calls:
                await anyio.lowlevel.checkpoint()  # calls land one by one, interleaved
                c0 = time.process_time()
                await writer.record_call(run.run_id, call, cache_key=f"{run.run_id}/{call.slot}")
                enqueue_cpu += time.process_time() - c0
            c0 = time.process_time()
            await writer.finish_run(run, source="batch")
            enqueue_cpu += time.process_time() - c0

    t0 = time.perf_counter()
    async with StoreWriter(store, process_after=process_after) as writer:
        async with anyio.create_task_group() as tg:
            for run in runs:
                tg.start_soon(one, run)
        await writer.flush()
    elapsed = time.perf_counter() - t0
    ops = len(runs) * (VOTES + 2)
    return elapsed, enqueue_cpu / ops


def per_run_transactions(store: Store, runs: list[RunResult]) -> float:
    t0 = time.perf_counter()
    for run in runs:
        store.save_run(run, source="batch")
    return time.perf_counter() - t0


def start_row_of(run: RunResult) -> dict[str, Any]:
    return start_row(
        run.run_id,
        run.input,
        run.spec,
        source="batch",
        batch_id=None,
        item_id=None,
        item_index=None,
        gold=None,
        created_at=time.time(),
    )


def per_row_commits(store: Store, runs: list[RunResult]) -> float:
    t0 = time.perf_counter()
    with Session(store.engine) as session:
        for run in runs:
            session.add(RunRecord(**start_row_of(run)))
            session.commit()
            for call in run.calls:
                session.add(CallRecord(**call_row(run.run_id, call)))
                session.commit()
            stored = session.get(RunRecord, run.run_id)
            assert stored is not None
            stored.status, stored.label = run.decision.status.value, run.decision.label
            session.add(stored)
            session.commit()
    return time.perf_counter() - t0


def count_calls(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM call")).scalar_one())


def part_one(backends: list[str], pg_url: str, rows: int, baseline_rows: int) -> None:
    print(f"== call rows persisted per second ({VOTES} calls per run, fed by {FANOUT} tasks)")
    print(f"{'backend':<10} {'method':<28} {'rows':>7} {'seconds':>8} {'rows/s':>9} {'ratio':>7}")
    for backend in backends:
        results: list[tuple[str, int, float]] = []
        loop_cpu: list[str] = []
        methods: list[tuple[str, int, Callable[[Store, list[RunResult]], float]]] = [
            ("per-row add+commit (ORM)", baseline_rows, per_row_commits),
            ("one transaction per run", min(rows, baseline_rows * 5), per_run_transactions),
        ]
        for name, n, fn in methods:
            runs = synthetic_runs(n // VOTES)
            with fresh_database(backend, pg_url) as store:
                seconds = fn(store, runs)
                assert count_calls(store) == len(runs) * VOTES
            results.append((name, len(runs) * VOTES, seconds))
        runs = synthetic_runs(rows // VOTES)
        for name, process_after in (("thread", None), ("as shipped", PROCESS_AFTER)):
            with fresh_database(backend, pg_url) as store:
                seconds, cpu_per_op = anyio.run(through_writer, store, runs, process_after)
                assert count_calls(store) == len(runs) * VOTES
            results.append((f"StoreWriter, {name}", len(runs) * VOTES, seconds))
            loop_cpu.append(f"{name} {cpu_per_op * 1e6:.1f} us")
        base_rate = results[0][1] / results[0][2]
        for name, n, secs in results:
            rate = n / secs
            print(
                f"{backend:<10} {name:<28} {n:>7} {secs:>8.2f} {rate:>9.0f} "
                f"{rate / base_rate:>6.1f}x"
            )
        print(f"{backend:<10} StoreWriter event-loop CPU per queued write: {', '.join(loop_cpu)}")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: str) -> tuple[str, list[str]]:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()


def process_cpu(pid: int) -> float:
    """CPU seconds process ``pid`` has used so far."""
    fields = _proc_stat(str(pid))[1]
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy() -> tuple[float, float]:
    """CPU seconds, summed over every core, the machine has been busy and in all (from
    /proc/stat: idle and I/O wait are not busy)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


def postgres_cpu() -> float:
    """CPU seconds the PostgreSQL server on this machine has used: every live ``postgres``
    process, plus the backends its postmaster has reaped (0 where /proc cannot tell). On a
    machine of two cores, the server's work on the batch's rows competes with the batch too."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            name, fields = _proc_stat(pid)
            if name != "postgres":
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            if _proc_stat(fields[1])[0] != "postgres":  # the postmaster: its reaped children
                ticks += int(fields[13]) + int(fields[14])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / _TICK


async def start_writer_process(store: Store) -> None:
    process = await WriterProcess.start(store.target())
    await process.close()


def start_through_sqlalchemy(store: Store) -> None:
    """The alternative: a child that opens the store through SQLAlchemy, as ``Store`` does."""
    url = store.engine.url.render_as_string(hide_password=False)
    code = f"from core.store.db import Store; Store({url!r}).engine.connect().close()"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def upsert_forms(pg_url: str, rows: int, per_commit: int = 250) -> None:
    """On PostgreSQL, the writer's staged upsert (COPY into a temporary table, then one
    INSERT .. SELECT) next to psycopg's pipelined executemany of the upsert, as ``Store.write``
    sends it: the driver's CPU and the server's per call row, in commits of ``per_commit``."""
    print(f"\n== PostgreSQL upserts of {rows} call rows in commits of {per_commit}: CPU per row")
    print(f"{'form':<34} {'driver us':>10} {'server us':>10}")
    runs = synthetic_runs(rows // VOTES)
    calls = [call_row(run.run_id, call) for run in runs for call in run.calls]
    chunks = [calls[at : at + per_commit] for at in range(0, len(calls), per_commit)]

    def executemany(target: Target) -> Callable[[], None]:
        conn = target.connect()
        with conn.cursor() as cur:
            for chunk in chunks:
                cur.executemany(target.upserts["call"].single, chunk)
                conn.commit()
        return conn.close  # type: ignore[no-any-return]

    def staged(target: Target) -> Callable[[], None]:
        committer = Committer(target)
        for chunk in chunks:
            assert committer.commit([Call(row) for row in chunk]).failed == 0
        return committer.close

    forms: list[tuple[str, Callable[[Target], Callable[[], None]]]] = [
        ("executemany (Store.write)", executemany),
        ("COPY + INSERT .. SELECT (writer)", staged),
    ]
    for name, write in forms:
        with fresh_database("postgresql", pg_url) as store:
            target = store.target()
            store.write(WriteBatch(starts=[start_row_of(run) for run in runs]))
            cpu, server = time.process_time(), postgres_cpu()
            close = write(target)
            # read while the connection is open: a backend that has just ended may be counted
            # neither among the live processes nor yet among those reaped
            cpu, server = time.process_time() - cpu, postgres_cpu() - server
            close()
            assert count_calls(store) == len(calls)
        print(f"{name:<34} {1e6 * cpu / len(calls):>10.1f} {1e6 * server / len(calls):>10.1f}")


def start_up(backends: list[str], pg_url: str, repeats: int = 3) -> None:
    print(
        "\n== the writer's process: seconds until it is ready, and its CPU (median of "
        f"{repeats});\n   next to a child that opens the store through SQLAlchemy"
    )
    print(f"{'backend':<10} {'child':<24} {'ready s':>8} {'cpu s':>7}")
    for backend in backends:
        with fresh_database(backend, pg_url) as store:
            starts: list[tuple[str, Callable[[], object]]] = [
                ("writer's process", partial(anyio.run, start_writer_process, store)),
                ("through SQLAlchemy", partial(start_through_sqlalchemy, store)),
            ]
            for name, start in starts:
                walls, cpus = [], []
                for _ in range(repeats):
                    wall, cpu = time.perf_counter(), children_cpu()
                    start()
                    walls.append(time.perf_counter() - wall)
                    cpus.append(children_cpu() - cpu)
                wall, cpu = statistics.median(walls), statistics.median(cpus)
                print(f"{backend:<10} {name:<24} {wall:>8.2f} {cpu:>7.2f}")


# -- part two: a batch against the sim server ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sim_server(time_scale: float) -> Iterator[tuple[str, int]]:
    """The sim server in a subprocess: its base URL and its pid."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core",
            "sim-server",
            "--port",
            str(port),
            "--time-scale",
            str(time_scale),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError("the sim server exited at start")
            time.sleep(0.05)
        else:
            raise RuntimeError("the sim server did not start")
        yield f"http://127.0.0.1:{port}/v1", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


P = ParamSpec("P")
R = TypeVar("R")
Mode = str  # "off", "again": nothing stored | "thread": commits from a worker thread only |
# "process": the product's writer, which moves its commits to its own process once a batch is
# under way
MODES = ("off", "thread", "process", "again")


class StoreClock:
    """CPU time spent on the store's behalf: in the event loop (turning results into rows and
    queueing them) and in worker threads (the writer's commits, resume reads). Measured with
    ``time.thread_time`` around exactly that code, so other load on the machine does not
    inflate it."""

    def __init__(self) -> None:
        self.loop = 0.0
        self.thread = 0.0

    def wrap_thread(self, fn: Callable[P, R]) -> Callable[P, R]:
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            t = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.thread += time.thread_time() - t

        return timed


async def batch_throughput(
    base_url: str, model: str, items: int, concurrency: int, store: Store | None, mode: Mode
) -> tuple[float, float, float, float, float]:
    """For a batch of ``items`` runs (N=VOTES) sharing one ceiling: calls per second, the
    engine process's CPU per call (all threads), the store's CPU per call in that process,
    the CPU per call of the writer's own process, and of the PostgreSQL server."""
    from core.api import StoreRecorder
    from core.config import ProviderConfig, TallyConfig
    from core.cost import PriceBook
    from core.engine import Engine, RunRequest
    from core.formats import parse_format
    from core.http import build_client
    from core.providers.registry import build_registry
    from core.retry import RetryPolicy

    clock = StoreClock()

    class TimedRecorder(StoreRecorder):
        """The product's recorder, with the event-loop time of each report counted (the
        writer's methods queue without yielding, so the span is the store's work alone)."""

        async def run_started(self, request: RunRequest) -> None:
            t = time.thread_time()
            await super().run_started(request)
            clock.loop += time.thread_time() - t

        async def call_finished(self, run_id: str, call: CallResult, cache_key: str | None) -> None:
            t = time.thread_time()
            await super().call_finished(run_id, call, cache_key)
            clock.loop += time.thread_time() - t

        async def run_finished(self, result: RunResult, source: str) -> None:
            t = time.thread_time()
            await super().run_finished(result, source)
            clock.loop += time.thread_time() - t

    config = TallyConfig(
        providers={
            "bench": ProviderConfig(
                kind="openai", base_url=base_url, max_concurrency=concurrency, supports_n=False
            )
        }
    )
    registry = build_registry(config)
    labels = ["regression", "no regression"]
    task = Task(format=parse_format({"kind": "label", "labels": labels}))
    panel = Panel.build([f"bench:{model}"], VOTES)
    policy = Policy()
    spec = RunSpec(task=task, panel=panel, policy=policy)
    texts = [f"Item {i}: the header moved 4px after the deploy" for i in range(items)]
    async with build_client(None, max_connections=concurrency) as client:
        engine = Engine(
            registry=registry,
            client=client,
            prices=PriceBook(),
            concurrency=concurrency,
            retry=RetryPolicy(max_attempts=1, base_s=0.1, max_s=1.0),
        )
        runs_at_once = anyio.CapacityLimiter(max(4, concurrency * 2))
        prior: dict[str, list[CallResult]] = {}
        if store is not None:
            read_all = clock.wrap_thread(store.batch_finished_calls)

        async def one(i: int, batch_id: str | None) -> None:
            async with runs_at_once:
                run_id = f"{batch_id or 'nostore'}-{i:06d}"
                done = prior.get(run_id, [])
                req = RunRequest(
                    run_id=run_id,
                    input=texts[i],
                    spec=spec,
                    source="batch",
                    batch_id=batch_id,
                    item_index=i,
                )
                await engine.run(req, prior={(c.phase, c.slot): c for c in done})

        t0, c0 = time.perf_counter(), time.process_time()
        child0, server0 = children_cpu(), postgres_cpu()
        if store is None:
            async with anyio.create_task_group() as tg:
                for i in range(items):
                    tg.start_soon(one, i, None)
        else:
            batch_id = store.create_batch(
                name="bench",
                source="library",
                spec=spec,
                concurrency=concurrency,
                items=[(i, None, t, None) for i, t in enumerate(texts)],
            )
            # what a resumed batch needs, read once
            prior = await anyio.to_thread.run_sync(read_all, batch_id)
            async with StoreWriter(
                store, process_after=None if mode == "thread" else PROCESS_AFTER
            ) as writer:
                commit = writer._committer.commit  # the commits made from a worker thread
                writer._committer.commit = clock.wrap_thread(commit)  # type: ignore[method-assign]
                engine.recorder = TimedRecorder(store, writer)
                async with anyio.create_task_group() as tg:
                    for i in range(items):
                        tg.start_soon(one, i, batch_id)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        writer_cpu = children_cpu() - child0  # the writer's process, once it ended
        server_cpu = postgres_cpu() - server0
        if store is not None:
            assert count_calls(store) == items * VOTES
        calls = items * VOTES
        store_cpu = clock.loop + clock.thread
        return calls / wall, cpu / calls, store_cpu / calls, writer_cpu / calls, server_cpu / calls


def part_two(
    backends: list[str], pg_url: str, items: int, concurrency: int, time_scale: float, rounds: int
) -> None:
    model = "sim-fast"
    print(
        f"\n== batch of {items} runs x {VOTES} votes at concurrency {concurrency} against the "
        f"sim server ({model}, time scale {time_scale}); {rounds} rounds"
    )
    print(
        "   off, again: nothing stored, before and after the stored batches of each round (the "
        "order\n   alternates); a loss is against their mean, and again's against off is the "
        "noise of the\n   measure. thread: runs and calls recorded through StoreWriter, every "
        "commit from a worker\n   thread; process: the same writer as shipped, which moves "
        f"its commits to its own process\n   after {PROCESS_AFTER:,} operations. Both read "
        "the batch's finished calls once.\n"
        "   engine cpu: CPU per call of the engine's process (all threads); store: the part of "
        "it spent\n   on the store (event loop + worker threads); writer proc: CPU per call "
        "of the writer's process;\n   pg server: CPU per call of the PostgreSQL server (all "
        "its processes); sim server:\n   the sim server's; busy: how much of the machine's "
        "cores were busy during the batch."
    )
    with sim_server(time_scale) as (url, sim_pid):

        def measured(store: Store | None, mode: Mode) -> tuple[float, ...]:
            """``batch_throughput``, with the sim server's CPU per call and how busy the
            machine's cores were."""
            sim, (busy, total) = process_cpu(sim_pid), machine_busy()
            got = anyio.run(batch_throughput, url, model, items, concurrency, store, mode)
            sim = (process_cpu(sim_pid) - sim) / (items * VOTES)
            busy_after, total_after = machine_busy()
            return (*got, sim, (busy_after - busy) / (total_after - total))

        anyio.run(batch_throughput, url, model, max(8, items // 10), concurrency, None, "off")
        print(
            f"{'backend':<10} {'mode':<8} {'calls/s':>8} {'loss':>7} {'loss, middle half':>18} "
            f"{'engine cpu':>11} {'store':>7} {'writer proc':>12} {'pg server':>10} "
            f"{'sim server':>11} {'busy':>5}"
        )
        for backend in backends:
            got: dict[str, list[tuple[float, ...]]] = {m: [] for m in MODES}
            for r in range(rounds):
                # each round brackets the stored batches between two with nothing stored, in
                # turn forwards and backwards, so a drift in the machine's speed cancels out
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    if mode in ("off", "again"):
                        got[mode].append(measured(None, mode))
                        continue
                    with fresh_database(backend, pg_url) as store:
                        got[mode].append(measured(store, mode))
            # each round gives a paired loss against the mean of its two batches with nothing
            # stored; "again" against "off" is the same batch twice: the noise of the measure
            base = [(o[0] + a[0]) / 2 for o, a in zip(got["off"], got["again"], strict=True)]
            loss = {m: [1 - r[0] / b for r, b in zip(got[m], base, strict=True)] for m in MODES}
            loss["off"] = [0.0] * rounds
            loss["again"] = [1 - a[0] / o[0] for a, o in zip(got["again"], got["off"], strict=True)]
            for mode in MODES:
                rate, cpu, store_cpu, writer_cpu, server_cpu, sim_cpu, busy = (
                    statistics.median(x[k] for x in got[mode]) for k in range(7)
                )
                mid = statistics.median(loss[mode])
                low, _, high = statistics.quantiles(loss[mode], n=4) if rounds > 1 else [mid] * 3
                spread = f"{100 * low:+.1f}% .. {100 * high:+.1f}%" if mode != "off" else ""
                print(
                    f"{backend:<10} {mode:<8} {rate:>8.0f} {100 * mid:>6.1f}% {spread:>18} "
                    f"{1e3 * cpu:>8.3f} ms {1e6 * store_cpu:>4.0f} us {1e6 * writer_cpu:>9.0f} us "
                    f"{1e6 * server_cpu if backend == 'postgresql' else 0:>7.0f} us "
                    f"{1e6 * sim_cpu:>8.0f} us {100 * busy:>4.0f}%"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="call rows via StoreWriter")
    parser.add_argument("--baseline-rows", type=int, default=2_000, help="rows for per-row ORM")
    parser.add_argument("--items", type=int, default=1000, help="runs in the sim batch")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--time-scale", type=float, default=0.2, help="sim latency multiplier")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--postgres-url", default=PG_URL)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--skip-batch", action="store_true", help="only the store part")
    parser.add_argument("--skip-rows", action="store_true", help="only the batch part")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # rows as they come
    backends = [
        b for b, off in (("sqlite", args.no_sqlite), ("postgresql", args.no_postgres)) if not off
    ]
    try:
        if not args.skip_rows:
            part_one(backends, args.postgres_url, args.rows, args.baseline_rows)
            start_up(backends, args.postgres_url)
            if "postgresql" in backends:
                upsert_forms(args.postgres_url, args.rows)
        if not args.skip_batch:
            part_two(
                backends,
                args.postgres_url,
                args.items,
                args.concurrency,
                args.time_scale,
                args.rounds,
            )
    except StoreError as err:
        sys.exit(f"store: {err}")


if __name__ == "__main__":
    main()
