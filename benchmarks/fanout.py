"""Fan-out throughput: Tally's engine next to the HTTP clients it could stand on and the
official ``openai`` SDK, all in this process, against one lean loopback endpoint in its own
process (``benchmarks/lean_server.py``, whose CPU per request is printed: it is not the limit).

Each level is a concurrency and a server latency L; ideal = concurrency / L. For each client:
calls/s as a share of ideal, and the client's CPU per call (this process, every thread, plus
the store writer's process when it ran). Each level runs every client ``--repeats`` times,
alternating the order; the spread between the repeats of one client is the noise of the
measure (A/A), printed next to the figures. The engine path stores every run in a temporary
SQLite store, as the product does. Run: ``make bench`` or ``.venv/bin/python
benchmarks/fanout.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.api import StoreRecorder  # noqa: E402
from core.config import ProviderConfig, TallyConfig  # noqa: E402
from core.cost import PriceBook  # noqa: E402
from core.engine import Engine, RunRequest  # noqa: E402
from core.formats import parse_format  # noqa: E402
from core.http import build_client  # noqa: E402
from core.panel import Panel  # noqa: E402
from core.policy import Policy  # noqa: E402
from core.providers.registry import build_registry  # noqa: E402
from core.retry import RetryPolicy  # noqa: E402
from core.spec import RunSpec  # noqa: E402
from core.store import Store, StoreWriter  # noqa: E402
from core.task import Task  # noqa: E402

VOTES_PER_RUN = 8
LEVELS = "8:0.5,64:0.5,512:1,1024:2"
TARGETS = {64: 0.95, 512: 0.90, 1024: 0.85}
"""Share of ideal the engine path must reach at each concurrency."""
CPU_TARGET_S = 0.5e-3
CPU_FLATNESS = 1.5
PROMPT = [{"role": "user", "content": "Is the header moving 4px a regression?"}]

# -- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(*extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """The lean endpoint in its own process; returns it and its root URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "lean_server.py"), "--port", str(port), *extra]
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("benchmark server did not start")


def server_stats(root: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{root}/stats", timeout=10) as reply:
        return dict(json.load(reply))


# -- the clients ---------------------------------------------------------------------------------
# Each client keeps ``concurrency`` calls in flight until it is cancelled, calling ``tick()``
# once per finished call; the harness counts the ticks of a steady window.

Tick = Callable[[], None]
Client = Callable[[str, int, Tick], Awaitable[None]]


async def keep_in_flight(concurrency: int, tick: Tick, one: Callable[[], Awaitable[Any]]) -> None:
    async def worker() -> None:
        while True:
            await one()
            tick()

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)


def body() -> dict[str, Any]:
    return {"model": "bench", "messages": PROMPT}


def httpx2_client(aiohttp_transport: bool) -> Client:
    """httpx2 with its own connection pool (as core/http.py built it until now), or over the
    aiohttp transport the openai SDK ships for ``DefaultAioHttpClient``."""

    async def run(base_url: str, concurrency: int, tick: Tick) -> None:
        import httpx2
        from openai._vendor.httpx_aiohttp.transport import AiohttpTransport

        limits = httpx2.Limits(max_connections=concurrency + 4, max_keepalive_connections=None)
        transport = AiohttpTransport(limits=limits) if aiohttp_transport else None
        async with httpx2.AsyncClient(limits=limits, transport=transport, timeout=60) as client:

            async def one() -> None:
                reply = await client.post(f"{base_url}/chat/completions", json=body())
                assert reply.json()["choices"][0]["message"]["content"]

            await keep_in_flight(concurrency, tick, one)

    return run


