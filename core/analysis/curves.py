"""Error against N: what a majority of N votes buys over one call, on the user's own data.

K answers per item per model are drawn once and stored; every N is then estimated by
resampling those answers (without replacement within a model's K), so one draw of K serves
the whole curve and the curves of several panels. Next to the measured error sits the error
that independent voters at the same single-call accuracy would reach (the Condorcet
prediction): the gap between the two is what correlated errors cost.

Conventions shared by this package:

- A panel is a list of model names. Slots are filled round-robin: slot ``s`` asks
  ``panel[s % len(panel)]``. One model named once means N samples of that model.
- A ``None`` answer is an invalid or failed call. It is drawn like any other answer, never
  counts as a vote, and as a single call it counts as wrong.
- The decision is the plurality winner of the valid votes. A vote with no valid votes is an
  error. A tie counts as an error (``tie="error"``, the default: an undecided vote did not
  give the right label) or, with ``tie="half"``, a tie that includes the gold label counts as
  half an error (a coin toss between two; a tie without the gold label is a full error).
- Statistics that are undefined on the data (a correlation with no variation) are ``None``,
  never NaN, so results stay valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from core.errors import InputError

Samples = Mapping[str, Mapping[str, Sequence[str | None]]]
TieRule = Literal["error", "half"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

NO_VOTE = -1  # a None answer: drawn, never counted
PADDING = -2  # past the end of an item's K answers: never drawn

_CELL_BUDGET = 2_000_000  # items x draws x labels held at once while counting


# --------------------------------------------------------------------------- result shapes


class CurvePoint(BaseModel):
    """Majority-of-``n`` on the set: its error with a bootstrap interval, and what it costs.

    ``latency_ms`` is the latency of the whole vote: the slowest of its ``n`` slots (see
    :func:`majority_error_curve`). ``effective_voters`` is ``n / (1 + (n - 1) rho)`` with a
    negative measured rho read as zero, so it never claims more than ``n``.
    """

    n: int
    error: float
    ci_low: float
    ci_high: float
    independent_error: float
    effective_voters: float | None
    calls_per_item: int
    cost_per_item: float | None
    latency_ms: float | None


class Curve(BaseModel):
    """Error against N for one panel on one labelled set."""

    panel: list[str]
    items: int
    k: dict[str, int]  # the fewest answers any item has, per model
    labels: int  # distinct labels seen in gold and answers
    k_labels: int  # labels assumed by the independent-error prediction
    tie: TieRule
    confidence: float
    draws: int
    single_call_error: float  # mean over the panel's slots of each model's error
    model_errors: dict[str, float]
    rho: float | None  # mean pairwise correlation of error indicators between slots
    points: list[CurvePoint]
    # error(5) / error(1) with its paired bootstrap interval (None: N=1 or 5 not drawn)
    halving_ci: tuple[float, float] | None = None

    def point(self, n: int) -> CurvePoint | None:
        """The point for ``n`` votes, if the curve has it."""
        return next((p for p in self.points if p.n == n), None)


HalvingVerdict = Literal["holds", "does not hold", "cannot tell"]

ROUGHLY_HALF = 0.6
"""The handbook's "drops error rate by roughly half" read as error(5) / error(1) at most 0.6:
the check holds when the whole interval is at or below it, does not hold when the whole
interval is above it, and cannot be told from this many items when the interval spans it."""


def halving_verdict(ci: tuple[float, float] | None) -> HalvingVerdict | None:
    if ci is None:
        return None
    low, high = ci
    if high <= ROUGHLY_HALF:
        return "holds"
    if low > ROUGHLY_HALF:
        return "does not hold"
    return "cannot tell"


class Recommendation(BaseModel):
    """The N to run, and the handbook's check on the user's own data.

    ``removed`` is the share of the one-call error that majority-of-``n`` removes;
    ``halving_check`` is error(5) / error(1) (the handbook says about 0.5).
    """

    n: int
    error: float
    ci_low: float
    ci_high: float
    baseline_error: float
    removed: float | None
    halving_check: float | None
    halves: bool | None
    halving_ci: tuple[float, float] | None = None  # the check's interval, paired bootstrap
    halving_verdict: HalvingVerdict | None = None
    min_gain: float
    still_improving: bool
    reason: str


class HarmReport(BaseModel):
    """Items (or a whole set) where one call is right less often than ``threshold``.

    With two labels, majority of such votes converges on the wrong answer, so more votes make
    them worse; with more labels it depends on how the wrong votes spread, so the flag is a
    warning to look, not a proof.
    """

    threshold: float
    items: list[str]  # the flagged items, worst first
    item_accuracy: dict[str, float]  # single-call accuracy of the flagged items
    set_accuracy: float
    set_harmful: bool
    message: str | None


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedSet:
    """A labelled set as integer codes, checked once and shared by curves and early stop."""

    items: list[str]
    labels: list[str]
    gold: IntArray  # (items,)
    answers: dict[str, IntArray]  # model -> (items, K max); NO_VOTE, PADDING
    sizes: dict[str, IntArray]  # model -> (items,) answers per item


def slot_models(panel: Sequence[str], n: int) -> list[str]:
    """The model asked in each of the first ``n`` slots (round-robin over the panel)."""
    return [panel[s % len(panel)] for s in range(n)]


def check_tie(tie: str) -> TieRule:
    if tie == "error":
        return "error"
    if tie == "half":
        return "half"
    raise InputError(f"tie must be 'error' or 'half', got {tie!r}")


def check_panel(panel: Sequence[str]) -> list[str]:
    if isinstance(panel, str):
        raise InputError("the panel is a list of model names, not one string")
    models = list(panel)
    if not models:
        raise InputError("the panel is empty: name at least one model")
    return models


def encode(samples: Samples, gold: Mapping[str, str], panel: Sequence[str]) -> EncodedSet:
    """Check a labelled set against a panel and turn its labels into integer codes.

    Only items with a gold label count. Raises :class:`InputError` for a set without gold,
    without items, or with an item that has no answers from a panel model.
    """
    models = list(dict.fromkeys(check_panel(panel)))
    if not samples:
        raise InputError("curve needs samples: the set has no items")
    if not gold or not any(gold.get(i) for i in gold):
        raise InputError("curve needs gold labels: the set has no gold column")
    items = [i for i in samples if gold.get(i)]
    if not items:
        raise InputError("curve needs gold labels: none of the sampled items has one")

    codes: dict[str, int] = {}

    def code(label: str) -> int:
        return codes.setdefault(label, len(codes))

    gold_codes = np.array([code(gold[i]) for i in items], dtype=np.int64)
    answers: dict[str, IntArray] = {}
    sizes: dict[str, IntArray] = {}
    for model in models:
        rows: list[list[int]] = []
        for item in items:
            drawn = samples[item].get(model)
            if not drawn:
                raise InputError(f"item {item!r} has no answers from {model}")
            rows.append([NO_VOTE if a is None else code(a) for a in drawn])
        width = max(len(r) for r in rows)
        table = np.full((len(items), width), PADDING, dtype=np.int64)
        for row, values in enumerate(rows):
            table[row, : len(values)] = values
        answers[model] = table
        sizes[model] = np.array([len(r) for r in rows], dtype=np.int64)
    return EncodedSet(items, list(codes), gold_codes, answers, sizes)


def check_k(encoded: EncodedSet, panel: Sequence[str], n: int) -> None:
    """Raise if some item has fewer answers from a model than ``n`` votes need from it."""
    need: dict[str, int] = {}
    for model in slot_models(panel, n):
        need[model] = need.get(model, 0) + 1
    mixed = len(need) > 1
    for model, wanted in need.items():
        have = int(encoded.sizes[model].min())
        if have < wanted:
            detail = f" ({model} answers {wanted} of them)" if mixed else ""
            raise InputError(f"K={have} samples per model is fewer than N={n} needs{detail}")


def _check_ns(ns: Sequence[int]) -> list[int]:
    values = list(ns)
    if not values:
        raise InputError("give at least one N")
    for n in values:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise InputError(f"N must be a positive whole number, got {n!r}")
    return sorted({int(n) for n in values})


def check_draws(draws: int) -> None:
    if draws < 1:
        raise InputError(f"draws must be at least 1, got {draws}")


# --------------------------------------------------------------------------- drawing votes


def vote_sequences(
    encoded: EncodedSet,
    panel: Sequence[str],
    max_n: int,
    draws: int,
    rng: np.random.Generator,
) -> Iterator[tuple[slice, IntArray]]:
    """Draw ``draws`` orders of ``max_n`` votes per item, in chunks of items.

    Yields ``(items, codes)`` with codes of shape (chunk, draws, max_n): the label code of
    each slot's answer, or ``NO_VOTE``. Each model's answers are drawn without replacement
    in a random order, so every prefix of a sequence is a fair draw of that many votes.
    """
    models = slot_models(panel, max_n)
    occurrence: list[int] = []
    seen: dict[str, int] = {}
    for model in models:
        occurrence.append(seen.get(model, 0))
        seen[model] = seen.get(model, 0) + 1
    width = max(a.shape[1] for a in encoded.answers.values())
    per_item = draws * max(width, len(encoded.labels), max_n)
    chunk = max(1, _CELL_BUDGET // per_item)
    total = len(encoded.items)
    for start in range(0, total, chunk):
        rows = slice(start, min(total, start + chunk))
        count = rows.stop - rows.start
        picks: dict[str, IntArray] = {}
        for model, need in seen.items():
            table = encoded.answers[model][rows]
            keys = rng.random((count, draws, table.shape[1]))
            keys[np.broadcast_to((table == PADDING)[:, None, :], keys.shape)] = np.inf
            order = np.argsort(keys, axis=-1)[..., :need]
            full = np.broadcast_to(table[:, None, :], (count, draws, table.shape[1]))
            picks[model] = np.take_along_axis(full, order, axis=-1)
        codes = np.empty((count, draws, max_n), dtype=np.int64)
        for slot, (model, nth) in enumerate(zip(models, occurrence, strict=True)):
            codes[:, :, slot] = picks[model][:, :, nth]
        yield rows, codes


class VoteCounter:
    """Running counts of votes per label for (items, draws), one slot at a time."""

    def __init__(self, items: int, draws: int, labels: int) -> None:
        self.counts = np.zeros((items, draws, labels), dtype=np.int64)
        self._items = np.arange(items)[:, None]
        self._draws = np.arange(draws)[None, :]

    def add(self, codes: IntArray) -> None:
        """Count one slot's votes; ``codes`` has shape (items, draws)."""
        valid = codes >= 0
        rows, cols = np.nonzero(valid)
        self.counts[rows, cols, codes[rows, cols]] += 1

    def leaders(self) -> tuple[IntArray, IntArray]:
        """The leader's and the runner-up's vote counts."""
        if self.counts.shape[-1] == 1:
            top = self.counts[..., 0]
            return top, np.zeros_like(top)
        ordered = np.partition(self.counts, -2, axis=-1)
        return ordered[..., -1], ordered[..., -2]

    def score(self, gold: IntArray, tie: TieRule) -> FloatArray:
        """1 for a right plurality decision, 0 for a wrong one or none, ties by ``tie``."""
        top = self.counts.max(axis=-1)
        leaders = (self.counts == top[..., None]).sum(axis=-1)
        index = np.broadcast_to(gold[:, None, None], (*self.counts.shape[:2], 1))
        gold_votes = np.take_along_axis(self.counts, index, axis=-1)[..., 0]
        on_gold = (top > 0) & (gold_votes == top)
        right: FloatArray = (on_gold & (leaders == 1)).astype(np.float64)
        if tie == "half":
            right += 0.5 * (on_gold & (leaders > 1))
        return right


