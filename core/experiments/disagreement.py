"""Who disagrees, how often, and whether the vote share can be trusted: one batch, read back.

Reads a stored batch (a curve's draw is one) and feeds :mod:`core.analysis`. Raters for the
kappas are the panel's models, each by its first sample; a batch of one model sampled K times
compares its samples instead, since that is all it has to compare. Accuracy counts every
sample of a model. Reviewers' decisions are the runs a human resolved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from core.analysis import (
    Bin,
    PairAgreement,
    VoterIndependence,
    effective_independent_voters,
    expected_calibration_error,
    fleiss_kappa,
    hardest_items,
    model_accuracy,
    pairwise_agreement,
    points_from_votes,
    reliability_bins,
)
from core.experiments.curve import gold_of
from core.formats import AnswerFormat
from core.result import CallResult, CallStatus, DecisionStatus, RunResult
from core.store import RunFilter, Store

Answers = dict[str, dict[str, str | None]]


class HardItem(BaseModel):
    """One of the most split votes, with the run it came from."""

    run_id: str
    item_id: str | None
    input: str
    gold: str | None
    decision: str
    leader: str | None
    votes: dict[str, int]
    entropy: float
    margin: float


class HeatCell(BaseModel):
    """How often two models' valid answers agree within a run (a model with itself: its
    samples with each other)."""

    model_a: str
    model_b: str
    pairs: int
    agreement: float


class Disagreement(BaseModel):
    """The disagreement and calibration of one batch."""

    batch_id: str
    name: str
    runs: int
    models: list[str]
    raters: list[str]
    hardest: list[HardItem]
    heatmap: list[HeatCell]
    kappas: list[PairAgreement]
    fleiss_kappa: float | None
    fleiss_items: int
    independence: VoterIndependence | None
    accuracy_gold: dict[str, float]
    accuracy_review: dict[str, float]
    reviewed: int
    human_vs_panel: float | None  # reviewers choosing the panel's plurality, in this batch
    review_stats: dict[str, Any]  # the whole store's counters
    reliability: list[Bin]
    calibration_error: float | None
    calibration_items: int
    # each decision's stored confidence against how often its label was the gold (runs
    # stored with a confidence and gold; none before confidences were stored)
    confidence_calibration: list[Bin] = []
    confidence_error: float | None = None
    confidence_items: int = 0


def panel_calls(run: RunResult) -> list[CallResult]:
    return sorted(
        (c for c in run.calls if c.phase == "panel" and c.status.final),
        key=lambda c: (c.model, c.sample),
    )


def vote_of(call: CallResult) -> str | None:
    return call.answer if call.status == CallStatus.OK else None


def rater_answers(results: Sequence[RunResult]) -> tuple[Answers, list[str]]:
    """item -> rater -> answer: models by their first sample, or one model's samples."""
    models = sorted({c.model for r in results for c in panel_calls(r)})
    by_sample = len(models) == 1
    answers: Answers = {}
    raters: dict[str, None] = {}
    for run in results:
        row: dict[str, str | None] = {}
        for call in panel_calls(run):
            if by_sample:
                rater = f"{call.model} #{call.sample + 1}"
            elif call.sample == 0:
                rater = call.model
            else:
                continue
            row[rater] = vote_of(call)
            raters.setdefault(rater)
        answers[run.run_id] = row
    return answers, sorted(raters)


def sample_answers(results: Sequence[RunResult]) -> Answers:
    """(run, sample) -> model -> answer: every sample of every model, for accuracy."""
    answers: Answers = {}
    for run in results:
        for call in panel_calls(run):
            answers.setdefault(f"{run.run_id}#{call.sample}", {})[call.model] = vote_of(call)
    return answers


def fleiss_table(results: Sequence[RunResult]) -> list[dict[str, int]]:
    """Label counts of the runs where every panel slot voted (Fleiss needs equal raters)."""
    rows: list[dict[str, int]] = []
    size = max((len(panel_calls(r)) for r in results), default=0)
    for run in results:
        calls = panel_calls(run)
        votes = [vote_of(c) for c in calls]
        if size < 2 or len(calls) != size or any(v is None for v in votes):
            continue
        counts: dict[str, int] = {}
        for vote in votes:
            if vote is not None:
                counts[vote] = counts.get(vote, 0) + 1
        rows.append(counts)
    return rows


