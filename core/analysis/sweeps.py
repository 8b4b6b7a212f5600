"""The throughput wall: where more concurrency stops buying throughput, and why.

A sweep measures calls per second and latency at increasing concurrency levels. Its shape
tells what the downstream does:

- ``scales``: throughput still rising at the highest level tested; no ceiling found yet.
- ``ceiling``: throughput rises, then stays flat; the ceiling is where it levels off.
- ``falls``: throughput drops past a knee; orchestration and contention overhead exceed the
  gain (the handbook's pipeline peaks around 8).
- ``serialises``: throughput flat across every level while latency grows in proportion to
  concurrency; the endpoint serves one request at a time and parallel calls only queue.

:class:`AIMD` is the run-time counterpart: a provider that answers 429 gets its concurrency
cut in half, then restored slowly, as TCP does with its window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

from core.errors import InputError

Shape = Literal["scales", "ceiling", "falls", "serialises"]

TOOL_BOUND_WARNING = (
    "Parallel models still serialise on a single tool: eight parallel calls into a tool "
    "that serialises requests turn into eight serial calls plus orchestration overhead. "
    "Profile the tool before you scale."
)


class SweepPoint(BaseModel):
    """One concurrency level of a sweep."""

    concurrency: int
    calls: int
    ok: int
    errors: int
    elapsed_s: float
    throughput: float  # calls per second
    p50_ms: float | None
    p95_ms: float | None
    cpu_ms_per_call: float | None = None  # the client's event-loop thread; None: not measured

    @property
    def client_load(self) -> float | None:
        """The share of one core the client's event loop was busy: CPU per call times calls
        per second. Near 1 the client, not the endpoint, sets the throughput."""
        if self.cpu_ms_per_call is None:
            return None
        return self.cpu_ms_per_call / 1000.0 * self.throughput


class SweepVerdict(BaseModel):
    """What a sweep says: its shape, the concurrency to use, and a plain sentence."""

    shape: Shape
    ceiling: int | None  # the concurrency to configure; None while throughput still scales
    peak: int  # the level with the highest throughput
    peak_throughput: float
    latency_slope: float | None  # log-log slope of p50 against concurrency (1: proportional)
    message: str
    warning: str | None
    points: list[SweepPoint]
    client_bound: bool = False  # the client's loop was busy at the peak: not the endpoint's wall


def _latency_slope(points: Sequence[SweepPoint]) -> float | None:
    """Least-squares slope of log p50 against log concurrency, over levels with a p50."""
    pairs = [(p.concurrency, p.p50_ms) for p in points if p.p50_ms is not None and p.p50_ms > 0]
    if len(pairs) < 2:
        return None
    x = np.log([float(c) for c, _ in pairs])
    y = np.log([float(ms) for _, ms in pairs if ms is not None])
    slope = np.polyfit(x, y, 1)[0]
    return float(slope)


def analyse_sweep(
    points: Sequence[SweepPoint],
    *,
    tolerance: float = 0.05,
    fall: float = 0.10,
    flat_ratio: float = 1.3,
    proportional_slope: float = 0.7,
    client_bound_load: float = 0.8,
) -> SweepVerdict:
    """Classify a sweep and pick the concurrency to configure.

    The ceiling is not simply the level with the most throughput: among the levels within
    ``tolerance`` (5%) of the peak, the lowest is preferred, since extra concurrency that
    buys no measurable throughput only adds load and latency. Checked in this order:

    1. ``serialises``: max/min throughput below ``flat_ratio`` (1.3) and p50 latency growing
       with a log-log slope of at least ``proportional_slope`` (0.7; 1 is proportional).
       The ceiling is the lowest level.
    2. ``falls``: some level past the peak is more than ``fall`` (10%) below the peak.
    3. ``scales``: the highest level is the peak and more than ``tolerance`` above the level
       before it: no ceiling yet.
    4. ``ceiling``: anything else.

    Flat throughput says nothing by itself about who serialises: a client whose event loop is
    busy (``client_load`` at the peak of at least ``client_bound_load``, 0.8 of a core) flattens
    it too, with latency growing the same way. Such a verdict is marked ``client_bound``, and
    its warning says the ceiling is the client's, so it is never taken for the provider's.
    """
    verdict = _shape(
        points,
        tolerance=tolerance,
        fall=fall,
        flat_ratio=flat_ratio,
        proportional_slope=proportional_slope,
    )
    if verdict.shape == "scales":
        return verdict
    at_peak = next(p for p in verdict.points if p.concurrency == verdict.peak)
    load = at_peak.client_load
    if load is None or load < client_bound_load:
        return verdict
    return verdict.model_copy(
        update={
            "client_bound": True,
            "warning": (
                f"the client's event loop was busy {load:.0%} of a core at {verdict.peak} "
                f"({at_peak.cpu_ms_per_call:.2f} ms of CPU per call): this ceiling is the "
                "client's, not the endpoint's; fewer calls per process or a faster client "
                "would go higher"
            ),
        }
    )


def _shape(
    points: Sequence[SweepPoint],
    *,
    tolerance: float,
    fall: float,
    flat_ratio: float,
    proportional_slope: float,
) -> SweepVerdict:
    """The shape alone (see ``analyse_sweep``)."""
    if len(points) < 2:
        raise InputError("a sweep needs at least two concurrency levels")
    ordered = sorted(points, key=lambda p: p.concurrency)
    levels = [p.concurrency for p in ordered]
    if len(set(levels)) != len(levels):
        raise InputError("a sweep has each concurrency level once")
    if levels[0] < 1:
        raise InputError(f"concurrency must be at least 1, got {levels[0]}")
    if any(p.throughput < 0 or not math.isfinite(p.throughput) for p in ordered):
        raise InputError("throughput must be a finite number of calls per second")

    rates = [p.throughput for p in ordered]
    best = max(rates)
    peak_index = rates.index(best)
    peak = levels[peak_index]
    lowest_rate = min(rates)
    within = next(p.concurrency for p in ordered if p.throughput >= (1.0 - tolerance) * best)
    slope = _latency_slope(ordered)

    flat = best <= 0.0 or (lowest_rate > 0.0 and best / lowest_rate < flat_ratio)
    after_peak = rates[peak_index + 1 :]
    if flat and slope is not None and slope >= proportional_slope:
        return SweepVerdict(
            shape="serialises",
            ceiling=levels[0],
            peak=peak,
            peak_throughput=best,
            latency_slope=slope,
            message=(
                "this endpoint serves one request at a time: parallel calls only queue "
                f"(throughput stays near {best:.3g} calls/s from {levels[0]} to {levels[-1]} "
                "while latency grows with concurrency)"
            ),
            warning=TOOL_BOUND_WARNING,
            points=ordered,
        )
    if after_peak and min(after_peak) < (1.0 - fall) * best:
        drop = 1.0 - min(after_peak) / best
        return SweepVerdict(
            shape="falls",
            ceiling=within,
            peak=peak,
            peak_throughput=best,
            latency_slope=slope,
            message=(
                f"throughput falls past {peak}: orchestration and contention overhead exceed "
                f"the gain (down {drop:.0%} from the peak of {best:.3g} calls/s); "
                f"use a concurrency of {within}"
            ),
            warning=None,
            points=ordered,
        )
    if peak_index == len(ordered) - 1 and rates[-1] > (1.0 + tolerance) * rates[-2]:
        return SweepVerdict(
            shape="scales",
            ceiling=None,
            peak=peak,
            peak_throughput=best,
            latency_slope=slope,
            message=(
                f"throughput still rising at {peak} ({best:.3g} calls/s): no ceiling found yet; "
                "sweep higher concurrency to find it"
            ),
            warning=None,
            points=ordered,
        )
    return SweepVerdict(
        shape="ceiling",
        ceiling=within,
        peak=peak,
        peak_throughput=best,
        latency_slope=slope,
        message=(
            f"throughput levels off at {within} ({best:.3g} calls/s at best): "
            "more concurrency buys nothing"
        ),
        warning=None,
        points=ordered,
    )


class AIMD:
    """Additive-increase, multiplicative-decrease concurrency limit (a pure state machine).

    ``on_throttle`` (a 429 or similar) multiplies the limit by ``decrease``; ``on_success``
    adds ``increase`` per full window of successes (``increase / limit`` per call), so the
    limit recovers one step per round of calls rather than per call. Calls already in flight
    when the limit was cut (the first ``limit before the cut - 1`` outcomes after it) neither
    cut again nor grow the limit: one burst of 429s is one cut.
    The engine applies :attr:`limit` to its capacity limiter.
    """

    def __init__(
        self,
        initial: int,
        *,
        minimum: int = 1,
        maximum: int,
        increase: float = 1.0,
        decrease: float = 0.5,
    ) -> None:
        if minimum < 1:
            raise InputError(f"the minimum concurrency is at least 1, got {minimum}")
        if maximum < minimum:
            raise InputError(f"the maximum concurrency {maximum} is below the minimum {minimum}")
        if not minimum <= initial <= maximum:
            raise InputError(f"the initial concurrency {initial} is outside {minimum}..{maximum}")
        if increase <= 0:
            raise InputError(f"increase must be positive, got {increase}")
        if not 0.0 < decrease < 1.0:
            raise InputError(f"decrease must be between 0 and 1, got {decrease}")
        self.minimum = minimum
        self.maximum = maximum
        self.increase = increase
        self.decrease = decrease
        self._window = float(initial)
        self._in_flight_at_cut = 0  # completions to wait for before another cut counts
        self.cuts = 0

    @property
    def limit(self) -> int:
        """The concurrency to allow now."""
        return max(self.minimum, min(self.maximum, math.floor(self._window + 1e-9)))

    def on_success(self) -> int:
        """A call finished without throttling; returns the new limit."""
        if self._in_flight_at_cut:
            self._in_flight_at_cut -= 1  # started before the cut: says nothing about the new limit
            return self.limit
        self._window = min(float(self.maximum), self._window + self.increase / self.limit)
        return self.limit

    def on_throttle(self) -> int:
        """A call was throttled; returns the new limit (unchanged inside a burst)."""
        if self._in_flight_at_cut:
            self._in_flight_at_cut -= 1
            return self.limit
        before = self.limit
        self._window = max(float(self.minimum), self._window * self.decrease)
        self._window = float(max(self.minimum, math.floor(self._window + 1e-9)))
        self._in_flight_at_cut = before - 1
        self.cuts += 1
        return self.limit
