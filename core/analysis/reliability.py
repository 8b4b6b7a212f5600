"""Learned reliability: how far to trust each model, from the panel's own stored answers.

Plain majority counts every vote the same, so a panel of correlated or uneven models is worth
less than its size and cannot tell. Dawid and Skene (1979) learn, from the answers alone (no
gold needed), each model's confusion matrix: the chance it votes label ``v`` when the truth is
``t``. Expectation-maximisation alternates a posterior over every item's true label with the
confusion matrices that posterior implies. The one-coin form (Zhang et al., 2016) keeps a single
accuracy per model: fewer parameters, steadier on small batches. Both fits come from crowd-kit.

Conventions:

- Votes are a table ``item -> model -> vote -> count``: every valid vote of a model on an item
  (samples of one model count as several votes of one rater). Invalid and failed calls are not
  votes and are left out; an item without any vote is not fitted.
- Known labels (gold, reviewers' resolutions) are clamped: the item's posterior is that label,
  and the confusion matrices learn from it. A known label no model ever voted is not clamped
  (the fit has no such label); when scoring against gold, clamp only the reviews, or the
  score would read its own answer key.
- A model's estimated accuracy is the expected share of its votes that are right under the
  fitted posterior; its weight for a weighted vote is the one-coin log-odds
  ``log((K - 1) a / (1 - a))``, the weight under which a weighted majority is the one-coin
  posterior's decision.
- The confidence of an item is its winner's posterior probability. Two labels with the same
  posterior have no winner (``None``): a fit never breaks a tie by column order.
- The effective number of voters is Kish's design effect ``n / (1 + (n - 1) rho)`` with rho the
  mean pairwise correlation of the models' error shares on the items every model voted,
  errors counted against the known label where there is one and the fitted winner elsewhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from core.analysis.agreement import VoterIndependence, independence_of
from core.errors import InputError

VoteTable = Mapping[str, Mapping[str, Mapping[str, int]]]  # item -> model -> vote -> count
Method = Literal["dawid-skene", "one-coin"]
METHODS: tuple[Method, ...] = ("dawid-skene", "one-coin")

TIE_TOLERANCE = 1e-9
"""Posteriors closer than this are equal: the item has no winner."""

_MAX_WEIGHT_ACCURACY = 1.0 - 1e-6  # keeps a perfect model's log-odds weight finite


class ModelReliability(BaseModel):
    """One model as the fit sees it."""

    model: str
    votes: int  # valid votes fitted
    items: int  # items it voted on
    accuracy: float  # expected share of its votes that are right
    confusion: dict[str, dict[str, float]]  # true label -> voted label -> probability


class ReliabilityFit(BaseModel):
    """Dawid–Skene (or one-coin) on a table of votes: who to trust, and what each item is."""

    method: Method
    labels: list[str]
    items: int
    votes: int
    known: int  # items whose label was clamped
    iterations: int
    priors: dict[str, float]  # label -> share of items
    models: list[ModelReliability]
    posterior: dict[str, dict[str, float]]  # item -> label -> probability
    winner: dict[str, str | None]  # item -> label with the highest posterior (None: tied)
    confidence: dict[str, float]  # item -> the winner's posterior
    independence: VoterIndependence

    def model(self, name: str) -> ModelReliability:
        """The fitted reliability of one model."""
        for m in self.models:
            if m.model == name:
                return m
        raise InputError(f"model {name!r} has no votes in this fit")

    def weights(self) -> dict[str, float]:
        """Per model the one-coin log-odds weight of its estimated accuracy (0 at chance)."""
        return {m.model: log_odds_weight(m.accuracy, len(self.labels)) for m in self.models}


def log_odds_weight(accuracy: float, labels: int) -> float:
    """``log((K - 1) a / (1 - a))``, floored at 0: a model at or below chance adds nothing."""
    if not 0.0 <= accuracy <= 1.0:
        raise InputError(f"an accuracy must be between 0 and 1, got {accuracy}")
    a = min(accuracy, _MAX_WEIGHT_ACCURACY)
    if a <= 0.0:
        return 0.0
    return max(0.0, math.log(max(labels - 1, 1) * a / (1.0 - a)))


def votes_from_answers(answers: Mapping[str, Mapping[str, str | None]]) -> dict[str, Any]:
    """``item -> model -> vote`` (``None``: no valid vote) as a vote table."""
    return {
        item: {model: {vote: 1} for model, vote in row.items() if vote is not None}
        for item, row in answers.items()
    }


def _rows(votes: VoteTable) -> tuple[list[str], list[str], list[str]]:
    items: list[str] = []
    models: list[str] = []
    labels: list[str] = []
    for item, row in votes.items():
        for model, counts in row.items():
            for label, count in counts.items():
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise InputError(f"a vote count is a whole number >= 0, got {count!r}")
                items.extend([str(item)] * count)
                models.extend([str(model)] * count)
                labels.extend([str(label)] * count)
    return items, models, labels


def _crowdkit_fit(
    frame: Any, clamp: Mapping[str, str], method: Method, max_iter: int, tol: float
) -> Any:
    """The crowd-kit model fitted on ``frame`` (columns task, worker, label).

    Imported here: crowd-kit pulls scikit-learn and nltk, seconds of start-up that a CLI
    command without a fit should not pay.
    """
    import pandas as pd
    from crowdkit.aggregation import DawidSkene, OneCoinDawidSkene

    known = pd.Series(dict(clamp), dtype=object)
    with warnings.catch_warnings():
        # crowd-kit 1.4 still passes pandas' deprecated inplace= and copy= keywords
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if method == "dawid-skene":
            return DawidSkene(n_iter=max_iter, tol=tol).fit(frame, known if clamp else None)

        class ClampedOneCoin(OneCoinDawidSkene):  # type: ignore[misc]
            """crowd-kit's one-coin fit takes no known labels; clamp them after each E-step."""

            def _e_step(self, data: Any, priors: Any, errors: Any) -> Any:  # type: ignore[override]
                probas = OneCoinDawidSkene._e_step(data, priors, errors)
                return self._correct_probas_with_golden(probas, known) if clamp else probas

        return ClampedOneCoin(n_iter=max_iter, tol=tol).fit(frame)


