"""Learned reliability on small cases worked out by hand, and the fit's own consistency."""

from __future__ import annotations

import math
import sys

import pytest

from core.analysis.reliability import (
    calibration_points,
    fit_reliability,
    log_odds_weight,
    plurality,
    votes_from_answers,
    weighted_winner,
    wilson_interval,
)
from core.errors import InputError

ANSWERS = {
    "i1": {"a": "yes", "b": "yes", "c": "yes"},
    "i2": {"a": "no", "b": "no", "c": "yes"},
    "i3": {"a": "no", "b": "yes", "c": "yes"},
    "i4": {"a": "yes", "b": "yes", "c": "yes"},
    "i5": {"a": "no", "b": "no", "c": None},  # c's call failed: not a vote
}
GOLD = {"i1": "yes", "i2": "no", "i3": "no", "i4": "yes", "i5": "no"}


@pytest.mark.parametrize("method", ["dawid-skene", "one-coin"])
def test_every_item_known_gives_the_counted_confusion(method: str) -> None:
    """All labels clamped: the posterior is the gold, the priors its shares, and (full model)
    each confusion matrix is the model's votes counted per true label."""
    fit = fit_reliability(votes_from_answers(ANSWERS), GOLD, method=method)
    assert fit.known == 5 and fit.items == 5 and fit.votes == 14
    assert fit.labels == ["no", "yes"]
    assert fit.winner == GOLD
    assert all(fit.confidence[i] == 1.0 for i in GOLD)
    assert fit.posterior["i3"] == {"no": 1.0, "yes": 0.0}
    assert fit.priors == pytest.approx({"no": 0.6, "yes": 0.4})
    accuracy = {m.model: m.accuracy for m in fit.models}
    assert accuracy == pytest.approx({"a": 1.0, "b": 4 / 5, "c": 2 / 4})
    assert [m.votes for m in fit.models] == [5, 5, 4]
    if method == "dawid-skene":
        b, c = fit.model("b").confusion, fit.model("c").confusion
        assert b["no"] == pytest.approx({"no": 2 / 3, "yes": 1 / 3})
        assert b["yes"] == pytest.approx({"no": 0.0, "yes": 1.0}, abs=1e-9)
        assert c["no"] == pytest.approx({"no": 0.0, "yes": 1.0}, abs=1e-9)
    else:
        c = fit.model("c").confusion  # one coin: the same accuracy whatever the truth
        assert c["no"]["no"] == pytest.approx(c["yes"]["yes"], abs=1e-3)


def test_unknown_items_get_the_bayes_posterior_of_the_fitted_model() -> None:
    """At convergence an item's posterior is prior x the product of each vote's confusion
    entry, normalised: the E-step in closed form, recomputed here from the returned fit."""
    answers = {
        **ANSWERS,
        "u1": {"a": "no", "b": "yes", "c": "yes"},
        "u2": {"a": "yes", "b": "no", "c": "yes"},
        "u3": {"a": "no", "b": "no", "c": "no"},
    }
    fit = fit_reliability(votes_from_answers(answers), GOLD, max_iter=500, tol=1e-12)
    for item in ("u1", "u2", "u3"):
        joint = {}
        for truth in fit.labels:
            p = fit.priors[truth]
            for model, vote in answers[item].items():
                if vote is not None:
                    p *= max(fit.model(model).confusion[truth][vote], 1e-10)
            joint[truth] = p
        total = sum(joint.values())
        expected = {label: p / total for label, p in joint.items()}
        assert fit.posterior[item] == pytest.approx(expected, abs=1e-6)
    # a never errs on gold; b says yes to a no one time in three: u1 goes with a
    assert fit.winner["u1"] == "no" and fit.confidence["u1"] > 0.99


def test_a_model_that_always_says_yes_is_learned_without_gold() -> None:
    answers = {
        f"i{k}": {"good-1": label, "good-2": label, "good-3": label, "yes-man": "yes"}
        for k, label in enumerate(["yes", "no"] * 20)
    }
    fit = fit_reliability(votes_from_answers(answers))
    assert fit.known == 0
    yes_man = fit.model("yes-man")
    assert yes_man.confusion["no"]["yes"] == pytest.approx(1.0, abs=1e-6)
    assert yes_man.confusion["yes"]["yes"] == pytest.approx(1.0, abs=1e-6)
    assert yes_man.accuracy == pytest.approx(0.5, abs=1e-6)
    assert fit.model("good-1").accuracy == pytest.approx(1.0, abs=1e-6)
    assert fit.weights()["yes-man"] == 0.0  # at chance: adds nothing to a weighted vote


