"""The correlation model does what the handbook reports: on the bundled regression set, the
default panel's majority-of-5 makes roughly half the errors of a single call, where independent
errors at the same per-call accuracy would remove far more of them.

Definitions (the figures are pooled over five seeds, each a full pass over the set):

- a call is right when it returns a vote equal to the gold; failed calls and malformed replies
  are not right (so the single-call error is honest about flaky models);
- single-call error: the share of calls that are not right, averaged over the panel's models
  (every model answers every item once);
- majority-of-5: the plurality of the votes the five calls returned; a tie, or no vote at all,
  counts as an error (no tie-break is applied here).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from core.datasets import LabelledSet, load_set
from core.sim.answers import simulate
from core.sim.models import DEFAULT_PANEL, SIM_MODELS

SEEDS = range(5)


@dataclass(frozen=True)
class Errors:
    single: float
    majority: float

    @property
    def ratio(self) -> float:
        return self.majority / self.single


def measure(labelled: LabelledSet, panel: list[str], *, independent: bool = False) -> Errors:
    """Single-call and majority-of-len(panel) error; a repeated model draws new samples."""
    calls = wrong_calls = runs = wrong_runs = 0
    for seed in SEEDS:
        for item in labelled.items:
            votes: list[str] = []
            seen: Counter[str] = Counter()
            for name in panel:
                sample = seen[name]
                seen[name] += 1
                reply = simulate(
                    SIM_MODELS[name], item.text, labelled.labels, {}, sample, seed, independent
                )
                calls += 1
                wrong_calls += reply.correct is not True
                if reply.answer is not None:
                    votes.append(reply.answer)
            ranked = Counter(votes).most_common(2)
            decided = bool(ranked) and (len(ranked) == 1 or ranked[0][1] > ranked[1][1])
            runs += 1
            wrong_runs += not (decided and ranked[0][0] == item.gold)
    return Errors(single=wrong_calls / calls, majority=wrong_runs / runs)


@pytest.fixture(scope="module")
def regression() -> LabelledSet:
    labelled = load_set("regression")
    assert len(labelled.items) >= 300
    return labelled


def test_majority_of_five_roughly_halves_the_error(regression: LabelledSet) -> None:
    correlated = measure(regression, DEFAULT_PANEL)
    independent = measure(regression, DEFAULT_PANEL, independent=True)
    print(
        f"\ncorrelated: single {correlated.single:.3f} majority {correlated.majority:.3f} "
        f"ratio {correlated.ratio:.2f}\nindependent: single {independent.single:.3f} "
        f"majority {independent.majority:.3f} ratio {independent.ratio:.2f}"
    )
    assert 0.05 < correlated.single < 0.25  # a realistic single-call error to start from
    assert 0.30 <= correlated.ratio <= 0.70
    # Same per-call accuracy, no shared components: the Condorcet gain.
    assert independent.single == pytest.approx(correlated.single, abs=0.015)
    assert independent.ratio < 0.3
    assert independent.ratio < correlated.ratio / 2


@pytest.mark.parametrize("model", ["sim-strong", "sim-mid", "sim-fast"])
def test_a_same_model_panel_errs_together_more_than_the_mixed_panel(
    regression: LabelledSet, model: str
) -> None:
    mixed = measure(regression, DEFAULT_PANEL)
    same = measure(regression, [model] * 5)
    print(
        f"\n5 x {model}: single {same.single:.3f} majority {same.majority:.3f} "
        f"ratio {same.ratio:.2f}"
    )
    assert same.ratio > mixed.ratio + 0.1
