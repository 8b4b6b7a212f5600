"""The catalogue: the default panel tells its story, and the stated numbers are what comes out."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from core.sim.answers import correct_probability, simulate
from core.sim.models import AVERAGE_DIFFICULTY, DEFAULT_PANEL, SIM_MODELS, SimModel

LABELS = ["a", "b", "c"]


def test_default_panel_is_five_models_from_the_catalogue() -> None:
    assert len(DEFAULT_PANEL) == 5
    assert len(set(DEFAULT_PANEL)) == 5
    assert set(DEFAULT_PANEL) <= set(SIM_MODELS)
    for name, model in SIM_MODELS.items():
        assert model.name == name


def test_the_panel_tells_its_story() -> None:
    strong, fast, mid = SIM_MODELS["sim-strong"], SIM_MODELS["sim-fast"], SIM_MODELS["sim-mid"]
    biased, flaky = SIM_MODELS["sim-biased"], SIM_MODELS["sim-flaky"]
    assert strong.accuracy > mid.accuracy > fast.accuracy
    assert strong.latency_median_ms > mid.latency_median_ms > fast.latency_median_ms
    assert strong.price_out > mid.price_out > fast.price_out
    assert biased.prefers == "regression" and biased.bias > 0
    assert flaky.error_rate > max(m.error_rate for m in (strong, fast, mid, biased))
    assert flaky.malformed > 0
    for model in SIM_MODELS.values():
        assert 100 <= model.latency_median_ms <= 2000  # demo-friendly
        assert model.latency_p95_ms > model.latency_median_ms  # long-tailed


def test_skill_is_derived_from_accuracy_at_average_difficulty() -> None:
    for model in SIM_MODELS.values():
        assert correct_probability(model, AVERAGE_DIFFICULTY) == pytest.approx(model.accuracy)
    weaker = replace(SIM_MODELS["sim-mid"], accuracy=0.6)
    assert weaker.skill < SIM_MODELS["sim-mid"].skill


@pytest.mark.parametrize(
    "changes",
    [
        {"accuracy": 1.0},
        {"accuracy": 0.0},
        {"latency_median_ms": 500.0, "latency_p95_ms": 400.0},
        {"error_rate": 1.5},
        {"malformed": -0.1},
    ],
)
def test_impossible_models_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        replace(SIM_MODELS["sim-mid"], **changes)


def test_latency_median_and_p95_are_the_stated_ones() -> None:
    model: SimModel = SIM_MODELS["sim-flaky"]
    # Failed calls give up early, at their time to first token: only answers are measured.
    replies = [simulate(model, f"input {i}", LABELS, {}, 0, seed=1) for i in range(4000)]
    ok = sorted(r.latency_ms for r in replies if r.error is None)
    assert len(ok) > 3000
    median = statistics.median(ok)
    p95 = ok[int(0.95 * len(ok))]
    assert median == pytest.approx(model.latency_median_ms, rel=0.1)
    assert p95 == pytest.approx(model.latency_p95_ms, rel=0.15)


def test_time_to_first_token_comes_before_the_end_and_tokens_average_out() -> None:
    model = SIM_MODELS["sim-strong"]
    replies = [simulate(model, f"item {i}", LABELS, {}, 0, seed=3) for i in range(2000)]
    assert all(r.ttft_ms < r.latency_ms or r.error is not None for r in replies)
    assert all(r.ttft_ms <= r.latency_ms for r in replies)
    tokens = [r.tokens_out for r in replies if r.error is None]
    assert statistics.mean(tokens) == pytest.approx(model.tokens_out, rel=0.1)
