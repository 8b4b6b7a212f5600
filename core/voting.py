"""Aggregation: from finished calls to a decision. Pure functions, no I/O, no clock.

The rules, in the order ``decide`` applies them:

1. Fastest-acceptable takes the acceptable ``ok`` call that ended first; nothing else counts.
2. Free text is never voted on (``check_policy``): votes on prose do not converge.
3. No valid vote, or fewer than ``quorum.min_valid``: ``failed``.
4. The vote itself. Every vote differing (more than one of them) is ``no_convergence``; leaders
   with equal counts (or weights) are a ``tie``; a threshold not met (strict majority, k-of-N,
   unanimity) is ``failed`` unless it is a tie. Ties are reported, never broken by list order:
   breaking them is the tie-break chain's job (``apply_offline_branch`` and the engine).
5. JSON answers are voted field by field under the same rule (an answer lacking a field votes
   ``MISSING`` there); the decided answer is the object of the field winners.

Cancelled calls never count: they are the calls an early stop or a fastest win cut short.
Weights are summed as exact fractions of their decimal form, so 0.1 + 0.2 ties with 0.3 and
the result does not depend on the order the calls landed in.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from core.errors import PolicyError
from core.formats import (
    MISSING,
    AnswerFormat,
    JsonFormat,
    LabelFormat,
    NumberFormat,
    YesNoFormat,
    canonical_json,
)
from core.policy import Acceptance, Aggregation, Policy, TieBreak
from core.result import CallResult, CallStatus, Decision, DecisionStatus

TEXT_REFUSED = (
    "majority vote on free text is refused: vote on labels, structured output or yes/no; "
    "use fastest-acceptable for prose"
)

_FAILED_CALLS = (CallStatus.ERROR, CallStatus.TIMEOUT)


# -- validation up front ---------------------------------------------------------------------


@lru_cache(maxsize=64)
def _schema_validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as err:
        raise PolicyError(f"bad acceptance schema: {err.message}") from None
    return cls(schema)


def check_policy(policy: Policy, fmt: AnswerFormat) -> None:
    """Raise PolicyError for a policy that cannot apply to ``fmt``, before any call is made."""
    if policy.aggregation != Aggregation.FASTEST and not fmt.votable:
        raise PolicyError(TEXT_REFUSED)
    accept = policy.accept
    if accept is None:
        return
    if accept.regex is not None:
        try:
            re.compile(accept.regex)
        except re.error as err:
            raise PolicyError(f"bad acceptance regex {accept.regex!r}: {err}") from None
    if accept.json_schema is not None:
        _schema_validator(canonical_json(accept.json_schema))
    if accept.labels is not None and isinstance(fmt, LabelFormat | YesNoFormat):
        for label in accept.labels:
            if not fmt.parse(label).ok:
                raise PolicyError(f"acceptance label {label!r} is not an answer of this task")


def _weight(weights: Mapping[str, float] | None, model: str) -> Fraction:
    return _exact(1.0 if weights is None else weights.get(model, 1.0), model)


def _exact(weight: float, what: str) -> Fraction:
    if not math.isfinite(weight) or weight < 0:
        raise PolicyError(f"weight of {what} must be a number >= 0, got {weight}")
    return Fraction(repr(float(weight)))


# -- counting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Count:
    votes: list[tuple[str, Fraction]]  # (grouped vote, weight) of the ok calls, in call order
    invalid: int
    failed: int
    grouping_note: str | None = None  # why the format's grouping of the votes was ambiguous

    @property
    def valid(self) -> int:
        return len(self.votes)

    def denominator(self, policy: Policy) -> int:
        """Counted votes for strict majority and unanimity: invalid and failed calls join
        only when the quorum says so, and then work as votes against."""
        quorum = policy.quorum
        return (
            self.valid
            + (self.invalid if quorum.count_invalid else 0)
            + (self.failed if quorum.count_errors else 0)
        )

    def summary(self) -> str:
        return f"{self.valid} valid, {self.invalid} invalid, {self.failed} failed"


def _answered(calls: Sequence[CallResult]) -> list[CallResult]:
    return [c for c in calls if c.status == CallStatus.OK and c.answer is not None]


def _count(
    calls: Sequence[CallResult],
    fmt: AnswerFormat,
    weights: Mapping[str, float] | None,
) -> _Count:
    answered = [(c.answer, c.model) for c in _answered(calls) if c.answer is not None]
    grouping = fmt.grouping([answer for answer, _ in answered])
    votes = [(grouping.mapping[answer], _weight(weights, model)) for answer, model in answered]
    return _Count(
        votes=votes,
        invalid=sum(1 for c in calls if c.status == CallStatus.INVALID),
        failed=sum(1 for c in calls if c.status in _FAILED_CALLS),
        grouping_note=grouping.ambiguous,
    )


def _ranked(counts: Mapping[str, int]) -> dict[str, int]:
    """By count, most first; equal counts keep the order they first appeared in."""
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def count_votes(calls: Sequence[CallResult], fmt: AnswerFormat) -> dict[str, int]:
    """Votes per answer (after the format's grouping), most first, then by first appearance."""
    answered = [c.answer for c in _answered(calls) if c.answer is not None]
    mapping = fmt.group(answered)
    counts: dict[str, int] = {}
    for answer in answered:
        key = mapping[answer]
        counts[key] = counts.get(key, 0) + 1
    return _ranked(counts)


def _field_names(objects: Sequence[Mapping[str, str]]) -> list[str]:
    return sorted({name for obj in objects for name in obj})


def field_votes(calls: Sequence[CallResult], fmt: AnswerFormat) -> dict[str, dict[str, int]] | None:
    """JSON answers: votes per top-level field (``MISSING`` where an answer lacks it)."""
    if not isinstance(fmt, JsonFormat):
        return None
    objects = [fmt.fields(c.answer) for c in _answered(calls) if c.answer is not None]
    out: dict[str, dict[str, int]] = {}
    for name in _field_names(objects):
        counts: dict[str, int] = {}
        for obj in objects:
            value = obj.get(name, MISSING)
            counts[value] = counts.get(value, 0) + 1
        out[name] = _ranked(counts)
    return out


# -- one race: a set of votes under one aggregation ----------------------------------------------


@dataclass(frozen=True)
class _Race:
    status: DecisionStatus
    label: str | None
    margin: float | None
    reason: str
    tied: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Standing:
    counts: dict[str, int]
    scores: dict[str, Fraction]  # counts, or summed weights for a weighted vote
    order: list[str]  # by score, most first; equal scores by first appearance

    @classmethod
    def of(cls, votes: Sequence[tuple[str, Fraction]], weighted: bool) -> _Standing:
        counts: dict[str, int] = {}
        scores: dict[str, Fraction] = {}
        for value, weight in votes:
            counts[value] = counts.get(value, 0) + 1
            scores[value] = scores.get(value, Fraction(0)) + (weight if weighted else 1)
        order = sorted(scores, key=lambda v: -scores[v])
        return cls(counts=counts, scores=scores, order=order)

    @property
    def top(self) -> str:
        return self.order[0]

    @property
    def runner_up(self) -> Fraction:
        return self.scores[self.order[1]] if len(self.order) > 1 else Fraction(0)

    @property
    def leaders(self) -> list[str]:
        best = self.scores[self.top]
        return [v for v in self.order if self.scores[v] == best]


def _num(value: Fraction) -> str:
    return f"{float(value):g}"


def _race(votes: Sequence[tuple[str, Fraction]], denominator: int, policy: Policy) -> _Race:
    """The outcome of one set of votes (the answers, or one field of JSON answers)."""
    agg = policy.aggregation
    standing = _Standing.of(votes, weighted=agg == Aggregation.WEIGHTED)
    valid = len(votes)
    top, leaders = standing.top, standing.leaders
    top_count = standing.counts[top]
    margin = float(standing.scores[top] - standing.runner_up)

    def decided(reason: str) -> _Race:
        return _Race(DecisionStatus.DECIDED, top, margin, reason)

    if agg == Aggregation.STRICT and 2 * top_count > denominator:
        return decided(f"{top}: {top_count} of {denominator} counted votes, more than half")
    if agg == Aggregation.UNANIMOUS and len(standing.counts) == 1:
        if valid == denominator:
            return decided(f"{top}: all {valid} counted votes agree")
        return _Race(
            DecisionStatus.FAILED,
            None,
            margin,
            f"not unanimous: {top} has {top_count} of {denominator} counted votes "
            "(invalid or failed calls count against)",
        )
    if valid > 2 and len(standing.counts) == valid:
        return _Race(
            DecisionStatus.NO_CONVERGENCE,
            None,
            0.0,
            f"no convergence: all {valid} votes differ",
            tied=list(standing.order),
        )
    if len(leaders) > 1:
        score = _num(standing.scores[top])
        unit = "weight" if agg == Aggregation.WEIGHTED else "votes"
        return _Race(
            DecisionStatus.TIE,
            None,
            0.0,
            f"tie between {' | '.join(leaders)} at {score} {unit} each",
            tied=leaders,
        )
    if agg in (Aggregation.MAJORITY, Aggregation.WEIGHTED):
        if agg == Aggregation.WEIGHTED:
            total = _num(sum(standing.scores.values(), Fraction(0)))
            return decided(
                f"{top}: weight {_num(standing.scores[top])} of {total} "
                f"({top_count} of {valid} votes), margin {margin:g}"
            )
        return decided(f"{top}: {top_count} of {valid} votes, margin {margin:g}")
    if agg == Aggregation.AT_LEAST:
        k = policy.k or 1
        if top_count >= k:
            return decided(f"{top}: {top_count} votes, at least {k}, margin {margin:g}")
        return _Race(
            DecisionStatus.FAILED,
            None,
            margin,
            f"no answer reached {k} votes: {top} has {top_count}",
        )
    if agg == Aggregation.STRICT:
        return _Race(
            DecisionStatus.FAILED,
            None,
            margin,
            f"no strict majority: {top} has {top_count} of {denominator} counted votes",
        )
    spread = ", ".join(f"{v} {c}" for v, c in _ranked(standing.counts).items())
    return _Race(DecisionStatus.FAILED, None, margin, f"not unanimous: {spread}")


def _robust(
    votes: Sequence[tuple[str, Fraction]],
    denominator: int,
    remaining: Sequence[Fraction],
    policy: Policy,
) -> bool:
    """Whether a race now decided stays decided for the same answer whatever the remaining
    calls bring. The worst case is every remaining call voting for the runner-up (or, for the
    thresholds, against the leader): if the leader survives that, it survives everything."""
    agg = policy.aggregation
    standing = _Standing.of(votes, weighted=agg == Aggregation.WEIGHTED)
    if len(standing.leaders) != 1:
        return False
    top = standing.top
    top_count = standing.counts[top]
    rest = len(remaining)
    if agg == Aggregation.MAJORITY:
        return top_count > standing.runner_up + rest
    if agg == Aggregation.WEIGHTED:
        # While every vote differs, enough new different ones make it "no convergence".
        could_diverge = top_count == 1 and len(votes) + rest > 2
        pending = sum(remaining, Fraction(0))
        return not could_diverge and standing.scores[top] > standing.runner_up + pending
    if agg == Aggregation.STRICT:
        return 2 * top_count > denominator + rest
    if agg == Aggregation.AT_LEAST:
        return top_count >= (policy.k or 1) and top_count > standing.runner_up + rest
    return False  # unanimity can be broken by any one more vote


# -- decisions ------------------------------------------------------------------------------


def acceptable(call: CallResult, acceptance: Acceptance | None, fmt: AnswerFormat) -> bool:
    """Whether a call's answer may win fastest-acceptable: an ``ok`` call, passing every check.

    ``regex`` must match the WHOLE normalised answer (``re.fullmatch``, with ``.`` matching
    newlines too), so ``\\d+`` does not accept "3 or 4". ``json_schema`` validates the parsed
    answer: the object for json, the number for number, the answer string otherwise. ``labels``
    is read through the format, so a synonym names its label.
    """
    if call.status != CallStatus.OK or call.answer is None:
        return False
    if acceptance is None:
        return True
    answer = call.answer
    if acceptance.regex is not None and re.fullmatch(acceptance.regex, answer, re.DOTALL) is None:
        return False
    if acceptance.labels is not None:
        allowed = set(acceptance.labels)
        if isinstance(fmt, LabelFormat | YesNoFormat):
            allowed |= {p.value for p in map(fmt.parse, acceptance.labels) if p.value}
        if answer not in allowed:
            return False
    if acceptance.json_schema is not None:
        validator = _schema_validator(canonical_json(acceptance.json_schema))
        instance: object = answer
        if isinstance(fmt, JsonFormat | NumberFormat):
            try:
                instance = json.loads(answer)
            except json.JSONDecodeError:
                return False
        if not validator.is_valid(instance):
            return False
    return True


def _fastest(calls: Sequence[CallResult], policy: Policy, fmt: AnswerFormat) -> Decision:
    winners = [c for c in calls if acceptable(c, policy.accept, fmt)]
    if not winners:
        count = _count(calls, fmt, None)
        refused = count.valid
        return Decision(
            status=DecisionStatus.FAILED,
            reason=(
                f"no acceptable answer: {refused} answered but not accepted, "
                f"{count.invalid} invalid, {count.failed} failed"
            ),
        )
    win = min(winners, key=lambda c: (math.inf if c.ended_at is None else c.ended_at, c.slot))
    return Decision(
        status=DecisionStatus.DECIDED,
        label=win.answer,
        reason=f"fastest acceptable answer: slot {win.slot} ({win.model})",
    )


def _quorum_failure(count: _Count, policy: Policy) -> Decision | None:
    if count.valid == 0:
        return Decision(status=DecisionStatus.FAILED, reason=f"no valid vote ({count.summary()})")
    need = policy.quorum.min_valid
    if count.valid < need:
        return Decision(
            status=DecisionStatus.FAILED,
            reason=f"no quorum: {count.valid} valid votes, {need} needed ({count.summary()})",
        )
    return None


def _field_races(count: _Count, fmt: JsonFormat, policy: Policy) -> dict[str, _Race]:
    objects = [(fmt.fields(value), weight) for value, weight in count.votes]
    denominator = count.denominator(policy)
    return {
        name: _race([(obj.get(name, MISSING), w) for obj, w in objects], denominator, policy)
        for name in _field_names([obj for obj, _ in objects])
    }


def _decide_json(count: _Count, fmt: JsonFormat, policy: Policy) -> Decision:
    """Each top-level field is its own race; the answer is the object of the field winners."""
    races = _field_races(count, fmt, policy)
    if not races:  # every answer is {}: the whole object is the only race
        race = _race(count.votes, count.denominator(policy), policy)
        return Decision(
            status=race.status,
            label=race.label,
            margin=race.margin,
            reason=race.reason,
            tied=race.tied,
            fields={},
        )
    winners: dict[str, str | None] = {
        name: r.label if r.status == DecisionStatus.DECIDED and r.label != MISSING else None
        for name, r in races.items()
    }
    margins = [r.margin for r in races.values() if r.margin is not None]
    margin = min(margins) if margins else None
    for status in (DecisionStatus.FAILED, DecisionStatus.NO_CONVERGENCE, DecisionStatus.TIE):
        stuck = {name: r for name, r in races.items() if r.status == status}
        if stuck:
            return Decision(
                status=status,
                margin=margin,
                reason="; ".join(f"{name}: {r.reason}" for name, r in stuck.items()),
                tied=[f"{n}: {' | '.join(sorted(r.tied))}" for n, r in stuck.items() if r.tied],
                fields=winners,
            )
    answer = {name: json.loads(v) for name, v in winners.items() if v is not None}
    problem = fmt.schema_problem(answer)
    if problem is not None:
        return Decision(
            status=DecisionStatus.FAILED,
            margin=margin,
            reason=f"the field winners do not form a valid answer: {problem}",
            fields=winners,
        )
    return Decision(
        status=DecisionStatus.DECIDED,
        label=canonical_json(answer),
        margin=margin,
        reason=f"decided field by field: {len(races)} fields, smallest margin {margin:g}",
        fields=winners,
    )


def decide(
    calls: Sequence[CallResult],
    policy: Policy,
    fmt: AnswerFormat,
    weights: Mapping[str, float] | None = None,
) -> Decision:
    """The decision the calls alone give, before any tie-break. ``weights`` maps a call's
    model name to its weight (default 1.0) and only matters for a weighted vote."""
    if policy.aggregation == Aggregation.FASTEST:
        return _fastest(calls, policy, fmt)
    check_policy(policy, fmt)
    count = _count(calls, fmt, weights)
    failure = _quorum_failure(count, policy)
    if failure is not None:
        return failure
    if isinstance(fmt, JsonFormat):
        return _decide_json(count, fmt, policy)
    race = _race(count.votes, count.denominator(policy), policy)
    reason = race.reason if count.grouping_note is None else f"{race.reason}; {count.grouping_note}"
    return Decision(
        status=race.status, label=race.label, margin=race.margin, reason=reason, tied=race.tied
    )


def is_settled(
    calls: Sequence[CallResult],
    remaining: Sequence[float],
    policy: Policy,
    fmt: AnswerFormat,
    weights: Mapping[str, float] | None = None,
) -> bool:
    """Whether the calls still outstanding can no longer change the decision (its status and
    label), so they may be cancelled. ``calls`` are the finished calls; ``remaining`` holds one
    weight per outstanding call, each of which may yet become any vote, an invalid reply or a
    failure. Exact for every count-based rule, and never True in doubt: numbers with a
    tolerance (a new vote can regroup the old ones) only settle when nothing is outstanding.
    Fastest-acceptable is the engine's own business: always False."""
    if policy.aggregation == Aggregation.FASTEST:
        return False
    check_policy(policy, fmt)
    pending = [_exact(w, "an outstanding call") for w in remaining]
    if not pending:
        return True
    count = _count(calls, fmt, weights)
    if count.valid + len(pending) < policy.quorum.min_valid:
        return True  # failed whatever comes
    if isinstance(fmt, NumberFormat) and fmt.tolerance > 0:
        return False
    if decide(calls, policy, fmt, weights).status != DecisionStatus.DECIDED:
        return False
    denominator = count.denominator(policy)
    if not isinstance(fmt, JsonFormat):
        return _robust(count.votes, denominator, pending, policy)
    objects = [(fmt.fields(value), weight) for value, weight in count.votes]
    names = _field_names([obj for obj, _ in objects])
    # ``None`` stands for a field no answer has yet: every vote so far is MISSING there, and it
    # must stay missing whatever the outstanding answers hold. A safe known field implies this;
    # it decides alone when every answer so far is ``{}``.
    for name in [*names, None]:
        votes = [(MISSING if name is None else obj.get(name, MISSING), w) for obj, w in objects]
        if not _robust(votes, denominator, pending, policy):
            return False
    return True


# -- tie-breaks that need no model call -------------------------------------------------------


def record_branch(decision: Decision, text: str) -> Decision:
    """The decision with one more tie-break branch noted, in order."""
    return decision.model_copy(update={"branches": [*decision.branches, text]})


def apply_offline_branch(
    decision: Decision,
    branch: TieBreak,
    calls: Sequence[CallResult],
    fmt: AnswerFormat,
) -> Decision | None:
    """Apply ``conservative``, ``human`` or ``abstain`` to a tie (or a run with no convergence).

    Returns ``None`` when the branch does not apply, so the chain goes on: ``escalate`` and
    ``expand`` (they need calls: the engine runs them and decides again), a decision that is
    not a tie, or a conservative order that ranks none of the tied answers.
    ``calls`` is accepted so every branch sees the same inputs; these three need only the tie.
    """
    del calls
    if decision.status not in (DecisionStatus.TIE, DecisionStatus.NO_CONVERGENCE):
        return None
    tied = decision.tied
    shown = " | ".join(tied) or "no answers"
    if branch.kind == "conservative":
        ranked = [
            (rank, label) for label in tied if (rank := fmt.conservative_rank(label)) is not None
        ]
        if not ranked:
            return None
        label = min(ranked)[1]
        return Decision(
            status=DecisionStatus.DECIDED,
            label=label,
            branches=[*decision.branches, "conservative"],
            margin=0.0,
            reason=f"tie between {shown} broken by the conservative order: {label}",
            tied=list(tied),
            fields=decision.fields,
        )
    if branch.kind == "human":
        return decision.model_copy(
            update={
                "status": DecisionStatus.NEEDS_REVIEW,
                "label": None,
                "branches": [*decision.branches, "human"],
                "reason": f"tie between {shown} sent to a reviewer",
            }
        )
    if branch.kind == "abstain":
        return decision.model_copy(
            update={
                "status": DecisionStatus.FAILED,
                "label": None,
                "branches": [*decision.branches, "abstain"],
                "reason": f"abstained on a tie between {shown}",
            }
        )
    return None
