"""Fan-out throughput: Tally's engine next to the HTTP clients it could stand on and the
official ``openai`` SDK, all in this process, against one lean loopback endpoint in its own
process (``benchmarks/lean_server.py``, whose CPU per request is printed: it is not the limit).

Each level is a concurrency and a server latency L; ideal = concurrency / L. For each client:
calls/s as a share of ideal, and the client's CPU per call (this process, every thread, plus
the store writer's process when it ran). Each level runs every client ``--repeats`` times,
alternating the order; the spread between the repeats of one client is the noise of the
measure (A/A), printed next to the figures, and "over floor" is a client's CPU per call above
raw aiohttp + gather's at the same level.

The engine stores every run in a fresh database (SQLite, or ``--database postgresql``) as the
product does, with its writer as shipped (``engine``), with thread commits only
(``engine/thread``), and with no store at all (``engine/no-store``): the store writer's share of
the engine's CPU per call is the difference, printed against its 10% target. On PostgreSQL the
server's CPU per call is printed too (every ``postgres`` process on the machine: other users of
the server count in it). Run: ``make bench`` or ``.venv/bin/python benchmarks/fanout.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.api import StoreRecorder  # noqa: E402
from core.config import ProviderConfig, TallyConfig  # noqa: E402
from core.cost import PriceBook  # noqa: E402
from core.engine import Engine, Recorder, RunRequest  # noqa: E402
from core.formats import parse_format  # noqa: E402
from core.http import build_client  # noqa: E402
from core.panel import Panel  # noqa: E402
from core.policy import Policy  # noqa: E402
from core.providers.registry import build_registry  # noqa: E402
from core.retry import RetryPolicy  # noqa: E402
from core.spec import RunSpec  # noqa: E402
from core.store import Store, StoreWriter  # noqa: E402
from core.store.writer import PROCESS_AFTER  # noqa: E402
from core.task import Task  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from store import PG_URL, fresh_database, postgres_cpu  # noqa: E402

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


DATABASE = {"backend": "sqlite", "url": PG_URL}
"""Where the engine's stores go: ``--database postgresql`` puts them on the local server."""


def engine(writer: str) -> Client:
    """Tally's engine through core/http.py. ``writer``: ``shipped`` (the product's
    ``StoreWriter``: thread commits, then the writer's own process), ``thread`` (thread commits
    only) or ``none`` (nothing stored: what the store costs is the difference). Each run goes
    into a fresh database; twice as many runs as fill the ceiling are under way, so it is
    always full."""

    async def run(base_url: str, concurrency: int, tick: Tick) -> None:
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
        panel = Panel.build(["bench:bench"], VOTES_PER_RUN)
        spec = RunSpec(task=task, panel=panel, policy=Policy())
        numbers = iter(range(10**9))
        with contextlib.ExitStack() as stack:
            recorder: Recorder = CountingRecorder(tick)
            async with contextlib.AsyncExitStack() as astack:
                if writer != "none":
                    store = stack.enter_context(
                        fresh_database(DATABASE["backend"], DATABASE["url"])
                    )
                    process_after = PROCESS_AFTER if writer == "shipped" else None
                    sink = await astack.enter_async_context(
                        StoreWriter(store, process_after=process_after)
                    )
                    recorder = CountingStoreRecorder(store, sink, tick)
                client = await astack.enter_async_context(
                    build_client(None, max_connections=concurrency)
                )
                engine = Engine(
                    registry=registry,
                    client=client,
                    prices=PriceBook(),
                    concurrency=concurrency,
                    retry=RetryPolicy(max_attempts=1),
                    recorder=recorder,
                )

                async def runs() -> None:
                    while True:
                        await engine.run(run_request(next(numbers), spec))

                async with anyio.create_task_group() as tg:
                    for _ in range(max(2, 2 * concurrency // VOTES_PER_RUN)):
                        tg.start_soon(runs)

    run.__doc__ = f"the engine, store writer: {writer}"
    return run


engine_path = engine("shipped")


class CountingRecorder(Recorder):
    """Stores nothing; each finished ok call is a tick."""

    def __init__(self, tick: Tick) -> None:
        self.tick = tick

    async def call_finished(self, run_id: str, call: Any, cache_key: str | None) -> None:
        if call.status.value == "ok":
            self.tick()


class CountingStoreRecorder(StoreRecorder):
    """The product's recorder; each finished ok call is a tick."""

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
    "engine/thread": engine("thread"),
    "engine/no-store": engine("none"),
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


class Sample(NamedTuple):
    rate: float  # calls per second
    cpu: float  # CPU seconds per call: this process, every thread, and its children
    db_cpu: float  # CPU seconds per call of the PostgreSQL server (0 on SQLite)


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
) -> Sample:
    """Calls per second and CPU seconds per call over a steady window on a fresh event loop:
    from the first finished call (a fresh database is made and migrated before), after a
    warm-up (1.5 L: connections opened, the first wave back), for 3 L."""
    count = 0
    postgres = DATABASE["backend"] == "postgresql"
    first = anyio.Event()

    def tick() -> None:
        nonlocal count
        count += 1
        first.set()

    async def timed() -> Sample:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client, base_url, concurrency, tick)
            with anyio.fail_after(120):
                await first.wait()
            await anyio.sleep(1.5 * latency if warm_s is None else warm_s)
            d0 = postgres_cpu() if postgres else 0.0
            n0, t0 = count, time.perf_counter()
            c0 = children_cpu(server) + time.process_time()  # the /proc reads not counted
            await anyio.sleep(3 * latency if window_s is None else window_s)
            n1, t1 = count, time.perf_counter()
            c1 = time.process_time() + children_cpu(server)
            d1 = postgres_cpu() if postgres else 0.0
            tg.cancel_scope.cancel()
        calls = max(1, n1 - n0)
        return Sample(calls / (t1 - t0), (c1 - c0) / calls, (d1 - d0) / calls)

    return anyio.run(timed, backend_options={"use_uvloop": uvloop})


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (1 min) {five:.1f} (5 min) on {os.cpu_count()} cores"


