"""Disagreement: how split a vote is, which models vote alike, and who is right.

Per item: vote entropy and margin find the hard cases. Per panel: raw agreement and Cohen's
kappa per model pair, Fleiss' kappa over many raters, each model's accuracy against gold or
against reviewer decisions, and how many independent voters the panel is really worth.
Kappa corrects agreement for chance: two models that both say "no" to 90% of items agree
often without telling each other anything. Undefined statistics are ``None``, never NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from core.analysis.curves import effective_voters, mean_phi
from core.errors import InputError

Answers = Mapping[str, Mapping[str, str | None]]  # item -> model -> answer (None: no vote)


class ItemDisagreement(BaseModel):
    """How split one item's vote is."""

    item_id: str
    entropy: float  # bits
    margin: float  # leader's share minus runner-up's
    votes: dict[str, int]
    leader: str | None  # None when nobody voted or the top is tied


class PairAgreement(BaseModel):
    """Two models on the items both answered."""

    model_a: str
    model_b: str
    items: int
    agreement: float | None  # share of items with the same answer
    kappa: float | None  # Cohen's kappa; None without items or without variation


class VoterIndependence(BaseModel):
    """What a panel's error correlation does to its worth as voters."""

    voters: int
    rho: float | None  # mean pairwise correlation of the models' error indicators
    effective: float | None  # n / (1 + (n - 1) max(rho, 0))


def _check_counts(counts: Mapping[str, int]) -> list[int]:
    values = list(counts.values())
    if any(v < 0 for v in values):
        raise InputError("vote counts cannot be negative")
    return values


def vote_entropy(counts: Mapping[str, int]) -> float:
    """Shannon entropy of the vote shares in bits: 0 when unanimous, 1 for an even 2-way split."""
    values = _check_counts(counts)
    total = sum(values)
    if total == 0:
        return 0.0
    entropy = -sum((v / total) * math.log2(v / total) for v in values if v > 0)
    return max(0.0, entropy)


def margin(counts: Mapping[str, int]) -> float:
    """The leader's share of the votes minus the runner-up's: 1 when unanimous, 0 on a tie."""
    values = sorted(_check_counts(counts), reverse=True)
    total = sum(values)
    if total == 0:
        return 0.0
    runner_up = values[1] if len(values) > 1 else 0
    return (values[0] - runner_up) / total


def _leader(counts: Mapping[str, int]) -> str | None:
    ranked = Counter({k: v for k, v in counts.items() if v > 0}).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def hardest_items(
    per_item_counts: Mapping[str, Mapping[str, int]], top: int = 20
) -> list[ItemDisagreement]:
    """The ``top`` most split items: highest entropy first, then smallest margin, then id."""
    if top < 0:
        raise InputError(f"top cannot be negative, got {top}")
    rows = [
        ItemDisagreement(
            item_id=item,
            entropy=vote_entropy(counts),
            margin=margin(counts),
            votes=dict(counts),
            leader=_leader(counts),
        )
        for item, counts in per_item_counts.items()
    ]
    rows.sort(key=lambda r: (-r.entropy, r.margin, r.item_id))
    return rows[:top]


def cohens_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa between two raters' labels on the same items.

    ``(p_o - p_e) / (1 - p_e)``: observed agreement against the agreement the raters' own
    label frequencies give by chance. ``None`` when chance agreement is already 1 (both
    raters give one and the same label to every item: kappa is undefined).
    """
    if len(a) != len(b):
        raise InputError(f"kappa needs two ratings per item: got {len(a)} and {len(b)}")
    if not a:
        raise InputError("kappa needs at least one item")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    freq_a, freq_b = Counter(a), Counter(b)
    chance = sum(freq_a[label] * freq_b[label] for label in freq_a) / (n * n)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def fleiss_kappa(table: Sequence[Mapping[str, int]]) -> float | None:
    """Fleiss' kappa: agreement of many raters, each item rated by the same number of raters.

    Each row is one item's count of raters per category. ``None`` when every rating falls
    in one category (chance agreement 1: undefined).
    """
    if not table:
        raise InputError("Fleiss' kappa needs at least one item")
    categories = sorted({c for row in table for c in row})
    matrix = np.array([[row.get(c, 0) for c in categories] for row in table], dtype=np.float64)
    if (matrix < 0).any():
        raise InputError("rater counts cannot be negative")
    raters = matrix.sum(axis=1)
    if not np.all(raters == raters[0]):
        raise InputError("Fleiss' kappa needs the same number of raters on every item")
    n = float(raters[0])
    if n < 2:
        raise InputError("Fleiss' kappa needs at least two raters per item")
    per_item = ((matrix * (matrix - 1.0)).sum(axis=1)) / (n * (n - 1.0))
    observed = float(per_item.mean())
    shares = matrix.sum(axis=0) / matrix.sum()
    chance = float((shares**2).sum())
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def _models(answers: Answers) -> list[str]:
    return sorted({m for row in answers.values() for m in row})


def pairwise_agreement(answers: Answers) -> dict[tuple[str, str], PairAgreement]:
    """Raw agreement and Cohen's kappa for every pair of models (keys sorted by name).

    Only items where both models gave a valid answer count.
    """
    result: dict[tuple[str, str], PairAgreement] = {}
    for first, second in combinations(_models(answers), 2):
        left: list[str] = []
        right: list[str] = []
        for row in answers.values():
            x, y = row.get(first), row.get(second)
            if x is not None and y is not None:
                left.append(x)
                right.append(y)
        if left:
            agreement: float | None = sum(x == y for x, y in zip(left, right, strict=True)) / len(
                left
            )
            kappa = cohens_kappa(left, right)
        else:
            agreement, kappa = None, None
        result[(first, second)] = PairAgreement(
            model_a=first, model_b=second, items=len(left), agreement=agreement, kappa=kappa
        )
    return result


def model_accuracy(answers: Answers, reference: Mapping[str, str]) -> dict[str, float]:
    """Each model's share of right answers on the items the reference decides.

    The reference is gold labels or reviewers' decisions. A ``None`` answer (an invalid or
    failed call) counts as wrong; an item a model was not asked does not count for it, and
    models never asked a referenced item are left out.
    """
    right: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for item, row in answers.items():
        expected = reference.get(item)
        if not expected:
            continue
        for model, answer in row.items():
            seen[model] += 1
            right[model] += answer == expected
    return {model: right[model] / seen[model] for model in sorted(seen)}


def effective_independent_voters(
    answers: Answers, reference: Mapping[str, str]
) -> VoterIndependence:
    """How many independent voters the panel's models are worth on the referenced items.

    The correlation is the mean pairwise phi of the models' error indicators over items
    every model answered (``None`` counts as an error); a negative correlation is read as
    zero, so the panel is never credited with more voters than it has.
    """
    models = _models(answers)
    rows = [
        [answers[item][m] != expected for m in models]
        for item, expected in reference.items()
        if expected and item in answers and all(m in answers[item] for m in models)
    ]
    return independence_of(np.array(rows, dtype=bool), len(models))


def independence_of(errors: npt.ArrayLike, voters: int) -> VoterIndependence:
    """Kish's design effect of ``voters`` whose errors (items x voters, 0/1 or shares) are
    given: a negative mean correlation reads as zero, never crediting more voters than there
    are."""
    matrix = np.asarray(errors, dtype=np.float64)
    rho = mean_phi(matrix) if matrix.size and voters > 1 else None
    effective: float | None = None
    if voters == 1:
        effective = 1.0
    elif rho is not None:
        effective = effective_voters(voters, max(rho, 0.0))
    return VoterIndependence(voters=voters, rho=rho, effective=effective)