def effective_voters_of(
    votes: VoteTable, models: Sequence[str], reference: Mapping[str, str | None]
) -> VoterIndependence:
    """Kish's design effect from the mean correlation of the models' error shares against
    ``reference`` (gold where there is some: against a fit's own winners it reads high, since
    models that err together also pull the winner their way)."""
    rows: list[list[float]] = []
    for item, row in votes.items():
        expected = reference.get(str(item))
        if expected is None:
            continue
        shares: list[float] = []
        for model in models:
            counts = row.get(model) or {}
            total = sum(counts.values())
            if total == 0:
                break
            shares.append(1.0 - counts.get(expected, 0) / total)
        else:
            rows.append(shares)
    return independence_of(rows, len(models))


def fit_reliability(
    votes: VoteTable,
    known: Mapping[str, str] | None = None,
    *,
    method: str = "dawid-skene",
    max_iter: int = 100,
    tol: float = 1e-5,
) -> ReliabilityFit:
    """Fit Dawid–Skene (``method="dawid-skene"``) or one-coin Dawid–Skene (``"one-coin"``).

    ``known`` maps items to labels known to be right (gold, reviews): those items are clamped.
    Raises :class:`InputError` for an unknown method or a table without a single vote.
    """
    if method not in METHODS:
        raise InputError(f"unknown reliability model {method!r}: use {' or '.join(METHODS)}")
    fit_method: Method = method
    if isinstance(max_iter, bool) or max_iter < 1:
        raise InputError(f"max_iter must be at least 1, got {max_iter!r}")
    items, workers, labels = _rows(votes)
    if not items:
        raise InputError("no valid votes to fit: every call failed, was invalid or is missing")

    import pandas as pd

    frame = pd.DataFrame({"task": items, "worker": workers, "label": labels})
    label_names = sorted(set(labels))
    voted_items = set(items)
    clamp = {
        str(i): label
        for i, label in (known or {}).items()
        if str(i) in voted_items and label in set(label_names)
    }
    fitted = _crowdkit_fit(frame, clamp, fit_method, max_iter, tol)

    probas = fitted.probas_.reindex(columns=label_names, fill_value=0.0).fillna(0.0)
    matrix = probas.to_numpy(dtype=np.float64)
    matrix = matrix / matrix.sum(axis=1, keepdims=True)
    item_index = [str(i) for i in probas.index]
    for r, item in enumerate(item_index):  # crowd-kit leaves clamped rows clipped at 1e-10
        if item in clamp:
            matrix[r] = [float(label == clamp[item]) for label in label_names]
    order = np.argsort(-matrix, axis=1)
    top = matrix[np.arange(len(matrix)), order[:, 0]]
    second = (
        matrix[np.arange(len(matrix)), order[:, 1]] if len(label_names) > 1 else np.zeros_like(top)
    )
    posterior = {
        item: dict(zip(label_names, map(float, row), strict=True))
        for item, row in zip(item_index, matrix, strict=True)
    }
    winner: dict[str, str | None] = {
        item: None if top[r] - second[r] <= TIE_TOLERANCE else label_names[order[r, 0]]
        for r, item in enumerate(item_index)
    }
    confidence = {item: float(top[r]) for r, item in enumerate(item_index)}

    # expected share of right votes: the posterior of the label each vote gave
    row_of = {item: r for r, item in enumerate(item_index)}
    col_of = {label: c for c, label in enumerate(label_names)}
    rights = matrix[
        np.fromiter((row_of[i] for i in items), dtype=np.int64, count=len(items)),
        np.fromiter((col_of[v] for v in labels), dtype=np.int64, count=len(labels)),
    ]
    right = pd.DataFrame({"model": workers, "right": rights, "task": items})
    per_model = right.groupby("model", sort=True).agg(
        votes=("right", "size"), right=("right", "mean"), items=("task", "nunique")
    )
    errors = fitted.errors_
    reliabilities: list[ModelReliability] = []
    for model, stats in per_model.iterrows():
        if fit_method == "one-coin":  # one skill, whatever the truth (crowd-kit keeps only the
            skill = float(fitted.skills_[model])  # rows of labels the model voted)
            off = (1.0 - skill) / max(len(label_names) - 1, 1)
            confusion = {
                truth: {vote: skill if vote == truth else off for vote in label_names}
                for truth in label_names
            }
        else:
            table = errors.xs(model, level="worker").reindex(
                index=label_names, columns=label_names, fill_value=0.0
            )
            confusion = {
                truth: {vote: float(table.at[vote, truth]) for vote in label_names}
                for truth in label_names
            }
        reliabilities.append(
            ModelReliability(
                model=str(model),
                votes=int(stats["votes"]),
                items=int(stats["items"]),
                accuracy=float(stats["right"]),
                confusion=confusion,
            )
        )
    priors = fitted.priors_.reindex(label_names, fill_value=0.0).fillna(0.0)
    reference: dict[str, str | None] = {**winner, **clamp}
    return ReliabilityFit(
        method=fit_method,
        labels=label_names,
        items=len(item_index),
        votes=len(items),
        known=len(clamp),
        iterations=len(fitted.loss_history_),
        priors={label: float(p) for label, p in priors.items()},
        models=reliabilities,
        posterior=posterior,
        winner=winner,
        confidence=confidence,
        independence=effective_voters_of(votes, [m.model for m in reliabilities], reference),
    )