async def raw_aiohttp(base_url: str, concurrency: int, tick: Tick) -> None:
    """aiohttp alone: the floor any client on this event loop can reach."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.post(f"{base_url}/chat/completions", json=body()) as reply:
                assert (await reply.json())["choices"][0]["message"]["content"]

        await keep_in_flight(concurrency, tick, one)


def sdk(aiohttp_client: bool) -> Client:
    async def run(base_url: str, concurrency: int, tick: Tick) -> None:
        import openai

        http_client = openai.DefaultAioHttpClient() if aiohttp_client else None
        client = openai.AsyncOpenAI(
            base_url=base_url, api_key="bench", max_retries=0, http_client=http_client
        )

        async def one() -> None:
            reply = await client.chat.completions.create(model="bench", messages=PROMPT)  # type: ignore[arg-type]
            assert reply.choices[0].message.content

        try:
            await keep_in_flight(concurrency, tick, one)
        finally:
            with anyio.CancelScope(shield=True):
                await client.close()

    run.__doc__ = "the openai SDK" + (" with DefaultAioHttpClient" if aiohttp_client else "")
    return run


def run_request(i: int, spec: RunSpec) -> RunRequest:
    return RunRequest(run_id=f"b{i:07d}", input=f"item {i}", spec=spec)


async def engine_path(base_url: str, concurrency: int, tick: Tick) -> None:
    """Tally's engine through core/http.py, every run stored in a temporary SQLite store.
    Twice as many runs as fill the ceiling are under way, so it is always full."""
    config = TallyConfig(
        providers={
            "bench": ProviderConfig(
                kind="openai", base_url=base_url, max_concurrency=concurrency, supports_n=False
            )
        }
    )
    registry = build_registry(config)
    task = Task(format=parse_format({"kind": "label", "labels": ["regression", "no regression"]}))
    spec = RunSpec(task=task, panel=Panel.build(["bench:bench"], VOTES_PER_RUN), policy=Policy())
    numbers = iter(range(10**9))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        store.upgrade()
        try:
            async with (
                build_client(None, max_connections=concurrency) as client,
                StoreWriter(store) as writer,
            ):
                engine = Engine(
                    registry=registry,
                    client=client,
                    prices=PriceBook(),
                    concurrency=concurrency,
                    retry=RetryPolicy(max_attempts=1),
                    recorder=CountingRecorder(store, writer, tick),
                )

                async def runs() -> None:
                    while True:
                        await engine.run(run_request(next(numbers), spec))

                async with anyio.create_task_group() as tg:
                    for _ in range(max(2, 2 * concurrency // VOTES_PER_RUN)):
                        tg.start_soon(runs)
        finally:
            store.close()


class CountingRecorder(StoreRecorder):
    """The product's recorder; each finished call is a tick."""

    def __init__(self, store: Store, writer: StoreWriter, tick: Tick) -> None:
        super().__init__(store, writer)
        self.tick = tick

    async def call_finished(self, run_id: str, call: Any, cache_key: str | None) -> None:
        await super().call_finished(run_id, call, cache_key)
        if call.status.value == "ok":
            self.tick()


CLIENTS: dict[str, Client] = {
    "floor": raw_aiohttp,
    "httpx2": httpx2_client(False),
    "httpx2+aiohttp": httpx2_client(True),
    "sdk": sdk(False),
    "sdk+aiohttp": sdk(True),
    "engine": engine_path,
}
UVLOOP = ("floor", "httpx2", "httpx2+aiohttp", "engine")
"""The clients also measured on uvloop (the SDK rows show what a user of it gets by default)."""


# -- measuring -----------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def children_cpu(exclude: int) -> float:
    """CPU seconds of this process's live children (the store writer's process), not the
    server's."""
    me, ticks = str(os.getpid()), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == exclude:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICK


