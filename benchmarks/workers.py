"""Queue workers on PostgreSQL: batch throughput with 1, 2 and 4 ``tally worker`` processes
against the rate-limited sim server, and what the queue itself costs per item.

Part 1 (throughput): ``tally sim-server --rpm R`` in its own process; a batch of one-request
items (``-n 3``, drawn in one request) queued with ``tally batch --queue``; K workers started
as subprocesses, the batch timed from its first run's start to its last run's end. The
ceilings are set high (32) so that one process alone could send past the limit. The provider
allows R/60 requests/s: with the ceilings and pace shared in PostgreSQL the workers together
should reach that, not multiply past it (past it, the sim answers 429). Next to them, in the
same run, 4 workers that each keep only their own limiter and pace (``shared_limits=False``:
what sharing saves), and one in-process ``tally batch`` of the same items (the baseline).

Part 2 (overhead): the same batch, sim in-process with no latency (``TALLY_SIM_TIME_SCALE=0``)
so the work is Tally's own: in-process ``run_batch`` with local limits, with the shared limits
(their round trips per call), and through one worker (the queue's parts, claims and job
writes on top). The differences per item are the shared limits' and the queue's overhead.

Run: ``.venv/bin/python benchmarks/workers.py`` (PostgreSQL on 127.0.0.1:5432; ``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from core.jobs.store import JobStore  # noqa: E402
from core.store import Store  # noqa: E402

PG = os.environ.get("TALLY_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/x")
BATCH = ["--labels", "regression,no regression", "--model", "sim:sim-mid", "-n", "3"]
LOCAL_WORKER = """
import anyio, sys
from core.api import Tally
from core.jobs.queue import work
async def main():
    async with Tally.open(shared_limits=False) as tally:
        await work(tally, concurrency=2, on_ready=lambda: print("ready", flush=True))