# -- deciding with a fit, and how it compares ---------------------------------------------------

AGGREGATES = ("majority", "weighted", "one-coin", "dawid-skene")
"""The ways :func:`compare_aggregates` decides the same stored votes."""


class AggregateScore(BaseModel):
    """One way of deciding the same votes, scored on gold."""

    aggregate: str
    items: int
    correct: int
    undecided: int  # no winner (tie or no vote): counted as not right
    accuracy: float
    ci_low: float  # Wilson interval
    ci_high: float
    calls_per_item: float


def plurality(scores: Mapping[str, float]) -> str | None:
    """The label with the highest score; ``None`` without votes or when the top is tied."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] <= 0:
        return None
    if len(ranked) > 1 and ranked[0][1] - ranked[1][1] <= TIE_TOLERANCE:
        return None
    return ranked[0][0]


def weighted_winner(
    row: Mapping[str, Mapping[str, int]], weights: Mapping[str, float]
) -> str | None:
    """The plurality of one item's votes, each model's votes counted at its weight."""
    scores: dict[str, float] = {}
    for model, counts in row.items():
        for label, count in counts.items():
            scores[label] = scores.get(label, 0.0) + weights.get(model, 0.0) * count
    return plurality(scores)


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(0, 1)`` without trials)."""
    if total == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _score(
    name: str,
    winners: Mapping[str, str | None],
    gold: Mapping[str, str],
    calls: float,
    confidence: float,
) -> AggregateScore:
    correct = sum(winners.get(item) == label for item, label in gold.items())
    undecided = sum(winners.get(item) is None for item in gold)
    low, high = wilson_interval(correct, len(gold), confidence)
    return AggregateScore(
        aggregate=name,
        items=len(gold),
        correct=correct,
        undecided=undecided,
        accuracy=correct / len(gold),
        ci_low=low,
        ci_high=high,
        calls_per_item=calls,
    )