# --------------------------------------------------------------------------- independent voters


@lru_cache(maxsize=65536)
def _ways_at_most(votes: int, cap: int, labels: int) -> int:
    """Ways to give ``votes`` distinguishable votes to ``labels`` labels, at most ``cap`` each."""
    if cap < 0:
        return 1 if votes == 0 and labels == 0 else 0
    ways = [1] + [0] * votes
    for _ in range(labels):
        ways = [
            sum(math.comb(s, j) * ways[s - j] for j in range(min(cap, s) + 1))
            for s in range(votes + 1)
        ]
    return ways[votes]


def _p_max_at_most(votes: int, cap: int, labels: int) -> float:
    """P(no wrong label gets more than ``cap`` of ``votes`` votes spread uniformly)."""
    if votes == 0:
        return 1.0 if cap >= 0 else 0.0
    outcomes: int = labels**votes
    return _ways_at_most(votes, cap, labels) / outcomes


def condorcet_error(p: float, n: int, k_labels: int = 2, *, tie: str = "error") -> float:
    """Error of a plurality of ``n`` independent voters, each right with probability ``p``.

    Two labels: the exact binomial tail. More labels: wrong votes spread uniformly over the
    ``k_labels - 1`` wrong labels, computed exactly (the right label's count is binomial; the
    wrong labels' counts are multinomial, and the chance that none exceeds a cap is counted
    with exact integers). Uniform spreading is the kindest case for the vote, so with more
    than two labels this is a floor for independent voters, not a typical value.
    """
    rule = check_tie(tie)
    if not 0.0 <= p <= 1.0:
        raise InputError(f"p must be a probability between 0 and 1, got {p}")
    if isinstance(n, bool) or n < 1:
        raise InputError(f"N must be a positive whole number, got {n!r}")
    if k_labels < 2:
        raise InputError(f"k_labels must be at least 2, got {k_labels}")
    wrong_labels = k_labels - 1
    tie_weight = 1.0 if rule == "error" else 0.5
    error = 0.0
    for right in range(n + 1):
        chance = math.comb(n, right) * p**right * (1.0 - p) ** (n - right)
        if chance == 0.0:
            continue
        wrong = n - right
        below = _p_max_at_most(wrong, right - 1, wrong_labels)
        at_most = _p_max_at_most(wrong, right, wrong_labels)
        error += chance * ((1.0 - at_most) + tie_weight * (at_most - below))
    return min(1.0, max(0.0, error))