Key = tuple[str, bool, int]  # client, uvloop, concurrency


@dataclass
class Level:
    """One client's repeats at one level."""

    ideal: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def share(self) -> float:
        return statistics.mean(s.rate for s in self.samples) / self.ideal

    @property
    def noise(self) -> float:
        """The spread of the repeats (A/A), as a share of their mean."""
        rates = [s.rate for s in self.samples]
        return (max(rates) - min(rates)) / statistics.mean(rates)

    @property
    def cpu(self) -> float:
        return statistics.mean(s.cpu for s in self.samples)

    @property
    def db_cpu(self) -> float:
        return statistics.mean(s.db_cpu for s in self.samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default=LEVELS, help="concurrency:latency_s, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clients", default=",".join(CLIENTS), help="which clients to run")
    parser.add_argument("--no-uvloop", action="store_true", help="only the default event loop")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="where the engine's stores go (postgresql: the server at 127.0.0.1:5432)",
    )
    args = parser.parse_args()
    DATABASE["backend"] = args.database
    chosen = [name.strip() for name in args.clients.split(",")]
    variants = [(name, False) for name in chosen]
    if not args.no_uvloop:
        variants += [(name, True) for name in chosen if name in UVLOOP]
    proc, root = start_server()
    try:
        for name, uv in variants:  # warm-up: imports, first connections
            measure(CLIENTS[name], uv, f"{root}/L0.01/v1", 8, 0.05, proc.pid)
        print(
            f"{load()}; store: {args.database}; {args.repeats} runs each, alternating: "
            "1.5 L warm-up, then 3 L measured"
        )
        print(
            f"{'conc':>5} {'L':>4} {'client':<26} {'calls/s':>8} {'of ideal':>9} "
            f"{'A/A':>6} {'cpu/call':>9} {'over floor':>11} {'server cpu/req':>15}"
            + (f" {'postgres/call':>14}" if args.database == "postgresql" else "")
        )
        results: dict[Key, Level] = {}
        for level in args.levels.split(","):
            conc_s, latency_s = level.split(":")
            concurrency, latency = int(conc_s), float(latency_s)
            base_url = f"{root}/L{latency:g}/v1"
            server_cpu: dict[tuple[str, bool], list[float]] = {}
            for repeat in range(args.repeats):
                order = variants if repeat % 2 == 0 else variants[::-1]
                for name, uv in order:
                    before = server_stats(root)
                    sample = measure(CLIENTS[name], uv, base_url, concurrency, latency, proc.pid)
                    after = server_stats(root)
                    served = max(1.0, after["requests"] - before["requests"])
                    server_cpu.setdefault((name, uv), []).append(
                        (after["cpu"] - before["cpu"]) / served
                    )
                    key = (name, uv, concurrency)
                    results.setdefault(key, Level(concurrency / latency)).samples.append(sample)
            for name, uv in variants:
                got = results[(name, uv, concurrency)]
                floor = results.get(("floor", uv, concurrency))
                over = f"{1e3 * (got.cpu - floor.cpu):>+8.3f} ms" if floor else f"{'-':>11}"
                label = name + (" (uvloop)" if uv else "")
                print(
                    f"{concurrency:>5} {latency:>4g} {label:<26} {got.share * got.ideal:>8.0f} "
                    f"{100 * got.share:>8.1f}% {100 * got.noise:>5.1f}% "
                    f"{1e3 * got.cpu:>6.3f} ms {over} "
                    f"{1e3 * statistics.mean(server_cpu[(name, uv)]):>12.3f} ms"
                    + (f" {1e3 * got.db_cpu:>11.3f} ms" if args.database == "postgresql" else "")
                )
            sys.stdout.flush()
        report_store(results, args.database)
        report_targets(results, not args.no_uvloop)
        print(load())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


