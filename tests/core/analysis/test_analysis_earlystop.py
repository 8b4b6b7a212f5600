"""Early stop replayed on stored answers: savings, and decisions that stay the same."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta

from core.analysis.curves import Samples
from core.analysis.earlystop import compare_early_stop, leader_posterior
from core.analysis.reliability import ReliabilityFit, fit_reliability
from core.errors import InputError
from core.sim.scenarios import SCENARIOS


@pytest.mark.parametrize("a", range(0, 8))
@pytest.mark.parametrize("b", range(0, 8))
def test_leader_posterior_is_the_beta_tail(a: int, b: int) -> None:
    assert leader_posterior(a, b) == pytest.approx(beta.sf(0.5, 1 + a, 1 + b), abs=1e-12)


def test_leader_posterior_by_hand() -> None:
    assert leader_posterior(0, 0) == 0.5
    assert leader_posterior(3, 0) == pytest.approx(15 / 16)
    assert leader_posterior(4, 0) == pytest.approx(31 / 32)
    assert leader_posterior(2, 2) == pytest.approx(0.5)
    with pytest.raises(InputError):
        leader_posterior(-1, 0)


def test_unanimous_items_stop_as_early_as_each_rule_allows() -> None:
    samples: Samples = {f"i{i}": {"m": ["A"] * 5} for i in range(4)}
    gold = dict.fromkeys(samples, "A")
    report = compare_early_stop(samples, gold, ["m"], 5, window=3, draws=5)
    calls = {r.rule: r.calls_per_item for r in report.rules}
    # decided: 3 of 5 cannot be caught; beta: 4-0 is the first count past 0.95; window: 3
    assert calls == {"fixed": 5, "decided": 3, "beta": 4, "window": 3}
    assert all(r.accuracy == 1.0 for r in report.rules)
    assert report.rule("decided").saving == pytest.approx(0.4)
    assert report.best in ("decided", "window")


def test_window_longer_than_max_n_is_fixed_n() -> None:
    samples: Samples = {"x": {"m": ["A", "B", "A"]}, "y": {"m": ["B", "B", "A"]}}
    gold = {"x": "A", "y": "A"}
    report = compare_early_stop(samples, gold, ["m"], 3, window=4, draws=10)
    assert report.rule("window").calls_per_item == 3
    assert report.rule("window").accuracy == report.rule("fixed").accuracy == 0.5


def _noisy(seed: int, items: int = 200, k: int = 9) -> tuple[Samples, dict[str, str]]:
    rng = np.random.default_rng(seed)
    p = rng.choice([0.95, 0.8, 0.6, 0.4], size=items)
    labels = np.array(["A", "B", "C"])
    samples: Samples = {}
    for i in range(items):
        right = rng.random(k) < p[i]
        wrong = labels[rng.integers(1, 3, k)]
        drawn = ["A" if r else str(w) for r, w in zip(right, wrong, strict=True)]
        samples[f"i{i}"] = {"m": drawn}
    return samples, dict.fromkeys(samples, "A")


def test_stop_when_decided_saves_calls_at_the_same_accuracy() -> None:
    samples, gold = _noisy(4)
    report = compare_early_stop(samples, gold, ["m"], 9, draws=40)
    decided, fixed = report.rule("decided"), report.rule("fixed")
    assert decided.accuracy == fixed.accuracy
    assert decided.accuracy_delta == 0.0 and decided.equal_or_better
    assert decided.calls_per_item < fixed.calls_per_item
    assert decided.saving > 0.2
    for rule in report.rules:
        assert 1 <= rule.calls_per_item <= 9
        assert rule.saving == pytest.approx(1 - rule.calls_per_item / 9)
        assert rule.accuracy_delta == pytest.approx(rule.accuracy - fixed.accuracy)
    assert report.rule("beta").calls_per_item < fixed.calls_per_item
    assert report.items == 200 and report.max_n == 9


@settings(max_examples=150, deadline=None)
@given(
    answers=st.lists(st.sampled_from(["A", "B", "C", None]), min_size=7, max_size=7),
    max_n=st.integers(min_value=1, max_value=7),
    seed=st.integers(min_value=0, max_value=10_000),
    tie=st.sampled_from(["error", "half"]),
)
def test_stop_when_decided_never_changes_the_decision(
    answers: list[str | None], max_n: int, seed: int, tie: str
) -> None:
    # one item, one draw: the accuracy is that one vote's score, so equal accuracy means
    # the early decision scored exactly as the full vote did
    report = compare_early_stop(
        {"x": {"m": answers}}, {"x": "A"}, ["m"], max_n, draws=1, seed=seed, tie=tie
    )
    assert report.rule("decided").accuracy == report.rule("fixed").accuracy
    assert report.rule("decided").calls_per_item <= max_n


def test_mixed_panel_and_same_seed() -> None:
    samples: Samples = {f"i{i}": {"a": ["A", "A", "B"], "b": ["A", "C", "C"]} for i in range(10)}
    gold = dict.fromkeys(samples, "A")
    one = compare_early_stop(samples, gold, ["a", "b"], 5, draws=20, seed=3)
    two = compare_early_stop(samples, gold, ["a", "b"], 5, draws=20, seed=3)
    assert one == two
    assert one.panel == ["a", "b"]


def test_early_stop_input_errors() -> None:
    samples: Samples = {"x": {"m": ["A", "A", "B"]}}
    gold = {"x": "A"}
    with pytest.raises(InputError, match="K=3 samples per model is fewer than N=5 needs"):
        compare_early_stop(samples, gold, ["m"], 5)
    with pytest.raises(InputError, match="threshold"):
        compare_early_stop(samples, gold, ["m"], 3, threshold=0.4)
    with pytest.raises(InputError, match="window"):
        compare_early_stop(samples, gold, ["m"], 3, window=0)
    with pytest.raises(InputError, match="positive"):
        compare_early_stop(samples, gold, ["m"], 0)
    with pytest.raises(InputError, match="gold"):
        compare_early_stop(samples, {}, ["m"], 3)


# -- the Dawid–Skene rule ---------------------------------------------------------------------


def _scenario(
    name: str, items: int = 600
) -> tuple[Samples, dict[str, str], list[str], ReliabilityFit]:
    """A scenario's answers as samples, its gold, its panel and a no-gold fit of its answers."""
    scenario = SCENARIOS[name]
    samples: Samples = {}
    gold: dict[str, str] = {}
    for text, replies in scenario.answers(items, seed=0):
        samples[text] = {m.name: [r.answer] for m, r in zip(scenario.panel, replies, strict=True)}
        gold[text] = replies[0].gold or ""
    votes = {
        item: {m: {a[0]: 1} for m, a in row.items() if a[0] is not None}
        for item, row in samples.items()
    }
    return samples, gold, [m.name for m in scenario.panel], fit_reliability(votes)