def effective_voters(n: float, rho: float) -> float:
    """How many independent voters ``n`` voters with error correlation ``rho`` are worth.

    ``n / (1 + (n - 1) rho)``: the design effect of equicorrelated voters. Raises when
    ``1 + (n - 1) rho`` is not positive (no set of ``n`` voters has such a correlation).
    """
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    if not -1.0 <= rho <= 1.0:
        raise InputError(f"rho must be a correlation between -1 and 1, got {rho}")
    denominator = 1.0 + (n - 1.0) * rho
    if denominator <= 0.0:
        raise InputError(f"a correlation of {rho} is impossible among {n} voters")
    return n / denominator


def mean_phi(errors: npt.NDArray[np.bool_] | FloatArray) -> float | None:
    """Mean pairwise correlation between the columns of a 0/1 matrix (phi coefficients).

    Columns with no variation (always right or always wrong) have no correlation and are
    left out; ``None`` when fewer than two columns are left.
    """
    matrix = np.asarray(errors, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 2:
        return None
    spread = matrix.std(axis=0)
    kept = matrix[:, spread > 0]
    if kept.shape[1] < 2:
        return None
    corr = np.atleast_2d(np.corrcoef(kept, rowvar=False))
    upper = corr[np.triu_indices(kept.shape[1], k=1)]
    return float(upper.mean())


def _wrong(encoded: EncodedSet, model: str) -> tuple[FloatArray, BoolArray]:
    """Per answer: 1 where wrong (None included), and where an answer exists."""
    table = encoded.answers[model]
    present = table != PADDING
    wrong = (table != encoded.gold[:, None]) & present
    return wrong.astype(np.float64), present


def _model_errors(encoded: EncodedSet) -> dict[str, FloatArray]:
    """Each model's single-call error per item: the share of its K answers that are wrong."""
    result: dict[str, FloatArray] = {}
    for model in encoded.answers:
        wrong, present = _wrong(encoded, model)
        result[model] = wrong.sum(axis=1) / present.sum(axis=1)
    return result


def _slot_errors(encoded: EncodedSet, panel: Sequence[str]) -> BoolArray:
    """Error indicators per (item, slot): each model's first K answers, K its fewest on any item."""
    columns: list[BoolArray] = []
    for model in dict.fromkeys(panel):
        k = int(encoded.sizes[model].min())
        table = encoded.answers[model][:, :k]
        columns.append(table != encoded.gold[:, None])
    return np.concatenate(columns, axis=1)


def error_correlation(
    samples: Samples, gold: Mapping[str, str], panel: Sequence[str]
) -> float | None:
    """Mean pairwise correlation of error indicators between the panel's slots, over items.

    A slot is one answer index of one model (answer ``j`` of model ``m`` on every item);
    the pairs are every two slots of the panel's models, within and across models. For
    samples of one model this is the intraclass correlation that item difficulty causes;
    ``None`` when fewer than two slots vary.
    """
    encoded = encode(samples, gold, panel)
    return mean_phi(_slot_errors(encoded, panel))


# --------------------------------------------------------------------------- the curve


def _latency(
    models: Sequence[str],
    latency_ms: Mapping[str, float | Sequence[float]] | None,
    rng: np.random.Generator,
    draws: int,
) -> float | None:
    if latency_ms is None or any(latency_ms.get(m) is None for m in models):
        return None
    observed = [latency_ms[m] for m in models]
    if all(isinstance(v, int | float) for v in observed):
        return float(max(v for v in observed if isinstance(v, int | float)))
    slowest = np.zeros(draws)
    for value in observed:
        pool = np.asarray([value] if isinstance(value, int | float) else list(value), float)
        if pool.size == 0:
            return None
        slowest = np.maximum(slowest, rng.choice(pool, size=draws))
    return float(np.median(slowest))


def _cost(models: Sequence[str], cost_per_call: Mapping[str, float | None] | None) -> float | None:
    if cost_per_call is None:
        return None
    prices = [cost_per_call.get(m) for m in models]
    if any(price is None for price in prices):
        return None
    return float(sum(price for price in prices if price is not None))


def majority_error_curve(
    samples: Samples,
    gold: Mapping[str, str],
    panel: Sequence[str],
    ns: Sequence[int],
    *,
    draws: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    tie: str = "error",
    boot: int = 1000,
    k_labels: int = 2,
    cost_per_call: Mapping[str, float | None] | None = None,
    latency_ms: Mapping[str, float | Sequence[float]] | None = None,
) -> Curve:
    """Estimate the error of plurality-majority-of-N for each N in ``ns``.

    Per item, ``draws`` random orders of the stored answers give the chance that the vote of
    N is wrong (N = 1 is computed exactly: the share of wrong answers); the curve is the mean
    over items, with a percentile bootstrap interval over items (``boot`` resamples).

    ``independent_error`` is :func:`condorcet_error` at the mean single-call accuracy of the
    first N slots, with ``k_labels`` labels: 2 by default, the case where wrong votes agree
    on one rival, so the gap to the measured error is not flattered by wrong votes assumed
    to scatter. Pass the number of labels for the scattered case.

    ``cost_per_call``: price of one call per model; a missing or ``None`` price makes the
    cost unknown (``None``), never zero. ``latency_ms``: per model either one typical latency
    (the vote's latency is then the largest among its slots' models) or observed latencies
    (the vote's latency is then the median over draws of the slowest of its N slots, which
    grows with N as the slowest of more calls does).
    """
    rule = check_tie(tie)
    models = check_panel(panel)
    wanted = _check_ns(ns)
    check_draws(draws)
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be between 0 and 1, got {confidence}")
    if boot < 1:
        raise InputError(f"boot must be at least 1, got {boot}")
    encoded = encode(samples, gold, models)
    max_n = wanted[-1]
    check_k(encoded, models, max_n)

    draw_rng, boot_rng, latency_rng = np.random.default_rng(seed).spawn(3)
    per_model = _model_errors(encoded)
    column = {n: j for j, n in enumerate(wanted)}
    item_errors = np.zeros((len(encoded.items), len(wanted)))
    if 1 in column:
        item_errors[:, column[1]] = per_model[models[0]]
    if max_n > 1:
        for rows, codes in vote_sequences(encoded, models, max_n, draws, draw_rng):
            counter = VoteCounter(codes.shape[0], draws, len(encoded.labels))
            for slot in range(max_n):
                counter.add(codes[:, :, slot])
                n = slot + 1
                if n in column and n > 1:
                    right = counter.score(encoded.gold[rows], rule)
                    item_errors[rows, column[n]] = 1.0 - right.mean(axis=1)

    errors = item_errors.mean(axis=0)
    count = len(encoded.items)
    weights = boot_rng.multinomial(count, np.full(count, 1.0 / count), size=boot)
    means = weights @ item_errors / count
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)

    halving_ci = None
    if 1 in column and 5 in column:  # the same resamples for both: the ratio's own interval
        ones, fives = means[:, column[1]], means[:, column[5]]
        kept = ones > 0
        if kept.any():
            ratio = fives[kept] / ones[kept]
            lo, hi = np.quantile(ratio, [alpha / 2.0, 1.0 - alpha / 2.0])
            halving_ci = (float(lo), float(hi))
    model_errors = {m: float(e.mean()) for m, e in per_model.items()}
    rho = mean_phi(_slot_errors(encoded, models))
    points: list[CurvePoint] = []
    for j, n in enumerate(wanted):
        slots = slot_models(models, n)
        accuracy = 1.0 - float(np.mean([model_errors[m] for m in slots]))
        points.append(
            CurvePoint(
                n=n,
                error=float(errors[j]),
                ci_low=float(min(low[j], errors[j])),
                ci_high=float(max(high[j], errors[j])),
                independent_error=condorcet_error(accuracy, n, k_labels, tie=rule),
                effective_voters=None if rho is None else effective_voters(n, max(rho, 0.0)),
                calls_per_item=n,
                cost_per_item=_cost(slots, cost_per_call),
                latency_ms=_latency(slots, latency_ms, latency_rng, max(draws, 200)),
            )
        )
    return Curve(
        panel=models,
        items=count,
        k={m: int(s.min()) for m, s in encoded.sizes.items()},
        labels=len(encoded.labels),
        k_labels=k_labels,
        tie=rule,
        confidence=confidence,
        draws=draws,
        single_call_error=float(np.mean([model_errors[m] for m in models])),
        model_errors=model_errors,
        rho=rho,
        points=points,
        halving_ci=halving_ci,
    )


