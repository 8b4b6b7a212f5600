"""The throughput wall, measured: the same calls fired at rising concurrency, one level at a time.

Every level gets a fresh engine whose global and provider ceilings are the level itself, so
the level is the only thing that changes. The calls are the same at every level (the same
inputs, each with a fixed ``seed`` that endpoints honouring seeds use to repeat the work), so
a level differs from the next in concurrency only, not in which answers were slow. Calls go
out once, without retries: a sweep measures what the endpoint does under load, and a retried
429 would hide exactly that. The calls are not stored as runs; the sweep is.

Before the first level one probe call checks that the endpoint answers at all, so a wrong URL
or a dead server ends the sweep with one line instead of a table of errors.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
from pydantic import BaseModel

from core.analysis import SweepPoint, SweepVerdict, analyse_sweep
from core.api import Tally
from core.auth import LOCAL, Identity, Role
from core.config import ProviderConfig, TallyConfig, save_provider_concurrency
from core.cost import cost_total, describe_cost, dollars, is_simulated
from core.datasets import load_set
from core.engine import Engine, RunRequest
from core.errors import InputError, TallyError
from core.estimate import SpendEstimate, combine
from core.formats import parse_format
from core.panel import ModelSpec, Panel
from core.policy import Policy
from core.providers.registry import build_registry
from core.result import CallResult, CallStatus
from core.retry import RetryPolicy
from core.sim.server import serve_in_thread
from core.spec import RunSpec
from core.store import Store
from core.task import Task

DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_CALLS = 16
MAX_LEVEL = 1024
ROUNDS = 4
"""Full rounds of calls per level at least: with fewer, the slowest call of the last round
(the tail) decides the level's time and high levels read slower than they are."""
SWEEP_SEED = 0
"""The ``seed`` every sweep call sends: the same request at every level."""

LevelSink = Callable[[SweepPoint], None]


class SavedCeiling(BaseModel):
    """Where a measured ceiling was written."""

    path: str
    provider: str
    max_concurrency: int


class SweepReport(BaseModel):
    """A sweep as ``tally sweep --json`` prints it and ``Store.save_sweep`` keeps it."""

    sweep_id: str | None = None
    model: str
    provider: str
    levels: list[int]
    calls_per_level: int
    calls: int
    cost_usd: float | None
    elapsed_s: float
    verdict: SweepVerdict
    saved: SavedCeiling | None = None
    # the known part of a cost that is partly unknown (absent in older stored sweeps)
    cost_known_usd: float | None = None
    cost_unknown_calls: int = 0

    def cost_text(self, money: Callable[[float | None], str] = dollars) -> str:
        """The sweep's cost as every cost reads (:func:`core.cost.describe_cost`)."""
        return describe_cost(
            self.cost_usd,
            self.cost_known_usd,
            self.cost_unknown_calls,
            money=money,
            simulated=is_simulated([self.model]),
        )


def check_levels(levels: Sequence[int]) -> list[int]:
    """Sorted distinct levels; at least two, each from 1 to ``MAX_LEVEL``."""
    values = sorted(set(levels))
    if len(values) < 2:
        raise InputError("a sweep needs at least two concurrency levels, e.g. 1,2,4,8")
    if values[0] < 1 or values[-1] > MAX_LEVEL:
        bad = values[0] if values[0] < 1 else values[-1]
        raise InputError(f"concurrency levels run from 1 to {MAX_LEVEL}, got {bad}")
    return values


def calls_at(level: int, calls_per_level: int) -> int:
    """Calls fired at ``level``: the asked number, and at least ``ROUNDS`` full rounds of it."""
    return max(calls_per_level, ROUNDS * level)


def sweep_task() -> tuple[Task, list[str]]:
    """A realistic short classification: the bundled regression question and its inputs."""
    bundled = load_set("regression")
    task = Task(name="sweep", template=bundled.template, format=parse_format(dict(bundled.format)))
    return task, [item.text for item in bundled.items]


