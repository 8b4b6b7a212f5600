"""Learned reliability of a stored batch: read its answers, fit, and report or re-decide.

Reads the answers matrix with :meth:`Store.batch_answers` and hands it to
:func:`core.analysis.reliability.fit_reliability`. Reviewers' resolutions are always known
labels; the batch's gold is one too only with ``clamp_gold`` (a batch labelled in part): on a
fully labelled set, clamping gold would score the fit on its own answer key, so by default gold
only scores it (majority against the learned ways, and the calibration of the confidence).

A learned re-vote decides every run by the fit's posterior (docs/decisions.md, row 16), through
the same engine, quorum and tie-break chain as any re-vote; the winner's posterior is the run's
confidence. Its spec records the weights the fit learned (each model's log-odds of its estimated
accuracy): a weighted majority under them is the one-coin decision.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

from core.analysis import Bin, VoterIndependence, expected_calibration_error, reliability_bins
from core.analysis.reliability import (
    AggregateScore,
    ModelReliability,
    ReliabilityFit,
    calibration_points,
    compare_aggregates,
    effective_voters_of,
    fit_reliability,
)
from core.errors import PolicyError
from core.experiments.curve import gold_of
from core.formats import AnswerFormat
from core.panel import Panel
from core.policy import Aggregation, Policy
from core.result import CallResult, CallStatus, RunResult
from core.sim.scenarios import Scenario
from core.spec import RunSpec
from core.store import BatchAnswers, Store, WriteBatch
from core.store.tables import call_row, finish_row
from core.task import Task
from core.voting import count_votes, decide

MIN_WEIGHT = 0.001
"""A model at or below chance still gets a positive weight: it counts next to nothing."""


class BatchReliability(BaseModel):
    """Who to trust in one batch, how independent the panel is, and whether it pays."""

    batch_id: str
    method: str
    labels: list[str]
    items: int
    votes: int
    known: int  # items clamped: reviews, and gold with clamp_gold
    clamp_gold: bool
    models: list[ModelReliability]
    weights: dict[str, float]
    independence: VoterIndependence
    independence_basis: Literal["gold", "fitted winners"]
    scores: list[AggregateScore]  # majority vs learned, on gold (empty without it or clamped)
    calibration: list[Bin]  # the confidence against accuracy on gold
    calibration_error: float | None
    calibration_items: int

    def sentence(self) -> str:
        """ "your 5 votes are worth 2.1 independent ones", or why it cannot be said."""
        against = "gold" if self.independence_basis == "gold" else "the fit's own winners"
        return voters_sentence(self.independence, against)


def voters_sentence(independence: VoterIndependence, against: str) -> str:
    """Kish's effective number of voters in one sentence, naming what errors were counted
    against (gold, or decisions that the models which err together pull their way)."""
    effective = independence.effective
    if effective is None:
        return "the effective number of voters is unknown: the models' errors never vary"
    return (
        f"your {independence.voters} votes are worth {effective:.1f} independent ones "
        f"(one per model; errors against {against})"
    )


def read_gold(answers: BatchAnswers, fmt: AnswerFormat) -> dict[str, str]:
    """The batch's gold in the form its votes are counted in, per run."""
    return {
        run_id: gold_of(fmt, label, [v for c in answers.votes.get(run_id, {}).values() for v in c])
        for run_id, label in answers.gold.items()
    }


def batch_independence(store: Store, batch_id: str) -> dict[str, Any]:
    """How many independent voters a batch's panel is worth, without a fit: errors against
    the gold where the batch has gold, else against each run's decided label (which the
    models that err together pull their way, so that reading is optimistic)."""
    answers = store.batch_answers(batch_id)
    gold = read_gold(answers, store.get_batch(batch_id).spec.task.format)
    basis = "gold" if gold else "decisions"
    reference: Mapping[str, str | None] = gold or {
        row.run_id: row.label for row in store.batch_runs(batch_id)
    }
    independence = effective_voters_of(answers.votes, answers.models, reference)
    return {
        **independence.model_dump(),
        "basis": basis,
        "sentence": voters_sentence(independence, basis),
    }


def batch_reliability(
    store: Store, batch_id: str, *, method: str = "dawid-skene", clamp_gold: bool = False
) -> tuple[BatchReliability, ReliabilityFit]:
    """Fit a stored batch; the report and the fit itself (its per-run posteriors)."""
    info = store.get_batch(batch_id)
    fmt = info.spec.task.format
    if not fmt.votable:
        raise PolicyError("learned reliability needs votes: a text batch has none")
    answers = store.batch_answers(batch_id)
    gold = read_gold(answers, fmt)
    known = {**(gold if clamp_gold else {}), **answers.resolved}
    fit = fit_reliability(answers.votes, known, method=method)
    scored = {} if clamp_gold else gold
    points = calibration_points(fit, scored)
    independence = (
        effective_voters_of(answers.votes, answers.models, gold) if gold else fit.independence
    )
    scores = (
        compare_aggregates(answers.votes, scored, known=answers.resolved, calls=answers.calls)
        if scored
        else []
    )
    report = BatchReliability(
        batch_id=batch_id,
        method=fit.method,
        labels=fit.labels,
        items=fit.items,
        votes=fit.votes,
        known=fit.known,
        clamp_gold=clamp_gold,
        models=fit.models,
        weights=fit.weights(),
        independence=independence,
        independence_basis="gold" if gold else "fitted winners",
        scores=scores,
        calibration=reliability_bins(points) if points else [],
        calibration_error=expected_calibration_error(points) if points else None,
        calibration_items=len(points),
    )
    return report, fit