def test_a_known_label_overrides_the_votes() -> None:
    answers = {"i1": {"a": "yes", "b": "yes"}, "i2": {"a": "no", "b": "no"}}
    fit = fit_reliability(votes_from_answers(answers), {"i1": "no", "ghost": "no"})
    assert fit.known == 1
    assert fit.posterior["i1"] == {"no": 1.0, "yes": 0.0}


def test_a_known_label_no_model_voted_is_not_clamped() -> None:
    fit = fit_reliability(votes_from_answers({"i1": {"a": "yes"}}), {"i1": "maybe"})
    assert fit.known == 0 and fit.labels == ["yes"]


def test_a_perfectly_split_vote_has_no_winner() -> None:
    fit = fit_reliability(votes_from_answers({"i1": {"a": "x", "b": "y"}}))
    assert fit.winner == {"i1": None}
    assert fit.confidence["i1"] == pytest.approx(0.5)


def test_samples_of_one_model_are_votes_of_one_rater() -> None:
    fit = fit_reliability({"i1": {"a": {"yes": 2, "no": 1}}, "i2": {"a": {"no": 3}}})
    assert [(m.model, m.votes, m.items) for m in fit.models] == [("a", 6, 2)]
    assert fit.independence.voters == 1 and fit.independence.effective == 1.0


def test_copies_of_one_model_are_worth_one_voter() -> None:
    rows = [("yes", "yes"), ("no", "no"), ("yes", "no"), ("no", "no"), ("yes", "yes")]
    answers = {
        f"i{k}": {"a": vote, "b": vote, "c": vote, "d": other}
        for k, (vote, other) in enumerate(rows * 4)
    }
    gold = {f"i{k}": truth for k, (_, truth) in enumerate(rows * 4)}
    fit = fit_reliability(votes_from_answers(answers), gold)
    # a, b and c err on the same items (rho 1 among them), d never errs: no variation, left out
    assert fit.independence.voters == 4
    assert fit.independence.rho == pytest.approx(1.0)
    assert fit.independence.effective == pytest.approx(1.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InputError, match="unknown reliability model 'glad'"):
        fit_reliability(votes_from_answers(ANSWERS), method="glad")
    with pytest.raises(InputError, match="no valid votes"):
        fit_reliability(votes_from_answers({"i1": {"a": None}}))
    with pytest.raises(InputError, match="vote count"):
        fit_reliability({"i1": {"a": {"yes": -1}}})
    with pytest.raises(InputError, match="max_iter"):
        fit_reliability(votes_from_answers(ANSWERS), max_iter=0)


def test_weights_and_plurality_by_hand() -> None:
    assert log_odds_weight(0.75, 2) == pytest.approx(math.log(3))
    assert log_odds_weight(0.5, 3) == pytest.approx(math.log(2))  # above chance, which is 1/3
    assert log_odds_weight(1 / 3, 3) == pytest.approx(0.0)
    assert log_odds_weight(0.2, 2) == 0.0
    assert math.isfinite(log_odds_weight(1.0, 2))
    assert plurality({"x": 2.0, "y": 1.0}) == "x"
    assert plurality({"x": 1.0, "y": 1.0}) is None
    assert plurality({}) is None
    row = {"a": {"x": 1}, "b": {"y": 1}, "c": {"y": 1}}
    assert weighted_winner(row, {"a": 1.0, "b": 1.0, "c": 1.0}) == "y"
    assert weighted_winner(row, {"a": 3.0, "b": 1.0, "c": 1.0}) == "x"
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_calibration_points_pair_confidence_with_right() -> None:
    fit = fit_reliability(votes_from_answers(ANSWERS))
    points = calibration_points(fit, {"i1": "yes", "i3": "no", "missing": "no"})
    assert [right for _, right in points] == [True, fit.winner["i3"] == "no"]
    assert all(0.0 <= confidence <= 1.0 for confidence, _ in points)


def test_a_fit_downloads_nothing_and_leaves_transformers_alone() -> None:
    fit_reliability(votes_from_answers(ANSWERS))
    assert "transformers" not in sys.modules
    assert "crowdkit.datasets" not in sys.modules
