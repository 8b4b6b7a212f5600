"""Fan-out throughput: Tally's engine next to plain ``asyncio.gather`` over the official
``openai`` SDK, both in this process, against the same fixed-latency loopback server.

Prints calls/s for both, their ratio, the share of the ideal (concurrency / server latency)
each reaches, and CPU time per call; then the engine's own CPU per call with the HTTP stack
taken out (a provider that answers at once), which is what the engine adds to a call.
Each level runs the two clients alternately, twice, after a warm-up, and keeps the better
of each: the machine is shared and noisy. Run: ``.venv/bin/python benchmarks/fanout.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import anyio.lowlevel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import ProviderConfig, TallyConfig  # noqa: E402
from core.cost import PriceBook  # noqa: E402
from core.engine import Engine, RunRequest  # noqa: E402
from core.formats import parse_format  # noqa: E402
from core.http import build_client  # noqa: E402
from core.panel import Panel  # noqa: E402
from core.policy import Policy  # noqa: E402
from core.providers.base import Completion  # noqa: E402
from core.providers.registry import build_registry  # noqa: E402
from core.retry import RetryPolicy  # noqa: E402
from core.spec import RunSpec  # noqa: E402
from core.task import Task  # noqa: E402

VOTES_PER_RUN = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(latency: float, jitter: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "fixed_server.py"),
            "--port",
            str(port),
            "--latency",
            str(latency),
            "--jitter",
            str(jitter),
        ],
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("benchmark server did not start")


class InstantProvider:
    """Answers at once, without HTTP: isolates the engine's own cost per call."""

    name = "instant"
    kind = "openai"
    base_url = "memory://"
    max_concurrency = 1024
    supports_n = False
    stream = False

    async def complete(self, client: object, request: object, usage: object) -> list[Completion]:
        await anyio.lowlevel.checkpoint()
        return [Completion(text="regression", finish_reason="stop", tokens_in=20, tokens_out=1)]

    async def list_models(self, client: object) -> list[str]:
        return ["instant"]


class InstantRegistry:
    def resolve(self, spec: object) -> InstantProvider:
        return PROVIDER


PROVIDER = InstantProvider()


async def engine_overhead(calls: int, concurrency: int = 64) -> float:
    """CPU seconds per call spent in the engine itself (fan-out, parsing, voting, results)."""
    task = Task(format=parse_format({"kind": "label", "labels": ["regression", "no regression"]}))
    panel = Panel.build(["instant:a", "instant:b"], VOTES_PER_RUN)
    spec = RunSpec(task=task, panel=panel, policy=Policy())
    async with build_client(None, max_connections=concurrency) as client:
        engine = Engine(
            registry=InstantRegistry(),  # type: ignore[arg-type]
            client=client,
            prices=PriceBook(),
            concurrency=concurrency,
        )
        c0 = time.process_time()
        async with anyio.create_task_group() as tg:
            for i in range(calls // VOTES_PER_RUN):
                req = RunRequest(run_id=f"o{i}", input=f"item {i}", spec=spec)
                tg.start_soon(engine.run, req)
        return (time.process_time() - c0) / calls


async def engine_run(base_url: str, concurrency: int, calls: int) -> tuple[float, float]:
    config = TallyConfig(
        providers={
            "bench": ProviderConfig(kind="openai", base_url=base_url, max_concurrency=concurrency)
        }
    )
    registry = build_registry(config)
    task = Task(format=parse_format({"kind": "label", "labels": ["regression", "no regression"]}))
    panel = Panel.build(["bench:bench"], VOTES_PER_RUN)
    spec = RunSpec(task=task, panel=panel, policy=Policy())
    async with build_client(None, max_connections=concurrency) as client:
        engine = Engine(
            registry=registry,
            client=client,
            prices=PriceBook(),
            concurrency=concurrency,
            retry=RetryPolicy(max_attempts=1, base_s=0.1, max_s=1.0),
        )
        # the endpoint answers one choice per request: samples go out as separate calls
        registry.resolve(panel.models[0]).supports_n = False
        runs = calls // VOTES_PER_RUN
        t0, c0 = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for i in range(runs):
                req = RunRequest(run_id=f"b{i}", input=f"item {i}", spec=spec)
                tg.start_soon(engine.run, req)
        return time.perf_counter() - t0, time.process_time() - c0


async def sdk_run(base_url: str, concurrency: int, calls: int) -> tuple[float, float]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str | None:
        async with gate:
            reply = await client.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": f"item {i}"}]
            )
            return reply.choices[0].message.content

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(calls)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await client.close()
    return elapsed, cpu


def best(runs: list[tuple[float, float]], calls: int) -> tuple[float, float]:
    """The better of repeated runs: highest throughput, and its CPU per call."""
    wall, cpu = min(runs)
    return calls / wall, cpu / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.5, help="server latency, seconds")
    parser.add_argument("--levels", default="8,64,256")
    parser.add_argument("--jitter", type=float, default=0.5, help="latency spread, +/- share")
    parser.add_argument("--waves", type=int, default=10, help="calls per level = waves x level")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    proc, base_url = start_server(args.latency, args.jitter)
    try:
        asyncio.run(engine_run(base_url, 8, 16))  # warm-up: imports, first connections
        asyncio.run(sdk_run(base_url, 8, 16))
        print(
            f"server latency {args.latency * 1000:.0f} ms; calls per level = {args.waves} x level"
        )
        print(
            f"{'conc':>5} {'engine/s':>9} {'sdk/s':>8} {'ratio':>6} {'eng%ideal':>9} "
            f"{'sdk%ideal':>9} {'eng cpu/call':>13} {'sdk cpu/call':>13}"
        )
        for level in (int(x) for x in args.levels.split(",")):
            calls = max(VOTES_PER_RUN, args.waves * level // VOTES_PER_RUN * VOTES_PER_RUN)
            ideal = level / args.latency
            e_runs, s_runs = [], []
            for _ in range(args.repeats):
                e_runs.append(asyncio.run(engine_run(base_url, level, calls)))
                s_runs.append(asyncio.run(sdk_run(base_url, level, calls)))
            e_rate, e_cpu = best(e_runs, calls)
            s_rate, s_cpu = best(s_runs, calls)
            print(
                f"{level:>5} {e_rate:>9.1f} {s_rate:>8.1f} {e_rate / s_rate:>6.2f} "
                f"{100 * e_rate / ideal:>8.1f}% {100 * s_rate / ideal:>8.1f}% "
                f"{1e3 * e_cpu:>10.3f} ms {1e3 * s_cpu:>10.3f} ms"
            )
        overhead = min(asyncio.run(engine_overhead(4096)) for _ in range(args.repeats))
        print(f"engine's own CPU per call, HTTP taken out: {1e3 * overhead:.3f} ms")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