def recommend(curve: Curve, *, min_gain: float = 0.1) -> Recommendation:
    """The smallest N where the next two votes remove less than ``min_gain`` of the error.

    For each N the gain is ``(error(N) - error(N + 2)) / error(N)``; when N + 2 is not on the
    curve the next larger N stands in. An error of zero has nothing left to gain. When every
    step still gains enough, the largest N is recommended with ``still_improving`` set: draw
    more samples to see further. The baseline "one call" is the curve's N = 1 if present,
    else the measured single-call error.
    """
    if not 0.0 <= min_gain <= 1.0:
        raise InputError(f"min_gain must be between 0 and 1, got {min_gain}")
    if not curve.points:
        raise InputError("the curve has no points")
    points = sorted(curve.points, key=lambda p: p.n)
    one = curve.point(1)
    baseline = one.error if one is not None else curve.single_call_error

    chosen = points[-1]
    still_improving = True
    gain_text = ""
    for index, point in enumerate(points):
        later = [p for p in points[index + 1 :] if p.n >= point.n + 2] or points[index + 1 :]
        if not later:
            break
        nxt = later[0]
        gain = 0.0 if point.error <= 0.0 else (point.error - nxt.error) / point.error
        if gain < min_gain:
            chosen, still_improving = point, False
            if gain <= 0.0:
                gain_text = f"going from {point.n} to {nxt.n} votes does not lower the error"
            else:
                gain_text = (
                    f"going from {point.n} to {nxt.n} votes removes {gain:.1%} of the error "
                    f"(less than {min_gain:.0%})"
                )
            break

    removed = None if baseline <= 0.0 else 1.0 - chosen.error / baseline
    five = curve.point(5)
    halving = None if five is None or baseline <= 0.0 else five.error / baseline
    if still_improving:
        reason = (
            f"error still falls by at least {min_gain:.0%} per two votes up to N={chosen.n}: "
            "no point of diminishing returns within the samples drawn"
        )
    else:
        reason = f"N={chosen.n}: {gain_text}"
    if removed is not None and chosen.n > 1:
        reason += f"; N={chosen.n} removes {removed:.0%} of the one-call error"
    return Recommendation(
        n=chosen.n,
        error=chosen.error,
        ci_low=chosen.ci_low,
        ci_high=chosen.ci_high,
        baseline_error=baseline,
        removed=removed,
        halving_check=halving,
        halves=None if halving is None else halving <= 0.5,
        halving_ci=curve.halving_ci if halving is not None else None,
        halving_verdict=halving_verdict(curve.halving_ci) if halving is not None else None,
        min_gain=min_gain,
        still_improving=still_improving,
        reason=reason,
    )