def measure(
    client: Client,
    uvloop: bool,
    base_url: str,
    concurrency: int,
    latency: float,
    server: int,
    *,
    warm_s: float | None = None,
    window_s: float | None = None,
) -> tuple[float, float]:
    """Calls per second and CPU seconds per call over a steady window on a fresh event loop:
    after a warm-up (1.5 L: connections opened, the first wave back), for 3 L."""
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1

    async def timed() -> tuple[float, float]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client, base_url, concurrency, tick)
            await anyio.sleep(1.5 * latency if warm_s is None else warm_s)
            n0, t0 = count, time.perf_counter()
            c0 = children_cpu(server) + time.process_time()  # the /proc reads not counted
            await anyio.sleep(3 * latency if window_s is None else window_s)
            n1, t1 = count, time.perf_counter()
            c1 = time.process_time() + children_cpu(server)
            tg.cancel_scope.cancel()
        calls = max(1, n1 - n0)
        return calls / (t1 - t0), (c1 - c0) / calls

    return anyio.run(timed, backend_options={"use_uvloop": uvloop})


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (1 min) {five:.1f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default=LEVELS, help="concurrency:latency_s, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clients", default=",".join(CLIENTS), help="which clients to run")
    parser.add_argument("--no-uvloop", action="store_true", help="only the default event loop")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.clients.split(",")]
    variants = [(name, False) for name in chosen]
    if not args.no_uvloop:
        variants += [(name, True) for name in chosen if name in UVLOOP]
    proc, root = start_server()
    try:
        for name, uv in variants:  # warm-up: imports, first connections
            measure(CLIENTS[name], uv, f"{root}/L0.01/v1", 8, 0.05, proc.pid)
        print(f"{load()}; {args.repeats} runs each: 1.5 L warm-up, then 3 L measured")
        print(
            f"{'conc':>5} {'L':>4} {'client':<22} {'calls/s':>8} {'of ideal':>9} "
            f"{'A/A':>6} {'cpu/call':>9} {'server cpu/req':>15}"
        )
        results: dict[tuple[str, bool, int], tuple[float, float]] = {}
        for level in args.levels.split(","):
            conc_s, latency_s = level.split(":")
            concurrency, latency = int(conc_s), float(latency_s)
            base_url = f"{root}/L{latency:g}/v1"
            runs: dict[tuple[str, bool], list[tuple[float, float, float]]] = {}
            for repeat in range(args.repeats):
                order = variants if repeat % 2 == 0 else variants[::-1]
                for name, uv in order:
                    before = server_stats(root)
                    rate, cpu = measure(CLIENTS[name], uv, base_url, concurrency, latency, proc.pid)
                    after = server_stats(root)
                    served = max(1.0, after["requests"] - before["requests"])
                    server_cpu = (after["cpu"] - before["cpu"]) / served
                    runs.setdefault((name, uv), []).append((rate, cpu, server_cpu))
            ideal = concurrency / latency
            for name, uv in variants:
                rates = [r[0] for r in runs[(name, uv)]]
                rate = statistics.mean(rates)
                cpu = statistics.mean(r[1] for r in runs[(name, uv)])
                server_cpu = statistics.mean(r[2] for r in runs[(name, uv)])
                noise = (max(rates) - min(rates)) / rate
                results[(name, uv, concurrency)] = (rate / ideal, cpu)
                label = name + (" (uvloop)" if uv else "")
                print(
                    f"{concurrency:>5} {latency:>4g} {label:<22} {rate:>8.0f} "
                    f"{100 * rate / ideal:>8.1f}% {100 * noise:>5.1f}% "
                    f"{1e3 * cpu:>6.3f} ms {1e3 * server_cpu:>12.3f} ms"
                )
            sys.stdout.flush()
        report_targets(results, chosen, not args.no_uvloop)
        print(load())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def report_targets(
    results: dict[tuple[str, bool, int], tuple[float, float]], chosen: list[str], uvloop: bool
) -> None:
    """The issue's targets for the engine path, met or missed."""
    if "engine" not in chosen:
        return
    loops = [False, True] if uvloop else [False]
    print("targets, engine path:")
    for uv in loops:
        label = "uvloop" if uv else "asyncio"
        levels = sorted(c for (n, u, c) in results if n == "engine" and u == uv)
        for conc in levels:
            share = results[("engine", uv, conc)][0]
            want = TARGETS.get(conc)
            if want is not None:
                verdict = "met" if share >= want else "MISSED"
                print(
                    f"  {label}: {conc:>5} in flight {100 * share:.1f}% of ideal, want >= "
                    f"{100 * want:.0f}%: {verdict}"
                )
            for sdk_name in ("sdk", "sdk+aiohttp"):
                if (sdk_name, False, conc) in results:
                    theirs = results[(sdk_name, False, conc)][0]
                    verdict = "met" if share >= theirs else "MISSED"
                    print(
                        f"  {label}: {conc:>5} in flight vs {sdk_name} {100 * theirs:.1f}%: "
                        f"{verdict}"
                    )
        cpus = [results[("engine", uv, c)][1] for c in levels]
        if cpus:
            worst, lowest = max(cpus), min(cpus)
            verdict = "met" if worst <= CPU_TARGET_S else "MISSED"
            print(
                f"  {label}: CPU per call at most {1e3 * worst:.3f} ms, want <= 0.5 ms: {verdict}"
            )
            verdict = "met" if worst <= CPU_FLATNESS * lowest else "MISSED"
            print(
                f"  {label}: CPU per call from {1e3 * lowest:.3f} to {1e3 * worst:.3f} ms, "
                f"want within {CPU_FLATNESS}x: {verdict}"
            )


if __name__ == "__main__":
    main()