def keyed(reference: Mapping[str, str], answers: Answers) -> dict[str, str]:
    """A run-keyed reference spread over the (run, sample) keys of ``answers``."""
    return {key: reference[key.split("#")[0]] for key in answers if key.split("#")[0] in reference}


def human_vs_panel(store: Store, resolved: Sequence[RunResult]) -> float | None:
    """Share of this batch's reviews that chose the panel's plurality label."""
    agree = counted = 0
    for run in resolved:
        reviews = store.reviews(run.run_id)
        if not reviews or reviews[-1].panel_plurality is None:
            continue
        counted += 1
        agree += reviews[-1].label == reviews[-1].panel_plurality
    return agree / counted if counted else None


def analyse_batch(store: Store, batch_id: str, *, top: int = 20, bins: int = 10) -> Disagreement:
    """Disagreement, agreement, accuracy and calibration of a stored batch."""
    info = store.get_batch(batch_id)
    fmt: AnswerFormat | None = info.spec.task.format
    results = [r for r in store.batch_results(batch_id) if panel_calls(r)]
    gold: dict[str, str] = {
        r.run_id: (gold_of(fmt, r.gold) if fmt is not None else r.gold) for r in results if r.gold
    }
    counts = {r.run_id: dict(r.votes) for r in results}
    by_id = {r.run_id: r for r in results}
    hardest = [
        HardItem(
            run_id=row.item_id,
            item_id=by_id[row.item_id].item_id,
            input=by_id[row.item_id].input,
            gold=gold.get(row.item_id),
            decision=by_id[row.item_id].decision.status.value,
            leader=row.leader,
            votes=row.votes,
            entropy=row.entropy,
            margin=row.margin,
        )
        for row in hardest_items(counts, top=top)
        if row.entropy > 0
    ]
    raters_answers, raters = rater_answers(results)
    kappas = list(pairwise_agreement(raters_answers).values())
    table = fleiss_table(results)
    fleiss = fleiss_kappa(table) if table else None
    independence = effective_independent_voters(raters_answers, gold) if gold else None
    samples = sample_answers(results)
    reviewed = {
        r.run_id: r.decision.label
        for r in results
        if r.decision.status == DecisionStatus.RESOLVED and r.decision.label
    }
    points = points_from_votes(counts, gold)
    sure = confidence_points(results, gold, fmt)
    heatmap = [
        HeatCell(model_a=p.model_a, model_b=p.model_b, pairs=p.pairs, agreement=p.rate)
        for p in store.pairwise_agreement(RunFilter(batch_id=batch_id))
    ]
    return Disagreement(
        batch_id=batch_id,
        name=info.name,
        runs=len(results),
        models=sorted({c.model for r in results for c in panel_calls(r)}),
        raters=raters,
        hardest=hardest,
        heatmap=heatmap,
        kappas=kappas,
        fleiss_kappa=fleiss,
        fleiss_items=len(table),
        independence=independence,
        accuracy_gold=model_accuracy(samples, keyed(gold, samples)),
        accuracy_review=model_accuracy(samples, keyed(reviewed, samples)),
        reviewed=len(reviewed),
        human_vs_panel=human_vs_panel(store, [by_id[run_id] for run_id in reviewed]),
        review_stats=store.review_stats(),
        reliability=reliability_bins(points, bins) if points else [],
        calibration_error=expected_calibration_error(points, bins) if points else None,
        calibration_items=len(points),
        confidence_calibration=reliability_bins(sure, bins) if sure else [],
        confidence_error=expected_calibration_error(sure, bins) if sure else None,
        confidence_items=len(sure),
    )


def confidence_points(
    results: Sequence[RunResult], gold: Mapping[str, str], fmt: AnswerFormat | None
) -> list[tuple[float, bool]]:
    """(the decision's confidence, its label is the gold) per run with both: whether a
    confidence of 0.9 is right nine times in ten."""
    points: list[tuple[float, bool]] = []
    for r in results:
        expected, confidence = gold.get(r.run_id), r.decision.confidence
        if expected is None or confidence is None:
            continue
        label = r.decision.label
        right = fmt.gold_matches(label, expected) if fmt is not None else label == expected
        points.append((confidence, right))
    return points
