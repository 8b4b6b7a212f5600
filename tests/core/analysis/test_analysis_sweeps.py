"""Sweep shapes from a closed-loop queue model, and the AIMD limit as a state machine."""

from __future__ import annotations

import pytest

from core.analysis.sweeps import AIMD, TOOL_BOUND_WARNING, SweepPoint, analyse_sweep
from core.errors import InputError

LEVELS = [1, 2, 4, 8, 16, 32, 64]


def _point(concurrency: int, throughput: float, p50: float | None) -> SweepPoint:
    calls = 200
    return SweepPoint(
        concurrency=concurrency,
        calls=calls,
        ok=calls,
        errors=0,
        elapsed_s=calls / throughput if throughput else 0.0,
        throughput=throughput,
        p50_ms=p50,
        p95_ms=None if p50 is None else p50 * 1.5,
    )


def _closed_loop(
    capacity: float, service_ms: float = 100.0, contention: float = 0.0
) -> list[SweepPoint]:
    """c clients against a server of ``capacity`` slots; service slows past 8 in flight."""
    points = []
    for c in LEVELS:
        service = service_ms * (1.0 + contention * max(0, c - 8))
        served = min(c, capacity)
        latency = service * c / served  # waiting for a slot, then being served
        points.append(_point(c, 1000.0 * c / latency, latency))
    return points


def test_unlimited_endpoint_scales() -> None:
    verdict = analyse_sweep(_closed_loop(capacity=1000))
    assert verdict.shape == "scales"
    assert verdict.ceiling is None and verdict.peak == 64
    assert "no ceiling found yet" in verdict.message


def test_capacity_eight_has_a_ceiling_at_eight() -> None:
    verdict = analyse_sweep(_closed_loop(capacity=8))
    assert verdict.shape == "ceiling"
    assert verdict.ceiling == 8
    assert verdict.peak_throughput == pytest.approx(80.0)


def test_ceiling_prefers_the_lowest_level_within_tolerance() -> None:
    rates = [10, 20, 38, 77, 79, 80, 79.5]
    verdict = analyse_sweep([_point(c, r, 100.0) for c, r in zip(LEVELS, rates, strict=True)])
    assert verdict.shape == "ceiling"
    assert verdict.peak == 32
    assert verdict.ceiling == 8  # 77 is within 5% of 80


def test_contention_past_eight_falls() -> None:
    verdict = analyse_sweep(_closed_loop(capacity=8, contention=0.05))
    assert verdict.shape == "falls"
    assert verdict.peak == 8 and verdict.ceiling == 8
    assert verdict.message.startswith(
        "throughput falls past 8: orchestration and contention overhead exceed the gain"
    )


def test_superlinear_contention_past_eight_peaks_at_eight() -> None:
    # service time x (in flight / 8) ** 1.5 past 8 in flight, as the sim server's contention mode
    points = []
    for c in LEVELS:
        latency = 100.0 * max(1.0, c / 8) ** 1.5
        points.append(_point(c, 1000.0 * c / latency, latency))
    verdict = analyse_sweep(points)
    assert (verdict.shape, verdict.peak, verdict.ceiling) == ("falls", 8, 8)
    assert "down 65% from the peak" in verdict.message  # 64 in flight: (64 / 8) ** -0.5


def test_capacity_one_serialises() -> None:
    verdict = analyse_sweep(_closed_loop(capacity=1))
    assert verdict.shape == "serialises"
    assert verdict.ceiling == 1
    assert verdict.latency_slope == pytest.approx(1.0)
    assert verdict.message.startswith(
        "this endpoint serves one request at a time: parallel calls only queue"
    )
    assert verdict.warning == TOOL_BOUND_WARNING


def test_flat_throughput_without_latency_growth_is_not_serialising() -> None:
    verdict = analyse_sweep([_point(c, 50.0, 100.0) for c in (1, 2, 4)])
    assert verdict.shape == "ceiling" and verdict.ceiling == 1
    unknown = analyse_sweep([_point(c, 50.0, None) for c in (1, 2, 4)])
    assert unknown.shape == "ceiling" and unknown.latency_slope is None


def with_cpu(points: list[SweepPoint], cpu_ms: float) -> list[SweepPoint]:
    return [p.model_copy(update={"cpu_ms_per_call": cpu_ms}) for p in points]


