"""Disagreement statistics against textbook examples and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.analysis.agreement import (
    cohens_kappa,
    effective_independent_voters,
    fleiss_kappa,
    hardest_items,
    margin,
    model_accuracy,
    pairwise_agreement,
    vote_entropy,
)
from core.errors import InputError


def test_vote_entropy_in_bits() -> None:
    assert vote_entropy({"A": 5}) == 0.0
    assert vote_entropy({"A": 2, "B": 2}) == pytest.approx(1.0)
    assert vote_entropy({"A": 1, "B": 1, "C": 1, "D": 1}) == pytest.approx(2.0)
    assert vote_entropy({"A": 3, "B": 1}) == pytest.approx(
        -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    )
    assert vote_entropy({"A": 3, "B": 0}) == 0.0
    assert vote_entropy({}) == 0.0
    with pytest.raises(InputError):
        vote_entropy({"A": -1})


def test_margin() -> None:
    assert margin({"A": 3, "B": 1}) == pytest.approx(0.5)
    assert margin({"A": 5}) == 1.0
    assert margin({"A": 2, "B": 2, "C": 1}) == 0.0
    assert margin({"A": 2, "B": 1, "C": 1, "D": 1}) == pytest.approx(0.2)
    assert margin({}) == 0.0


def test_hardest_items_order() -> None:
    counts = {
        "calm": {"A": 5},
        "split": {"A": 2, "B": 2, "C": 1},
        "even": {"A": 1, "B": 1, "C": 1, "D": 1, "E": 1},
        "lean": {"A": 3, "B": 2},
        "lean2": {"B": 3, "A": 2},
    }
    rows = hardest_items(counts, top=4)
    assert [r.item_id for r in rows] == ["even", "split", "lean", "lean2"]
    assert rows[0].leader is None and rows[1].leader is None
    assert rows[2].leader == "A" and rows[3].leader == "B"
    assert rows[2].votes == {"A": 3, "B": 2}
    assert hardest_items(counts, top=0) == []


def test_cohens_kappa_textbook_example() -> None:
    # Wikipedia, "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)


def test_cohens_kappa_edges() -> None:
    assert cohens_kappa(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    # systematic disagreement on two balanced labels: kappa -1
    assert cohens_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert cohens_kappa(["a", "a"], ["a", "a"]) is None
    with pytest.raises(InputError):
        cohens_kappa(["a"], ["a", "b"])
    with pytest.raises(InputError):
        cohens_kappa([], [])


def _fleiss_table() -> list[dict[str, int]]:
    # Wikipedia, "Fleiss' kappa": 10 subjects, 14 raters, 5 categories
    rows = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    return [dict(zip("12345", row, strict=True)) for row in rows]


def test_fleiss_kappa_textbook_example() -> None:
    assert fleiss_kappa(_fleiss_table()) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_edges() -> None:
    assert fleiss_kappa([{"a": 3}, {"b": 3}]) == pytest.approx(1.0)
    assert fleiss_kappa([{"a": 3}, {"a": 3}]) is None
    with pytest.raises(InputError, match="same number of raters"):
        fleiss_kappa([{"a": 3}, {"a": 2}])
    with pytest.raises(InputError, match="two raters"):
        fleiss_kappa([{"a": 1}, {"b": 1}])
    with pytest.raises(InputError):
        fleiss_kappa([])


def test_fleiss_equals_cohen_like_agreement_for_identical_raters() -> None:
    table = [{"yes": 4}, {"no": 4}, {"yes": 4}]
    assert fleiss_kappa(table) == pytest.approx(1.0)


def test_pairwise_agreement() -> None:
    answers: dict[str, dict[str, str | None]] = {
        "1": {"x": "A", "y": "A", "z": "B"},
        "2": {"x": "B", "y": "B", "z": "B"},
        "3": {"x": "A", "y": "B", "z": None},
        "4": {"x": "B", "y": "B"},
    }
    pairs = pairwise_agreement(answers)
    assert set(pairs) == {("x", "y"), ("x", "z"), ("y", "z")}
    xy = pairs[("x", "y")]
    assert xy.items == 4 and xy.agreement == pytest.approx(0.75)
    assert xy.kappa == pytest.approx(cohens_kappa(["A", "B", "A", "B"], ["A", "B", "B", "B"]))
    xz = pairs[("x", "z")]
    assert xz.items == 2 and xz.agreement == pytest.approx(0.5)
    assert xz.kappa == pytest.approx(0.0)  # z always says B: it carries no information
    lonely = pairwise_agreement({"1": {"p": "A", "q": None}})
    assert lonely[("p", "q")].items == 0 and lonely[("p", "q")].agreement is None


def test_model_accuracy_against_gold_or_reviewers() -> None:
    answers: dict[str, dict[str, str | None]] = {
        "1": {"x": "A", "y": "B"},
        "2": {"x": None, "y": "B"},
        "3": {"x": "A"},
        "4": {"y": "A"},
    }
    gold = {"1": "A", "2": "B", "3": "A", "9": "A"}
    assert model_accuracy(answers, gold) == {"x": pytest.approx(2 / 3), "y": 0.5}
    reviewed = {"4": "A"}
    assert model_accuracy(answers, reviewed) == {"y": 1.0}


def test_effective_independent_voters() -> None:
    clones = {f"{i}": {m: ("A" if i % 3 else "B") for m in "xyz"} for i in range(12)}
    gold = dict.fromkeys(clones, "A")
    same = effective_independent_voters(clones, gold)
    assert same.voters == 3 and same.rho == pytest.approx(1.0)
    assert same.effective == pytest.approx(1.0)

    rng = np.random.default_rng(9)
    apart = {f"{i}": {m: ("A" if rng.random() < 0.7 else "B") for m in "xyz"} for i in range(2000)}
    free = effective_independent_voters(apart, dict.fromkeys(apart, "A"))
    assert free.rho is not None and abs(free.rho) < 0.06
    assert free.effective is not None and free.effective > 2.6

    single = effective_independent_voters({"1": {"x": "A"}}, {"1": "A"})
    assert single.voters == 1 and single.effective == 1.0
    perfect = effective_independent_voters({"1": {"x": "A", "y": "A"}}, {"1": "A"})
    assert perfect.rho is None and perfect.effective is None
