"""Early stop: how many calls a vote can skip, and what that does to accuracy.

Every rule is replayed on the same random orders of the stored answers (see
:func:`core.analysis.curves.vote_sequences`), so differences between rules come from the
rules, not from the draw. Rules, each capped at ``max_n`` votes:

- ``fixed``: always ``max_n`` votes, plurality decides.
- ``decided``: stop once the votes still to come cannot change the plurality winner (the
  leader is ahead of the runner-up by more than the votes left, counting every vote left as
  a valid vote for the runner-up). It always reaches the decision of ``fixed``.
- ``beta``: the leader's share of the two leading labels' votes has a Beta(1 + a, 1 + b)
  posterior (a leader votes, b runner-up votes, uniform prior); stop once
  P(share > 1/2) >= ``threshold``. The plurality so far decides.
- ``window``: stop once the last ``window`` votes are the same valid label; that label
  decides. Without such a streak by ``max_n``, the plurality decides.
- ``dawid-skene`` (given a fit of the set's own answers, no gold): each vote is weighed by
  its model's confusion matrix; stop once the posterior of the leading label is at least
  ``threshold``. The posterior's winner decides (not the plurality), so this rule can be
  more accurate than ``fixed`` as well as cheaper.

Ties and empty votes score as in the curve (``tie="error"`` by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

from core.analysis.curves import (
    BoolArray,
    FloatArray,
    IntArray,
    Samples,
    VoteCounter,
    check_draws,
    check_k,
    check_panel,
    check_tie,
    encode,
    slot_models,
    vote_sequences,
)
from core.analysis.reliability import ReliabilityFit
from core.confidence import leader_posterior
from core.errors import InputError

RuleName = Literal["fixed", "decided", "beta", "window", "dawid-skene"]

_DESCRIPTIONS: dict[RuleName, str] = {
    "fixed": "always {max_n} votes",
    "decided": "stop when the remaining votes cannot change the winner",
    "beta": "stop when P(leader beats runner-up) >= {threshold:g} (Beta posterior)",
    "window": "stop when the last {window} votes agree",
    "dawid-skene": "stop when the Dawid–Skene posterior of the leader >= {threshold:g}",
}

_FLOOR = 1e-6
"""The least probability a confusion cell or a prior counts as: a label the fit never saw
(only gold has it) stays possible, and no log is minus infinity."""


class RuleResult(BaseModel):
    """One stopping rule on the set: calls it made and how often it was right.

    ``saving`` is ``1 - calls / fixed calls``; it is a saving at equal accuracy only when
    ``equal_or_better`` holds, and ``accuracy_delta`` says by how much it is not.
    """

    rule: RuleName
    description: str
    calls_per_item: float
    accuracy: float
    saving: float
    accuracy_delta: float
    equal_or_better: bool


class EarlyStopReport(BaseModel):
    """The rules side by side on one panel, with the best saving that costs no accuracy."""

    panel: list[str]
    items: int
    max_n: int
    threshold: float
    window: int
    draws: int
    rules: list[RuleResult]
    best: RuleName | None  # the largest saving among rules with equal-or-better accuracy

    def rule(self, name: RuleName) -> RuleResult:
        """The result of one rule."""
        return next(r for r in self.rules if r.rule == name)


def _log_tables(
    fit: ReliabilityFit, labels: Sequence[str], panel: Sequence[str], max_n: int
) -> tuple[FloatArray, list[FloatArray]]:
    """The log prior over the set's label codes, and per slot the log-likelihood of each vote
    (rows: the label voted, columns: the true label) under the slot's model's confusion. A
    model the fit never saw weighs nothing."""
    prior = np.log(np.maximum([fit.priors.get(label, 0.0) for label in labels], _FLOOR))
    fitted = {m.model: m.confusion for m in fit.models}
    tables: dict[str, FloatArray] = {}
    for model in dict.fromkeys(panel):
        confusion = fitted.get(model)
        if confusion is None:
            tables[model] = np.zeros((len(labels), len(labels)))
            continue
        tables[model] = np.log(
            np.maximum([[confusion.get(t, {}).get(v, 0.0) for t in labels] for v in labels], _FLOOR)
        )
    return prior, [tables[model] for model in slot_models(panel, max_n)]


def _posterior_stop(
    score: FloatArray, gold: IntArray, threshold: float, rule: str
) -> tuple[BoolArray, FloatArray]:
    """From summed log scores (items, draws, labels): whether the leader's posterior reaches
    ``threshold``, and how right deciding by the posterior now is (a tie scores as the tie
    rule says: wrong, or an even share among the tied)."""
    top = score.max(axis=-1, keepdims=True)
    odds = np.exp(score - top)
    confident = 1.0 / odds.sum(axis=-1) >= threshold
    tied = score >= top - 1e-12
    ties = tied.sum(axis=-1)
    on_gold = np.take_along_axis(tied, gold[:, None, None].repeat(tied.shape[1], 1), -1)[..., 0]
    share = on_gold / ties if rule == "half" else np.where(ties == 1, on_gold, False)
    return confident, share.astype(np.float64)


def compare_early_stop(
    samples: Samples,
    gold: Mapping[str, str],
    panel: Sequence[str],
    max_n: int,
    *,
    threshold: float = 0.95,
    window: int = 3,
    draws: int = 50,
    seed: int = 0,
    tie: str = "error",
    reliability: ReliabilityFit | None = None,
) -> EarlyStopReport:
    """Replay fixed N, stop-when-decided, the Beta rule and the window rule on the samples;
    with ``reliability`` (a fit of these answers), the Dawid–Skene rule too."""
    rule = check_tie(tie)
    models = check_panel(panel)
    if isinstance(max_n, bool) or max_n < 1:
        raise InputError(f"N must be a positive whole number, got {max_n!r}")
    if not 0.5 < threshold < 1.0:
        raise InputError(f"threshold must be between 0.5 and 1, got {threshold}")
    if window < 1:
        raise InputError(f"window must be at least 1 vote, got {window}")
    check_draws(draws)
    encoded = encode(samples, gold, models)
    check_k(encoded, models, max_n)

    posterior = np.array(
        [[leader_posterior(a, b) for b in range(max_n + 1)] for a in range(max_n + 1)]
    )
    names: tuple[RuleName, ...] = ("fixed", "decided", "beta", "window")
    slot_tables: list[FloatArray] = []
    log_prior = np.zeros(len(encoded.labels))
    if reliability is not None:
        names = (*names, "dawid-skene")
        log_prior, slot_tables = _log_tables(reliability, encoded.labels, models, max_n)
    calls = dict.fromkeys(names, 0.0)
    right = dict.fromkeys(names, 0.0)
    rng = np.random.default_rng(seed)
    for rows, codes in vote_sequences(encoded, models, max_n, draws, rng):
        gold_codes = encoded.gold[rows]
        counter = VoteCounter(codes.shape[0], draws, len(encoded.labels))
        stopped = {name: np.zeros(codes.shape[:2], dtype=bool) for name in names[1:]}
        learned = np.broadcast_to(log_prior, (*codes.shape[:2], len(log_prior))).copy()
        for slot in range(max_n):
            counter.add(codes[:, :, slot])
            n = slot + 1
            last = n == max_n
            score = counter.score(gold_codes, rule)
            top, second = counter.leaders()
            streak = np.zeros(codes.shape[:2], dtype=bool)
            window_score = score
            if n >= window:
                recent = codes[:, :, n - window : n]
                streak = (recent[..., 0] >= 0) & (recent == recent[..., :1]).all(axis=-1)
                on_gold = (recent[..., 0] == gold_codes[:, None]).astype(np.float64)
                window_score = np.where(streak, on_gold, score)
            stops: dict[RuleName, tuple[BoolArray, FloatArray]] = {
                "decided": (top > second + (max_n - n), score),
                "beta": (posterior[top, second] >= threshold, score),
                "window": (streak, window_score),
            }
            if slot_tables:
                vote = codes[:, :, slot]
                cast = np.where((vote >= 0)[..., None], slot_tables[slot][np.maximum(vote, 0)], 0)
                learned += cast
                stops["dawid-skene"] = _posterior_stop(learned, gold_codes, threshold, rule)
            for name, (condition, scored) in stops.items():
                now = ~stopped[name] & (condition | last)
                calls[name] += float(now.sum()) * n
                right[name] += float(np.where(now, scored, 0.0).sum())
                stopped[name] |= now
            if last:
                calls["fixed"] += float(score.size) * n
                right["fixed"] += float(score.sum())

    total = len(encoded.items) * draws
    fixed_accuracy = right["fixed"] / total
    results: list[RuleResult] = []
    for name in names:
        per_item = calls[name] / total
        accuracy = right[name] / total
        delta = accuracy - fixed_accuracy
        results.append(
            RuleResult(
                rule=name,
                description=_DESCRIPTIONS[name].format(
                    max_n=max_n, threshold=threshold, window=window
                ),
                calls_per_item=per_item,
                accuracy=accuracy,
                saving=1.0 - per_item / max_n,
                accuracy_delta=delta,
                equal_or_better=delta >= -1e-12,
            )
        )
    candidates = [r for r in results if r.equal_or_better and r.saving > 0.0]
    best = max(candidates, key=lambda r: r.saving).rule if candidates else None
    return EarlyStopReport(
        panel=models,
        items=len(encoded.items),
        max_n=max_n,
        threshold=threshold,
        window=window,
        draws=draws,
        rules=results,
        best=best,
    )