def harm_report(
    samples: Samples,
    gold: Mapping[str, str],
    panel: Sequence[str],
    threshold: float = 0.5,
) -> HarmReport:
    """Flag items where a single call of the panel is right less often than ``threshold``.

    An item's single-call accuracy is the mean over the panel's slots of each model's share
    of right answers on it; the set is flagged when the mean over items is below 0.5.
    """
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be between 0 and 1, got {threshold}")
    models = check_panel(panel)
    encoded = encode(samples, gold, models)
    per_model = _model_errors(encoded)
    accuracy = 1.0 - np.mean([per_model[m] for m in models], axis=0)
    order = np.argsort(accuracy, kind="stable")
    flagged = [int(i) for i in order if accuracy[i] < threshold]
    items = [encoded.items[i] for i in flagged]
    set_accuracy = float(accuracy.mean())
    set_harmful = set_accuracy < 0.5
    message: str | None = None
    if set_harmful:
        message = (
            f"a single call is right {set_accuracy:.0%} of the time on this set: "
            "majority voting makes it worse as N grows"
        )
    elif items:
        message = (
            f"{len(items)} of {len(encoded.items)} items are answered right less than "
            f"{threshold:.0%} of the time: more votes make those worse"
        )
    return HarmReport(
        threshold=threshold,
        items=items,
        item_accuracy={encoded.items[i]: float(accuracy[i]) for i in flagged},
        set_accuracy=set_accuracy,
        set_harmful=set_harmful,
        message=message,
    )


def harmful_items(
    samples: Samples,
    gold: Mapping[str, str],
    panel: Sequence[str],
    threshold: float = 0.5,
) -> list[str]:
    """The items :func:`harm_report` flags, worst first."""
    return harm_report(samples, gold, panel, threshold).items