def level_config(
    config: TallyConfig, provider_config: ProviderConfig, provider: str, level: int
) -> TallyConfig:
    """``config`` with ``provider``'s ceiling set to ``level`` (the sweep's own, not saved)."""
    providers = dict(config.providers)
    providers[provider] = provider_config.model_copy(update={"max_concurrency": level})
    return config.model_copy(update={"providers": providers})


class _Level:
    """One level's engine and its calls."""

    def __init__(self, tally: Tally, spec: ModelSpec, level: int) -> None:
        cfg = level_config(tally.config, tally.registry.config(spec.provider), spec.provider, level)
        self.engine = Engine(
            registry=build_registry(cfg, tally.settings),
            client=tally.engine.client,
            prices=tally.prices,
            concurrency=level,
            call_timeout_s=tally.config.defaults.call_timeout_s,
            retry=RetryPolicy(max_attempts=1, base_s=0.0, max_s=0.0, jitter=False),
        )
        self.spec = spec
        self.level = level

    async def call(self, task: Task, text: str, index: int) -> CallResult:
        request = RunRequest(
            run_id=f"sweep-{self.level}-{index}",
            input=text,
            spec=RunSpec(task=task, panel=Panel.build([self.spec], 1), policy=Policy()),
            source="sweep",
            cache=False,
        )
        result = await self.engine.run(request)
        return result.calls[0]

    async def measure(
        self, task: Task, inputs: Sequence[str], calls: int
    ) -> tuple[SweepPoint, list[CallResult]]:
        done: list[CallResult] = []

        async def one(index: int) -> None:
            done.append(await self.call(task, inputs[index % len(inputs)], index))

        started, cpu = time.monotonic(), time.thread_time()
        async with anyio.create_task_group() as tg:
            for index in range(calls):
                tg.start_soon(one, index)
        elapsed = time.monotonic() - started
        cpu = time.thread_time() - cpu  # the event loop's thread: the client's own work
        return point(self.level, done, elapsed, cpu_s=cpu), done


def answered(call: CallResult) -> bool:
    """The endpoint replied (a reply no parser reads is still served work)."""
    return call.status in (CallStatus.OK, CallStatus.INVALID)


def point(
    level: int, calls: Sequence[CallResult], elapsed_s: float, *, cpu_s: float | None = None
) -> SweepPoint:
    """Throughput (replies per second), the replies' p50/p95 latency, and the client's CPU per
    call (``cpu_s`` over every call made) at one level."""
    served = [c for c in calls if answered(c)]
    latencies = [c.latency_ms for c in served if c.latency_ms is not None]
    p50: float | None = None
    p95: float | None = None
    if latencies:
        p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95]))
    return SweepPoint(
        concurrency=level,
        calls=len(calls),
        ok=len(served),
        errors=len(calls) - len(served),
        elapsed_s=elapsed_s,
        throughput=len(served) / elapsed_s if elapsed_s > 0 else 0.0,
        p50_ms=p50,
        p95_ms=p95,
        cpu_ms_per_call=None if cpu_s is None or not calls else 1000.0 * cpu_s / len(calls),
    )


def seeded(spec: ModelSpec) -> ModelSpec:
    """The model asked with a fixed seed (kept when the user set one)."""
    if "seed" in spec.params:
        return spec
    return spec.model_copy(update={"params": {**spec.params, "seed": SWEEP_SEED}})


def estimate_sweep(
    tally: Tally, model: str, levels: Sequence[int], calls_per_level: int
) -> SpendEstimate:
    """What a sweep will spend before it starts: the probe, then every level's calls at that
    level's ceiling, one level after another."""
    wanted = check_levels(levels)
    if calls_per_level < 1:
        raise InputError(f"calls per level must be at least 1, got {calls_per_level}")
    spec = seeded(ModelSpec.parse(model))
    task, inputs = sweep_task()
    run = RunSpec(task=task, panel=tally.panel([spec], 1), policy=Policy())
    parts = [tally.estimate(run, inputs[:1], ceiling=1)]
    for level in wanted:
        count = calls_at(level, calls_per_level)
        texts = [inputs[i % len(inputs)] for i in range(count)]
        parts.append(tally.estimate(run, texts, ceiling=level))
    return combine(parts)