def learned_spec(spec: RunSpec, weights: Mapping[str, float], policy: Policy | None) -> RunSpec:
    """``spec`` as a learned re-vote records it: weighted majority, every model of the panel at
    its learned weight (``MIN_WEIGHT`` at least, and for a model the fit never saw); quorum,
    early stop and tie-break chain come from ``policy`` (default: the run's own)."""
    base = policy or spec.policy
    models = tuple(
        m.model_copy(update={"weight": round(max(weights.get(m.name, 0.0), MIN_WEIGHT), 6)})
        for m in spec.panel.models
    )
    return spec.model_copy(
        update={
            "panel": Panel(models=models, n=spec.panel.n),
            "policy": base.model_copy(update={"aggregation": Aggregation.WEIGHTED, "k": None}),
        }
    )


class LearnedRevote(BaseModel):
    """A batch re-voted under learned weights: the fit, the new runs and their confidence."""

    reliability: BatchReliability
    runs: list[RunResult]
    confidence: dict[str, float | None]  # new run id -> the winner's posterior (None: no winner)

    def to_json(self) -> dict[str, Any]:
        return {
            "reliability": self.reliability.model_dump(mode="json"),
            "runs": [r.to_json() for r in self.runs],
            "confidence": self.confidence,
        }


def store_scenario(
    store: Store, scenario: Scenario, items: int, seed: int = 0, *, source: str = "scenario"
) -> str:
    """A sim scenario's answers written as a finished batch, one run per item, decided by
    plain majority: a stored batch to fit, for the benchmark, the tests and demos."""
    spec = RunSpec(
        task=Task.for_labels(list(scenario.labels), name=scenario.name),
        panel=Panel.build([f"sim:{m.name}" for m in scenario.panel]),
        policy=Policy(),
    )
    bid = store.create_batch(
        name=f"scenario {scenario.name}", source=source, spec=spec, concurrency=1, total=items
    )
    fmt = spec.task.format
    batch = WriteBatch()
    for index, (text, replies) in enumerate(scenario.answers(items, seed)):
        calls = [
            CallResult(
                slot=slot,
                model=f"sim:{model.name}",
                status=CallStatus.OK if reply.answer is not None else CallStatus.INVALID,
                answer=reply.answer,
                raw=reply.text,
            )
            for slot, (model, reply) in enumerate(zip(scenario.panel, replies, strict=True))
        ]
        result = RunResult(
            run_id=f"{bid}-{index}",
            input=text,
            spec=spec,
            decision=decide(calls, spec.policy, fmt, spec.panel.weights),
            votes=count_votes(calls, fmt),
            calls=calls,
            cost_usd=None,
            latency_ms=0.0,
            batch_id=bid,
            item_id=str(index),
            gold=replies[0].gold,
        )
        batch.finishes.append(
            finish_row(result, source=source, finished_at=time.time(), item_index=index)
        )
        batch.calls.extend(call_row(result.run_id, c) for c in calls)
        if len(batch.finishes) >= 2000:
            store.write(batch)
            batch = WriteBatch()
    store.write(batch)
    store.set_batch_status(bid, "done")
    return bid


def learned_summary(store: Store, batch_id: str, learned: LearnedRevote) -> dict[str, Any]:
    """What a learned second pass did to a batch (the summary's own ``accuracy`` is the first
    pass's): decisions changed, its accuracy on gold, the mean confidence, and the fit."""
    fmt = store.get_batch(batch_id).spec.task.format
    first = [row for row in store.batch_runs(batch_id) if row.status != "running"]
    changed = correct = with_gold = 0
    for before, run in zip(first, learned.runs, strict=True):  # revote_learned keeps the order
        changed += before.label != run.decision.label
        if run.gold is not None:
            with_gold += 1
            correct += fmt.gold_matches(run.decision.label, run.gold)
    confidences = [c for c in learned.confidence.values() if c is not None]
    report = learned.reliability
    return {
        "method": report.method,
        "runs": [r.run_id for r in learned.runs],
        "statuses": {
            s: sum(r.decision.status.value == s for r in learned.runs)
            for s in sorted({r.decision.status.value for r in learned.runs})
        },
        "changed": changed,
        "accuracy": correct / with_gold if with_gold else None,
        "mean_confidence": sum(confidences) / len(confidences) if confidences else None,
        "reliability": report.model_dump(mode="json"),
    }