def compare_aggregates(
    votes: VoteTable,
    gold: Mapping[str, str],
    *,
    known: Mapping[str, str] | None = None,
    calls: Mapping[str, int] | None = None,
    confidence: float = 0.95,
) -> list[AggregateScore]:
    """Majority, weighted by estimated reliability, one-coin and Dawid–Skene on the same votes.

    Scored on the items ``gold`` labels; ``known`` (reviews, not gold) is clamped in the fits.
    ``calls`` per item (every call, valid or not) gives calls per item; without it, the valid
    votes. The weights are the Dawid–Skene fit's accuracies as log-odds.
    """
    scored = {str(i): label for i, label in gold.items() if label}
    if not scored:
        raise InputError("comparing aggregates needs gold labels")
    fits = {m: fit_reliability(votes, known, method=m) for m in ("one-coin", "dawid-skene")}
    weights = fits["dawid-skene"].weights()
    majority = {
        str(item): weighted_winner(row, dict.fromkeys(row, 1.0)) for item, row in votes.items()
    }
    weighted = {str(item): weighted_winner(row, weights) for item, row in votes.items()}
    per_item = calls or {
        str(item): sum(sum(c.values()) for c in row.values()) for item, row in votes.items()
    }
    spent = sum(per_item.get(item, 0) for item in scored) / len(scored)
    decisions: dict[str, Mapping[str, str | None]] = {
        "majority": majority,
        "weighted": weighted,
        "one-coin": fits["one-coin"].winner,
        "dawid-skene": fits["dawid-skene"].winner,
    }
    return [_score(name, decisions[name], scored, spent, confidence) for name in AGGREGATES]


def calibration_points(fit: ReliabilityFit, gold: Mapping[str, str]) -> list[tuple[float, bool]]:
    """(confidence, winner is right) per fitted item with gold: the calibration plot's points."""
    return [
        (fit.confidence[item], fit.winner[item] == label)
        for item, label in gold.items()
        if label and item in fit.confidence
    ]