async def run_sweep(
    tally: Tally,
    model: str,
    levels: Sequence[int] = DEFAULT_LEVELS,
    *,
    calls_per_level: int = DEFAULT_CALLS,
    on_level: LevelSink | None = None,
) -> SweepReport:
    """Probe, then measure every level, then classify the shape.

    ``tally`` must be opened with a concurrency of at least the highest level, so its HTTP
    pool is never what limits a level. Raises :class:`TallyError` (exit 1) when the probe call
    gets no reply: nothing was measured.
    """
    wanted = check_levels(levels)
    if calls_per_level < 1:
        raise InputError(f"calls per level must be at least 1, got {calls_per_level}")
    if tally.engine.concurrency < wanted[-1]:
        raise InputError(
            f"the session's ceiling {tally.engine.concurrency} is below the top level {wanted[-1]}"
        )
    spec = seeded(ModelSpec.parse(model))
    tally.registry.resolve(spec)
    task, inputs = sweep_task()
    started = time.monotonic()

    probe = await _Level(tally, spec, 1).call(task, inputs[0], -1)
    if not answered(probe):
        raise TallyError(
            f"sweep of {spec.name} stopped: the probe call failed "
            f"({probe.error or probe.status.value}); nothing was measured"
        )
    every: list[CallResult] = [probe]
    points: list[SweepPoint] = []
    for level in wanted:
        measured, calls = await _Level(tally, spec, level).measure(
            task, inputs, calls_at(level, calls_per_level)
        )
        points.append(measured)
        every.extend(calls)
        if on_level is not None:
            on_level(measured)
    if not any(p.ok for p in points):
        first = next((c.error for c in every if c.error), "no reply")
        raise TallyError(f"sweep of {spec.name} failed: no call got a reply ({first})")
    spent = cost_total(every)
    return SweepReport(
        model=spec.name,
        provider=spec.provider,
        levels=wanted,
        calls_per_level=calls_per_level,
        calls=len(every),
        cost_usd=spent.usd,
        cost_known_usd=spent.known_usd,
        cost_unknown_calls=spent.unknown_calls,
        elapsed_s=time.monotonic() - started,
        verdict=analyse_sweep(points),
    )


def save_report(store: Store, report: SweepReport) -> SweepReport:
    """Store the sweep under its model's name; returns it with its ``sweep_id``."""
    params = {"levels": report.levels, "calls_per_level": report.calls_per_level}
    sweep_id = store.save_sweep(report.model, params, report.model_dump(mode="json"))
    return report.model_copy(update={"sweep_id": sweep_id})


async def sweep_and_store(
    model: str,
    levels: Sequence[int] = DEFAULT_LEVELS,
    *,
    calls_per_level: int = DEFAULT_CALLS,
    config: str | Path | None = None,
    database_url: str | None = None,
    save: bool = False,
    on_level: LevelSink | None = None,
) -> SweepReport:
    """Open a session wide enough for the top level, sweep, store, and with ``save`` write
    the ceiling into the tally.toml in use (refused before any call when there is none).

    A sweep that finds no ceiling (throughput still rising) saves nothing: ``saved`` stays
    ``None``, and the verdict says to sweep higher.
    """
    wanted = check_levels(levels)
    async with Tally.open(
        config=config, database_url=database_url, concurrency=wanted[-1]
    ) as tally:
        if save:
            config_in_use(tally.config)
        store = tally.store
        assert store is not None  # opened with persistence on
        report = await run_sweep(
            tally, model, wanted, calls_per_level=calls_per_level, on_level=on_level
        )
        report = await anyio.to_thread.run_sync(save_report, store, report)
        if save and report.verdict.ceiling is not None:
            saved = save_ceiling(tally.config, report, actor=LOCAL)  # the CLI's own user
            report = report.model_copy(update={"saved": saved})
        return report


