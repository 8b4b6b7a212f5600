"""The handbook's check as a verdict: error(5) / error(1) with a paired bootstrap interval, and
holds / does not hold / cannot tell from where that interval lies against "roughly half"."""

from __future__ import annotations

import numpy as np

from core.analysis.curves import (
    ROUGHLY_HALF,
    halving_verdict,
    majority_error_curve,
    recommend,
)
from core.experiments.curve import halving_verdict_line, why_not_five
from tests.core.analysis.test_analysis_curves import _independent


def test_the_verdict_follows_where_the_interval_lies() -> None:
    assert halving_verdict((0.2, ROUGHLY_HALF)) == "holds"
    assert halving_verdict((ROUGHLY_HALF + 0.01, 0.9)) == "does not hold"
    assert halving_verdict((0.4, 0.8)) == "cannot tell"
    assert halving_verdict(None) is None


def test_many_independent_voters_halve_the_error() -> None:
    samples, gold = _independent(np.random.default_rng(3), 0.8, items=600, k=5)
    rec = recommend(majority_error_curve(samples, gold, ["m"], [1, 3, 5], draws=100))
    assert rec.halving_ci is not None and rec.halving_check is not None
    low, high = rec.halving_ci
    assert low <= rec.halving_check <= high
    assert rec.halving_verdict == "holds"
    line = halving_verdict_line(rec)
    assert line is not None and line.startswith("The handbook's check HOLDS on your data")


def test_a_few_items_cannot_tell() -> None:
    samples, gold = _independent(np.random.default_rng(5), 0.75, items=12, k=5)
    rec = recommend(majority_error_curve(samples, gold, ["m"], [1, 3, 5], draws=50))
    assert rec.halving_verdict == "cannot tell"
    assert "CANNOT TELL with this many items" in (halving_verdict_line(rec) or "")


def test_perfectly_correlated_voters_do_not_halve_it() -> None:
    rng = np.random.default_rng(7)
    # every sample of an item says the same: five votes are one vote said five times
    samples = {f"i{i}": {"m": ["A" if rng.random() < 0.7 else "B"] * 5} for i in range(400)}
    gold = dict.fromkeys(samples, "A")
    curve = majority_error_curve(samples, gold, ["m"], [1, 3, 5], draws=50)
    rec = recommend(curve)
    assert rec.halving_verdict == "does not hold"
    assert rec.n != 5 and (why_not_five(rec, curve) or "").startswith(f"Why {rec.n} and not")


def test_without_n_one_and_five_there_is_no_verdict() -> None:
    samples, gold = _independent(np.random.default_rng(3), 0.8, items=50, k=5)
    rec = recommend(majority_error_curve(samples, gold, ["m"], [1, 3], draws=20))
    assert rec.halving_verdict is None and halving_verdict_line(rec) is None
