"""Error against N: hand-computed majorities, constructed sets and simulated coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from core.analysis.curves import (
    Curve,
    CurvePoint,
    Samples,
    condorcet_error,
    effective_voters,
    error_correlation,
    harm_report,
    harmful_items,
    majority_error_curve,
    recommend,
)
from core.errors import InputError

# --------------------------------------------------------------------------- Condorcet


def test_condorcet_matches_hand_computed_binomials() -> None:
    assert condorcet_error(0.7, 3) == pytest.approx(0.216, abs=1e-12)
    assert condorcet_error(0.7, 5) == pytest.approx(0.16308, abs=1e-12)
    assert condorcet_error(0.7, 1) == pytest.approx(0.3, abs=1e-12)


@pytest.mark.parametrize("p", [0.3, 0.55, 0.7, 0.9])
@pytest.mark.parametrize("n", [1, 3, 5, 9, 15])
def test_condorcet_binary_is_the_binomial_tail(p: float, n: int) -> None:
    assert condorcet_error(p, n) == pytest.approx(binom.cdf(n // 2, n, p), abs=1e-12)


def test_condorcet_even_n_ties() -> None:
    # n = 4, p = 0.7: a 2-2 tie has probability 6 * 0.49 * 0.09 = 0.2646
    below = binom.cdf(1, 4, 0.7)
    tie = 6 * 0.7**2 * 0.3**2
    assert condorcet_error(0.7, 4) == pytest.approx(below + tie, abs=1e-12)
    assert condorcet_error(0.7, 4, tie="half") == pytest.approx(below + tie / 2, abs=1e-12)


def test_condorcet_three_labels_by_hand() -> None:
    # p = 0.4, n = 3, two wrong labels. 3 or 2 right votes win. 1 right vote: the two wrong
    # votes agree (1/2: lose) or split (1/2: three-way tie). 0 right votes lose.
    p_le_1 = 0.6**3 + 3 * 0.4 * 0.6**2
    assert condorcet_error(0.4, 3, 3) == pytest.approx(p_le_1, abs=1e-12)
    one_right = 3 * 0.4 * 0.6**2
    half = 0.6**3 + one_right * (0.5 + 0.5 * 0.5)
    assert condorcet_error(0.4, 3, 3, tie="half") == pytest.approx(half, abs=1e-12)


def test_condorcet_many_labels_matches_simulation() -> None:
    rng = np.random.default_rng(5)
    p, n, k = 0.4, 5, 4
    right = rng.random((200_000, n)) < p
    votes = np.where(right, 0, rng.integers(1, k, (200_000, n)))
    counts = np.stack([(votes == label).sum(axis=1) for label in range(k)], axis=1)
    top = counts.max(axis=1)
    won = (counts[:, 0] == top) & ((counts == top[:, None]).sum(axis=1) == 1)
    assert condorcet_error(p, n, k) == pytest.approx(1 - won.mean(), abs=0.005)
    assert condorcet_error(p, n, k) < condorcet_error(p, n, 2)  # scattered wrong votes help


def test_condorcet_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        condorcet_error(1.2, 3)
    with pytest.raises(InputError):
        condorcet_error(0.5, 0)
    with pytest.raises(InputError):
        condorcet_error(0.5, 3, 1)
    with pytest.raises(InputError):
        condorcet_error(0.5, 3, tie="coin")


# --------------------------------------------------------------------------- the curve


def _set(rows: dict[str, list[str | None]], model: str = "m") -> Samples:
    return {item: {model: answers} for item, answers in rows.items()}


def test_error_at_one_is_the_mean_single_call_error() -> None:
    rows: dict[str, list[str | None]] = {
        "a": ["A", "A", "A", "A"],
        "b": ["A", "B", "A", "A"],
        "c": ["B", "B", "A", "A"],
        "d": ["B", "B", "B", None],
        "e": [None, "C", "A", "A"],
    }
    gold = dict.fromkeys(rows, "A")
    curve = majority_error_curve(_set(rows), gold, ["m"], [1, 3], draws=30)
    wrong = [0, 1, 2, 4, 2]
    assert curve.point(1) is not None
    assert curve.point(1).error == pytest.approx(np.mean([w / 4 for w in wrong]), abs=1e-12)
    assert curve.single_call_error == pytest.approx(curve.point(1).error, abs=1e-12)
    assert curve.items == 5
    assert curve.k == {"m": 4}


def test_all_answers_make_a_deterministic_vote() -> None:
    rows: dict[str, list[str | None]] = {
        "two-right": ["A", "A", "B"],
        "one-right": ["A", "B", "B"],
        "all-right": ["A", "A", "A"],
        "one-valid": [None, None, "A"],
        "none-valid": [None, None, None],
    }
    gold = dict.fromkeys(rows, "A")
    curve = majority_error_curve(_set(rows), gold, ["m"], [3], draws=10)
    # wrong: one-right (B wins) and none-valid (no vote); one valid vote for A decides
    assert curve.points[0].error == pytest.approx(2 / 5, abs=1e-12)


def test_ties_count_as_errors_or_half() -> None:
    rows: dict[str, list[str | None]] = {"gold-in-tie": ["A", "B"], "gold-out": ["B", "C"]}
    gold = dict.fromkeys(rows, "A")
    as_error = majority_error_curve(_set(rows), gold, ["m"], [2], draws=5)
    as_half = majority_error_curve(_set(rows), gold, ["m"], [2], draws=5, tie="half")
    assert as_error.points[0].error == pytest.approx(1.0)
    assert as_half.points[0].error == pytest.approx((0.5 + 1.0) / 2)


def test_mixed_panel_fills_slots_round_robin() -> None:
    samples: Samples = {
        f"i{i}": {"good": ["A", "A", "A"], "bad": ["B", "B", "B"]} for i in range(4)
    }
    gold = dict.fromkeys(samples, "A")
    curve = majority_error_curve(samples, gold, ["good", "bad"], [1, 2, 3, 4], draws=5)
    errors = [p.error for p in curve.points]
    # good | good+bad (tie) | good+bad+good | 2-2 tie
    assert errors == pytest.approx([0.0, 1.0, 0.0, 1.0])
    assert curve.model_errors == {"good": 0.0, "bad": 1.0}
    assert curve.single_call_error == pytest.approx(0.5)


def _independent(
    rng: np.random.Generator, p: float | np.ndarray, items: int, k: int
) -> tuple[Samples, dict[str, str]]:
    chance = np.broadcast_to(np.asarray(p, dtype=float), (items,))
    samples: Samples = {
        f"i{i}": {"m": ["A" if r < chance[i] else "B" for r in rng.random(k)]} for i in range(items)
    }
    return samples, dict.fromkeys(samples, "A")


def test_independent_errors_follow_condorcet() -> None:
    samples, gold = _independent(np.random.default_rng(3), 0.7, items=400, k=9)
    curve = majority_error_curve(samples, gold, ["m"], [1, 3, 5], draws=100)
    assert curve.rho is not None and abs(curve.rho) < 0.05
    for point in curve.points:
        assert point.ci_low <= point.independent_error <= point.ci_high
    assert curve.point(5) is not None and curve.point(5).error < curve.point(1).error


def test_correlated_errors_gain_less_than_condorcet() -> None:
    # half the items easy (0.95), half hard (0.45): single-call accuracy 0.7 on average,
    # but the errors concentrate on the same items
    rng = np.random.default_rng(11)
    p = np.where(np.arange(300) % 2 == 0, 0.95, 0.45)
    samples, gold = _independent(rng, p, items=300, k=9)
    curve = majority_error_curve(samples, gold, ["m"], [1, 5, 9], draws=100)
    assert curve.rho is not None and curve.rho > 0.2
    five = curve.point(5)
    assert five is not None
    assert five.error > five.independent_error + 0.05
    assert five.ci_low > five.independent_error
    assert five.effective_voters is not None and five.effective_voters < 5


def test_bootstrap_interval_covers_the_true_error_at_about_the_stated_rate() -> None:
    # items right with 0.9 or 0.5 (equally often): error(1) = 0.3,
    # error(3) = (0.028 + 0.5) / 2 = 0.264
    rng = np.random.default_rng(123)
    truth = {1: 0.3, 3: (binom.cdf(1, 3, 0.9) + binom.cdf(1, 3, 0.5)) / 2}
    hits = dict.fromkeys(truth, 0)
    datasets = 200
    for seed in range(datasets):
        p = np.where(rng.random(80) < 0.5, 0.9, 0.5)
        samples, gold = _independent(rng, p, items=80, k=5)
        curve = majority_error_curve(
            samples, gold, ["m"], [1, 3], draws=20, boot=300, confidence=0.9, seed=seed
        )
        for point in curve.points:
            hits[point.n] += point.ci_low <= truth[point.n] <= point.ci_high
    for n in truth:
        assert 0.8 <= hits[n] / datasets <= 0.97, (n, hits[n])


def test_same_seed_same_curve() -> None:
    samples, gold = _independent(np.random.default_rng(1), 0.6, items=50, k=7)
    one = majority_error_curve(samples, gold, ["m"], [1, 3, 5, 7], seed=4)
    two = majority_error_curve(samples, gold, ["m"], [7, 5, 3, 1, 3], seed=4)
    assert one == two
    assert [p.n for p in one.points] == [1, 3, 5, 7]


def test_cost_and_latency_per_item() -> None:
    samples: Samples = {f"i{i}": {"a": ["A"] * 4, "b": ["A"] * 4} for i in range(3)}
    gold = dict.fromkeys(samples, "A")
    priced = majority_error_curve(
        samples,
        gold,
        ["a", "b"],
        [1, 3],
        cost_per_call={"a": 0.01, "b": 0.002},
        latency_ms={"a": 300.0, "b": 900.0},
    )
    assert [p.cost_per_item for p in priced.points] == pytest.approx([0.01, 0.022])
    assert [p.calls_per_item for p in priced.points] == [1, 3]
    assert [p.latency_ms for p in priced.points] == [300.0, 900.0]

    unknown = majority_error_curve(samples, gold, ["a", "b"], [1, 3], cost_per_call={"a": 0.01})
    assert [p.cost_per_item for p in unknown.points] == [0.01, None]
    assert majority_error_curve(samples, gold, ["a"], [3]).points[0].cost_per_item is None

    spread = [100.0, 200.0, 300.0, 400.0, 2000.0]
    observed = majority_error_curve(samples, gold, ["a"], [1, 3], latency_ms={"a": spread})
    one, three = (p.latency_ms for p in observed.points)
    assert one is not None and three is not None and three > one  # slowest of more calls


def test_curve_input_errors() -> None:
    samples, gold = _independent(np.random.default_rng(0), 0.7, items=5, k=3)
    with pytest.raises(InputError, match=r"^K=3 samples per model is fewer than N=5 needs$"):
        majority_error_curve(samples, gold, ["m"], [1, 5])
    with pytest.raises(InputError, match="curve needs gold labels: the set has no gold column"):
        majority_error_curve(samples, {}, ["m"], [1])
    with pytest.raises(InputError, match="curve needs gold labels"):
        majority_error_curve(samples, {"elsewhere": "A"}, ["m"], [1])
    with pytest.raises(InputError, match="positive"):
        majority_error_curve(samples, gold, ["m"], [0, 1])
    with pytest.raises(InputError, match="at least one N"):
        majority_error_curve(samples, gold, ["m"], [])
    with pytest.raises(InputError, match="panel is empty"):
        majority_error_curve(samples, gold, [], [1])
    with pytest.raises(InputError, match="no answers from other"):
        majority_error_curve(samples, gold, ["m", "other"], [1])
    with pytest.raises(InputError, match="tie"):
        majority_error_curve(samples, gold, ["m"], [1], tie="coin")
    with pytest.raises(InputError, match="confidence"):
        majority_error_curve(samples, gold, ["m"], [1], confidence=1.0)
    mixed: Samples = {"x": {"a": ["A"] * 3, "b": ["A"] * 2}}
    majority_error_curve(mixed, {"x": "A"}, ["a", "b"], [5])  # b answers 2 of 5
    with pytest.raises(InputError, match=r"^K=2 samples per model is fewer than N=6 needs \(b "):
        majority_error_curve(mixed, {"x": "A"}, ["a", "b"], [6])


# --------------------------------------------------------------------------- correlation


def test_error_correlation() -> None:
    # every answer of an item is right or every one is wrong: slots err together
    together: Samples = {f"i{i}": {"m": ["A" if i % 3 else "B"] * 4} for i in range(9)}
    gold = dict.fromkeys(together, "A")
    assert error_correlation(together, gold, ["m"]) == pytest.approx(1.0)
    always_right: Samples = {f"i{i}": {"m": ["A"] * 4} for i in range(5)}
    assert error_correlation(always_right, dict.fromkeys(always_right, "A"), ["m"]) is None
    # two models that are wrong on opposite items
    opposite: Samples = {
        f"i{i}": {"a": ["A" if i % 2 else "B"] * 2, "b": ["B" if i % 2 else "A"] * 2}
        for i in range(6)
    }
    rho = error_correlation(opposite, dict.fromkeys(opposite, "A"), ["a", "b"])
    # pairs within a model: +1 (2 pairs); across models: -1 (4 pairs)
    assert rho == pytest.approx((2 * 1 + 4 * -1) / 6)


def test_effective_voters() -> None:
    assert effective_voters(5, 0.0) == 5
    assert effective_voters(5, 1.0) == 1
    assert effective_voters(5, 0.25) == pytest.approx(2.5)
    assert effective_voters(3, -0.25) == pytest.approx(6.0)
    with pytest.raises(InputError):
        effective_voters(5, -0.5)
    with pytest.raises(InputError):
        effective_voters(0, 0.1)
    with pytest.raises(InputError):
        effective_voters(3, 1.5)


# --------------------------------------------------------------------------- recommend


def _curve(errors: dict[int, float], single: float | None = None) -> Curve:
    points = [
        CurvePoint(
            n=n,
            error=e,
            ci_low=e,
            ci_high=e,
            independent_error=e,
            effective_voters=None,
            calls_per_item=n,
            cost_per_item=None,
            latency_ms=None,
        )
        for n, e in errors.items()
    ]
    return Curve(
        panel=["m"],
        items=10,
        k={"m": max(errors)},
        labels=2,
        k_labels=2,
        tie="error",
        confidence=0.95,
        draws=1,
        single_call_error=errors.get(1, single or 0.0),
        model_errors={"m": errors.get(1, single or 0.0)},
        rho=None,
        points=points,
    )


def test_recommend_stops_where_two_more_votes_buy_little() -> None:
    rec = recommend(_curve({1: 0.2, 3: 0.1, 5: 0.08, 7: 0.075, 9: 0.074}))
    # 1 -> 3 removes 50%, 3 -> 5 removes 20%, 5 -> 7 removes 6%: stop at 5
    assert rec.n == 5
    assert not rec.still_improving
    assert rec.removed == pytest.approx(0.6)
    assert rec.halving_check == pytest.approx(0.4)
    assert rec.halves is True
    assert "removes 60% of the one-call error" in rec.reason
    assert recommend(_curve({1: 0.2, 3: 0.1, 5: 0.08, 7: 0.075}), min_gain=0.25).n == 3


def test_recommend_when_still_improving_or_worse() -> None:
    still = recommend(_curve({1: 0.4, 3: 0.3, 5: 0.2}))
    assert still.n == 5 and still.still_improving
    assert still.halving_check == pytest.approx(0.5)
    worse = recommend(_curve({1: 0.3, 3: 0.32, 5: 0.33}))
    assert worse.n == 1 and worse.removed == 0.0 and worse.halves is False
    assert "does not lower the error" in worse.reason
    perfect = recommend(_curve({1: 0.0, 3: 0.0}))
    assert perfect.n == 1 and perfect.removed is None and perfect.halving_check is None
    no_one = recommend(_curve({3: 0.1, 5: 0.05}, single=0.2))
    assert no_one.baseline_error == pytest.approx(0.2)
    assert no_one.halving_check == pytest.approx(0.25)
    with pytest.raises(InputError):
        recommend(_curve({1: 0.2}), min_gain=1.5)


def test_recommend_on_a_measured_curve() -> None:
    samples, gold = _independent(np.random.default_rng(8), 0.8, items=300, k=11)
    curve = majority_error_curve(samples, gold, ["m"], [1, 3, 5, 7, 9, 11], draws=100)
    rec = recommend(curve)
    assert rec.n in (3, 5, 7, 9, 11)
    assert rec.halving_check is not None and rec.halving_check < 0.5  # independent: > halved
    assert rec.removed is not None and rec.removed > 0.4


# --------------------------------------------------------------------------- harm


def test_harmful_items_and_sets() -> None:
    rows: dict[str, list[str | None]] = {
        "easy": ["A", "A", "A", "A"],
        "hard": ["A", "B", "B", "B"],
        "coin": ["A", "A", "B", "B"],
        "lost": [None, "B", "B", "B"],
    }
    gold = dict.fromkeys(rows, "A")
    assert harmful_items(_set(rows), gold, ["m"]) == ["lost", "hard"]
    report = harm_report(_set(rows), gold, ["m"])
    assert report.item_accuracy == {"lost": 0.0, "hard": 0.25}
    assert report.set_accuracy == pytest.approx((1 + 0.25 + 0.5 + 0) / 4)
    assert report.set_harmful is True
    assert report.message is not None and "worse" in report.message

    fine = {k: v for k, v in rows.items() if k != "lost"}
    fine["easy2"] = ["A"] * 4
    report = harm_report(_set(fine), dict.fromkeys(fine, "A"), ["m"])
    assert not report.set_harmful and report.items == ["hard"]
    assert report.message is not None and "1 of 4 items" in report.message


def test_curve_shows_more_votes_hurting_a_harmful_set() -> None:
    samples, gold = _independent(np.random.default_rng(2), 0.35, items=200, k=9)
    curve = majority_error_curve(samples, gold, ["m"], [1, 9], draws=50)
    assert curve.points[1].error > curve.points[0].error
    assert harm_report(samples, gold, ["m"]).set_harmful
    assert math.isclose(curve.single_call_error, curve.points[0].error)
