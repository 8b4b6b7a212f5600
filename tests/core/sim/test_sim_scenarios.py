"""The two reliability scenarios do what they are built for, at a fixed seed: learned
reliability beats majority on the uneven panel and gains nothing on the homogeneous one."""

from __future__ import annotations

import numpy as np
import pytest

from core.analysis.reliability import compare_aggregates
from core.sim.answers import simulate
from core.sim.models import SimModel
from core.sim.scenarios import SCENARIOS, Scenario

ITEMS = 1000


def votes_and_gold(
    scenario: Scenario, seed: int
) -> tuple[dict[str, dict[str, dict[str, int]]], dict[str, str]]:
    votes: dict[str, dict[str, dict[str, int]]] = {}
    gold: dict[str, str] = {}
    for text, replies in scenario.answers(ITEMS, seed=seed):
        votes[text] = {
            m.name: {r.answer: 1}
            for m, r in zip(scenario.panel, replies, strict=True)
            if r.answer is not None
        }
        gold[text] = replies[0].gold or ""
    return votes, gold


def accuracies(scenario: Scenario, seed: int) -> dict[str, float]:
    votes, gold = votes_and_gold(scenario, seed)
    return {s.aggregate: s.accuracy for s in compare_aggregates(votes, gold)}


SEEDS = (0, 1, 2)


def test_learned_reliability_wins_on_the_uneven_panel() -> None:
    runs = [accuracies(SCENARIOS["uneven"], seed) for seed in SEEDS]
    for learned in ("weighted", "dawid-skene"):
        gains = [r[learned] - r["majority"] for r in runs]
        assert all(g > 0 for g in gains), (learned, gains)
        assert np.mean(gains) > 0.01, (learned, gains)


def test_learned_reliability_gains_nothing_on_a_homogeneous_panel() -> None:
    for seed in SEEDS:
        scores = accuracies(SCENARIOS["homogeneous"], seed)
        for learned in ("weighted", "one-coin", "dawid-skene"):
            assert abs(scores[learned] - scores["majority"]) <= 0.005, (seed, scores)


def test_a_family_errs_together() -> None:
    """Two models of one family share more errors than two alike models of none."""
    plain = {"latency_median_ms": 100.0, "latency_p95_ms": 300.0, "ttft_ms": 10.0}
    costs = {"tokens_out": 10, "price_in": 0.1, "price_out": 0.1}
    kin = [
        SimModel(f"kin-{i}", 0.7, **plain, **costs, family="f", family_share=0.4) for i in (1, 2)
    ]
    apart = [SimModel(f"apart-{i}", 0.7, **plain, **costs) for i in (1, 2)]

    def error_correlation(models: list[SimModel]) -> float:
        wrong = [
            [
                not simulate(m, f"item {k}", ["a", "b", "c"], {"kind": "label"}, 0, 0).correct
                for m in models
            ]
            for k in range(1500)
        ]
        return float(np.corrcoef(np.array(wrong, dtype=float), rowvar=False)[0, 1])

    assert error_correlation(kin) > error_correlation(apart) + 0.1


def test_a_family_share_needs_a_family() -> None:
    with pytest.raises(ValueError, match="needs a family"):
        SimModel("x", 0.7, 100.0, 300.0, 10.0, 10, 0.1, 0.1, family_share=0.2)