anyio.run(main)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Databases:
    def __init__(self) -> None:
        self.admin = create_engine(
            make_url(PG).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        self.names: list[str] = []

    def fresh(self) -> str:
        name = f"tally_bench_queue_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        url = make_url(PG).set(database=name).render_as_string(hide_password=False)
        with Store(url) as store:
            store.upgrade()
        return url

    def drop(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def items_file(tmp: Path, count: int) -> Path:
    path = tmp / f"items-{count}.csv"
    path.write_text("id,text\n" + "".join(f"i{i},page change number {i}\n" for i in range(count)))
    return path


def tally(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "core", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return dict(json.loads(done.stdout))


def start_workers(count: int, env: dict[str, str], shared: bool) -> list[subprocess.Popen[str]]:
    procs = []
    for _ in range(count):
        args = ["-m", "core", "worker"] if shared else ["-c", LOCAL_WORKER]
        procs.append(
            subprocess.Popen(
                [sys.executable, *args],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    return procs


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_done(url: str, job_id: str, timeout: float = 900) -> None:
    """Return once the job is done."""
    deadline = time.monotonic() + timeout
    with Store(url) as store:
        jobs = JobStore(store)
        while True:
            job = jobs.get(job_id)
            if job.finished:
                if job.status != "done":
                    raise SystemExit(f"job {job_id} ended {job.status}: {job.error}")
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} did not finish")
            time.sleep(0.2)


def span(url: str) -> float:
    """Seconds from the batch's first run's start to its last run's end (start-up, the queue's
    wait for a first worker and the closing summary left out, the same way for every setup)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        first, last = conn.execute(text("SELECT min(created_at), max(finished_at) FROM run")).one()
    engine.dispose()
    return float(last - first)


def queued_run(
    dbs: Databases, data: Path, env: dict[str, str], workers: int, shared: bool
) -> float:
    """Seconds the batch took through ``workers`` workers."""
    url = dbs.fresh()
    run_env = dict(env, TALLY_DATABASE_URL=url)
    job = tally(["batch", str(data), *BATCH, "--queue"], run_env)
    procs = start_workers(workers, run_env, shared)
    try:
        wait_done(url, job["job_id"])
    finally:
        stop(procs)
    return span(url)


def throughput(args: argparse.Namespace, dbs: Databases, tmp: Path) -> None:
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "core", "sim-server", "--port", str(port), "--rpm", str(args.rpm)],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    limit = args.rpm / 60
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    # ceilings roomy enough that one process could send past the limit: the pace binds
    config = tmp / "tally.toml"
    config.write_text(
        f"[defaults]\nconcurrency = {args.ceiling}\n"
        f"[providers.sim]\nmax_concurrency = {args.ceiling}\n"
    )
    env.update(TALLY_SIM_URL=f"{root}/v1", TALLY_TRUST_ENV="0", TALLY_CONFIG=str(config))
    data = items_file(tmp, args.items)
    try:
        for _ in range(100):
            try:
                httpx2.get(f"{root}/health", timeout=1.0)
                break
            except httpx2.HTTPError:
                time.sleep(0.1)
        print(
            f"\n{args.items} items (one request each) against a sim server allowing "
            f"{limit:g} requests/s, ceilings of {args.ceiling}; {load()}"
        )
        print(f"{'how':<38} {'s':>7} {'requests/s':>11} {'of limit':>9} {'429s':>6}")

        def report(name: str, seconds: float) -> None:
            stats = httpx2.get(f"{root}/v1/stats").json()
            rate = stats["served"] / seconds
            print(
                f"{name:<38} {seconds:7.1f} {rate:11.2f} {100 * rate / limit:8.1f}% "
                f"{stats['throttled']:6d}"
            )

        def fresh_bucket() -> None:
            time.sleep(60 / limit * 2)  # let the bucket refill a little between runs
            httpx2.delete(f"{root}/v1/stats")

        fresh_bucket()
        url = dbs.fresh()
        tally(["batch", str(data), *BATCH], dict(env, TALLY_DATABASE_URL=url))
        report("in-process tally batch (baseline)", span(url))
        for workers in args.workers:
            fresh_bucket()
            report(f"{workers} worker(s), shared limits", queued_run(dbs, data, env, workers, True))
        fresh_bucket()
        seconds = queued_run(dbs, data, env, max(args.workers), shared=False)
        report(f"{max(args.workers)} workers, each its own limits", seconds)
    finally:
        sim.kill()
        sim.wait()


def overhead(args: argparse.Namespace, dbs: Databases, tmp: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(TALLY_SIM_TIME_SCALE="0", TALLY_TRUST_ENV="0")
    data = items_file(tmp, args.overhead_items)
    n = args.overhead_items
    print(f"\n{n} items, in-process sim with no latency (Tally's own work only); {load()}")
    rows: dict[str, list[float]] = {"local": [], "shared": [], "worker": []}
    for _ in range(args.rounds):
        for how in rows:
            if how == "worker":
                rows[how].append(queued_run(dbs, data, env, 1, shared=True))
            else:
                url = dbs.fresh()
                run_env = dict(env, TALLY_DATABASE_URL=url)
                run_env["TALLY_SHARED_LIMITS"] = "1" if how == "shared" else "0"
                tally(["batch", str(data), *BATCH], run_env)
                rows[how].append(span(url))
    best = {how: min(v) for how, v in rows.items()}
    for how, label in (
        ("local", "in-process batch, local limits"),
        ("shared", "in-process batch, shared limits"),
        ("worker", "one worker (queue + shared limits)"),
    ):
        per, ratio = 1000 * best[how] / n, best[how] / best["local"]
        print(f"{label:<38} {best[how]:7.2f} s  {per:6.2f} ms/item  {ratio:.2f}x")
    print(
        f"shared limits: {1000 * (best['shared'] - best['local']) / n:+.2f} ms/item; "
        f"the queue on top: {1000 * (best['worker'] - best['shared']) / n:+.2f} ms/item "
        f"(best of {args.rounds})"
    )


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (1 min) {five:.1f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rpm", type=float, default=480.0, help="the sim's requests/minute")
    parser.add_argument("--items", type=int, default=240)
    parser.add_argument("--ceiling", type=int, default=32, help="global and sim ceilings")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--overhead-items", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", choices=["throughput", "overhead"], action="append", default=[])
    args = parser.parse_args()
    dbs = Databases()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "throughput" not in args.skip:
                throughput(args, dbs, Path(tmp))
            if "overhead" not in args.skip:
                overhead(args, dbs, Path(tmp))
    finally:
        dbs.drop()


if __name__ == "__main__":
    main()