def test_the_dawid_skene_rule_saves_calls_and_is_more_accurate_on_an_uneven_panel() -> None:
    samples, gold, panel, fit = _scenario("uneven")
    report = compare_early_stop(samples, gold, panel, 5, draws=10, reliability=fit)
    learned, fixed = report.rule("dawid-skene"), report.rule("fixed")
    assert learned.equal_or_better and learned.accuracy > fixed.accuracy + 0.01
    assert learned.calls_per_item < report.rule("decided").calls_per_item
    assert report.best == "dawid-skene"


def test_the_dawid_skene_rule_is_no_more_accurate_on_a_homogeneous_panel() -> None:
    samples, gold, panel, fit = _scenario("homogeneous")
    report = compare_early_stop(samples, gold, panel, 5, draws=10, reliability=fit)
    learned, fixed = report.rule("dawid-skene"), report.rule("fixed")
    assert abs(learned.accuracy - fixed.accuracy) <= 0.01
    assert learned.calls_per_item < fixed.calls_per_item


def test_without_a_fit_there_is_no_dawid_skene_rule() -> None:
    samples, gold, panel, _ = _scenario("homogeneous", items=50)
    report = compare_early_stop(samples, gold, panel, 5, draws=5)
    assert [r.rule for r in report.rules] == ["fixed", "decided", "beta", "window"]


def test_a_trusted_model_stops_at_once_and_an_unknown_one_weighs_nothing() -> None:
    """A fit that trusts model m fully: one vote of m is enough, and it is followed even
    against the plurality. A panel model the fit never saw moves no posterior."""
    votes = {f"i{i}": {"m": {"A" if i % 2 else "B": 1}} for i in range(40)}
    fit = fit_reliability(votes, {item: next(iter(row["m"])) for item, row in votes.items()})
    samples: Samples = {"x": {"m": ["A", "A", "A"]}, "y": {"m": ["B", "B", "B"]}}
    gold = {"x": "A", "y": "B"}
    trusted = compare_early_stop(samples, gold, ["m"], 3, draws=4, reliability=fit)
    assert trusted.rule("dawid-skene").calls_per_item == 1
    assert trusted.rule("dawid-skene").accuracy == 1.0
    unseen: Samples = {"x": {"u": ["A", "A", "A"]}, "y": {"u": ["B", "B", "B"]}}
    blind = compare_early_stop(unseen, gold, ["u"], 3, draws=4, reliability=fit)
    assert blind.rule("dawid-skene").calls_per_item == 3  # never confident: runs to N