# --------------------------------------------------------------------------- the demo


@dataclass(frozen=True)
class DemoMode:
    """One downstream the sim server can play, and how to sweep it so the shape is the
    server's: calls slow enough that the client's own overhead (which is serial with the
    server at one call in flight) stays small next to them, even on a loaded machine."""

    capacity: int | None
    contention: int | None
    levels: tuple[int, ...]
    time_scale: float  # sim-fast answers in about 300 ms x this


DEMO_MODES: dict[str, DemoMode] = {
    # throughput grows with concurrency: the top level needs the client to keep up
    "unlimited": DemoMode(None, None, (1, 2, 4, 8), 0.5),
    # one request at a time: every call waits for all the earlier ones, so few levels
    "capacity-1": DemoMode(1, None, (1, 2, 4), 0.5),
    # slows down past 8 in flight: levels well past the knee to show the fall
    "contention-8": DemoMode(None, 8, (1, 2, 4, 8, 16, 32), 0.25),
}
DEMO_CALLS = 8


async def demo_sweep_async(
    mode: str,
    *,
    levels: Sequence[int] | None = None,
    calls_per_level: int = DEMO_CALLS,
    time_scale: float | None = None,
    model: str = "sim-fast",
    database_url: str | None = None,
    on_level: LevelSink | None = None,
) -> SweepReport:
    """Sweep a sim server started on loopback in ``mode`` (see :data:`DEMO_MODES`).

    The server's provider is named after the mode (``sim-capacity-1:sim-fast``), so the stored
    sweep says what it measured.
    """
    if mode not in DEMO_MODES:
        raise InputError(f"unknown demo mode {mode!r}: use {', '.join(DEMO_MODES)}")
    demo = DEMO_MODES[mode]
    with (
        serve_in_thread(
            time_scale=demo.time_scale if time_scale is None else time_scale,
            capacity=demo.capacity,
            contention=demo.contention,
        ) as url,
        tempfile.TemporaryDirectory(prefix="tally-demo-") as tmp,
    ):
        provider = f"sim-{mode}"
        path = Path(tmp) / "tally.toml"
        path.write_text(
            f'[providers.{provider}]\nkind = "openai"\nbase_url = "{url}"\n', encoding="utf-8"
        )
        return await sweep_and_store(
            f"{provider}:{model}",
            levels or demo.levels,
            calls_per_level=calls_per_level,
            config=path,
            database_url=database_url,
            on_level=on_level,
        )


def load_report(store: Store, sweep_id: str) -> SweepReport:
    saved = store.get_sweep(sweep_id)
    return SweepReport.model_validate(saved.result).model_copy(update={"sweep_id": saved.id})


def config_in_use(config: TallyConfig) -> Path:
    """The tally.toml a ceiling would be saved into; refused when none is in use.

    Creating one here would be pointless: a file that neither ``--config`` nor
    ``TALLY_CONFIG`` names is never read, so the saved ceiling would change nothing.
    """
    if config.path is None:
        raise InputError(
            "no tally.toml is in use, so the ceiling has nowhere to go: pass --config FILE "
            "or set TALLY_CONFIG (an empty file will do) and sweep again"
        )
    return config.path


def save_ceiling(config: TallyConfig, report: SweepReport, *, actor: Identity) -> SavedCeiling:
    """Write the measured ceiling as the provider's ``max_concurrency`` in the file in use
    (ceilings are an admin's)."""
    actor.require(Role.ADMIN)
    path = config_in_use(config)
    ceiling = report.verdict.ceiling
    if ceiling is None:
        raise InputError(
            f"no ceiling to save: throughput was still rising at {report.verdict.peak}; "
            "sweep higher levels first"
        )
    save_provider_concurrency(path, report.provider, ceiling)
    return SavedCeiling(path=str(path), provider=report.provider, max_concurrency=ceiling)