STORE_SHARE_TARGET = 0.10
"""The store's share of the engine's CPU per call it must stay under."""


def report_store(results: dict[Key, Level], database: str) -> None:
    """What the store costs the engine: CPU per call with each writer against none."""
    levels = sorted({c for (n, u, c) in results if n == "engine/no-store" and not u})
    if not levels:
        return
    print(f"store writer's share of the engine's CPU per call ({database}):")
    for conc in levels:
        bare = results[("engine/no-store", False, conc)].cpu
        for name in ("engine/thread", "engine"):
            with_store = results.get((name, False, conc))
            if with_store is None:
                continue
            share = (with_store.cpu - bare) / with_store.cpu
            writer = "thread writer" if name == "engine/thread" else "as shipped (process)"
            verdict = "met" if share < STORE_SHARE_TARGET else "MISSED"
            print(
                f"  {conc:>5} in flight, {writer:<21} {1e3 * (with_store.cpu - bare):+.3f} ms "
                f"of {1e3 * with_store.cpu:.3f} ms = {100 * share:5.1f}%, want < "
                f"{100 * STORE_SHARE_TARGET:.0f}%: {verdict}"
            )


def versus(ours: Level, theirs: Level) -> str:
    """Our throughput over theirs, with the noise of both; met, within the noise, or missed."""
    ratio = ours.share / theirs.share
    noise = ours.noise + theirs.noise
    verdict = "met" if ratio >= 1 else ("within noise" if ratio >= 1 - noise else "MISSED")
    return f"{ratio:.3f} (noise {100 * noise:.1f}%): {verdict}"


def report_targets(results: dict[Key, Level], uvloop: bool) -> None:
    """The issue's targets for the engine path, met or missed."""
    print("targets, engine path (as shipped):")
    for uv in [False, True] if uvloop else [False]:
        label = "uvloop" if uv else "asyncio"
        levels = sorted(c for (n, u, c) in results if n == "engine" and u == uv)
        for conc in levels:
            ours = results[("engine", uv, conc)]
            want = TARGETS.get(conc)
            if want is not None:
                verdict = "met" if ours.share >= want else "MISSED"
                print(
                    f"  {label}: {conc:>5} in flight {100 * ours.share:.1f}% of ideal "
                    f"(A/A {100 * ours.noise:.1f}%), want >= {100 * want:.0f}%: {verdict}"
                )
            for sdk_name in ("sdk", "sdk+aiohttp"):
                theirs = results.get((sdk_name, False, conc))
                if theirs is not None:
                    print(
                        f"  {label}: {conc:>5} in flight, engine / {sdk_name}: "
                        f"{versus(ours, theirs)}"
                    )
        cpus = {c: results[("engine", uv, c)].cpu for c in levels}
        if cpus:
            worst, lowest = max(cpus.values()), min(cpus.values())
            verdict = "met" if worst <= CPU_TARGET_S else "MISSED"
            print(
                f"  {label}: CPU per call at most {1e3 * worst:.3f} ms, want <= "
                f"{1e3 * CPU_TARGET_S:.1f} ms: {verdict}"
            )
            verdict = "met" if worst <= CPU_FLATNESS * lowest else "MISSED"
            print(
                f"  {label}: CPU per call from {1e3 * lowest:.3f} to {1e3 * worst:.3f} ms "
                f"({worst / lowest:.2f}x), want within {CPU_FLATNESS}x: {verdict}"
            )
            floors = {
                c: results[("floor", uv, c)].cpu for c in levels if ("floor", uv, c) in results
            }
            if floors:
                print(
                    f"  {label}: raw aiohttp + gather, the floor: "
                    + ", ".join(f"{1e3 * v:.3f} ms at {c}" for c, v in floors.items())
                )


if __name__ == "__main__":
    main()