def test_a_busy_client_is_never_taken_for_a_serialising_endpoint() -> None:
    # one slot's worth of throughput (10 calls/s) with latency growing: looks serialised...
    points = _closed_loop(capacity=1)
    idle = analyse_sweep(with_cpu(points, 1.0))  # 1% of a core: the endpoint's wall
    assert idle.shape == "serialises"
    assert not idle.client_bound
    assert idle.warning == TOOL_BOUND_WARNING
    busy = analyse_sweep(with_cpu(points, 95.0))  # 95 ms x 10/s: the client's loop is full
    assert busy.shape == "serialises"
    assert busy.client_bound
    assert busy.warning is not None
    assert "client's, not the endpoint's" in busy.warning
    assert "95%" in busy.warning


def test_client_load_needs_a_measure_and_a_ceiling() -> None:
    assert _point(8, 100.0, 80.0).client_load is None
    assert with_cpu([_point(8, 100.0, 80.0)], 2.0)[0].client_load == pytest.approx(0.2)
    scaling = analyse_sweep(with_cpu(_closed_loop(capacity=1000), 50.0))
    assert scaling.shape == "scales"  # still rising: no ceiling to blame on anyone
    assert not scaling.client_bound
    ceiling = analyse_sweep(with_cpu(_closed_loop(capacity=8), 100.0))
    assert ceiling.shape == "ceiling"
    assert ceiling.client_bound  # 100 ms x 80 calls/s: eight cores' worth, busy for sure


def test_points_come_back_sorted() -> None:
    points = list(reversed(_closed_loop(capacity=8)))
    assert [p.concurrency for p in analyse_sweep(points).points] == LEVELS


def test_sweep_input_errors() -> None:
    with pytest.raises(InputError, match="two concurrency levels"):
        analyse_sweep([_point(1, 10.0, 100.0)])
    with pytest.raises(InputError, match="once"):
        analyse_sweep([_point(1, 10.0, 100.0), _point(1, 11.0, 100.0)])
    with pytest.raises(InputError):
        analyse_sweep([_point(0, 10.0, 100.0), _point(1, 11.0, 100.0)])


def test_aimd_halves_on_throttle_once_per_burst() -> None:
    aimd = AIMD(8, maximum=16)
    assert aimd.limit == 8
    assert aimd.on_throttle() == 4
    # the other 7 calls in flight at the cut report back: no further cut, no growth
    assert [aimd.on_throttle() for _ in range(3)] == [4, 4, 4]
    assert [aimd.on_success() for _ in range(4)] == [4, 4, 4, 4]
    assert aimd.on_throttle() == 2  # a call started under the new limit
    assert aimd.cuts == 2


def test_aimd_restores_one_step_per_window() -> None:
    aimd = AIMD(4, maximum=6)
    steps = [aimd.on_success() for _ in range(4 + 5 + 6)]
    assert steps[:4] == [4, 4, 4, 5]
    assert steps[4:9] == [5, 5, 5, 5, 6]
    assert steps[9:] == [6] * 6  # capped at the maximum


def test_aimd_never_goes_below_the_minimum() -> None:
    aimd = AIMD(3, minimum=2, maximum=8)
    assert aimd.on_throttle() == 2
    aimd.on_success()  # the one other call in flight at the cut
    assert aimd.on_throttle() == 2
    one = AIMD(1, maximum=4)
    assert one.on_throttle() == 1
    assert one.on_throttle() == 1
    assert one.on_success() == 2


def test_aimd_custom_steps() -> None:
    aimd = AIMD(10, maximum=20, increase=2, decrease=0.7)
    assert aimd.on_throttle() == 7
    for _ in range(9):
        assert aimd.on_success() == 7  # in flight at the cut
    # +2 per window of 7: 7.29, 7.57, 7.86, 8.14
    assert [aimd.on_success() for _ in range(4)] == [7, 7, 7, 8]


def test_aimd_rejects_bad_settings() -> None:
    with pytest.raises(InputError):
        AIMD(0, maximum=4)
    with pytest.raises(InputError):
        AIMD(5, maximum=4)
    with pytest.raises(InputError):
        AIMD(2, minimum=3, maximum=2)
    with pytest.raises(InputError):
        AIMD(2, maximum=4, decrease=1.0)
    with pytest.raises(InputError):
        AIMD(2, maximum=4, increase=0)
