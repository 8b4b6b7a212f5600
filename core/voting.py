"""Aggregation: from finished calls to a decision. Pure functions, no I/O, no clock.

The rules are the table of docs/decisions.md; ``decide`` applies its rows in order:

1. Fastest-acceptable takes the acceptable ``ok`` call that ended first; nothing else counts.
2. Free text is never voted on (``check_policy``): votes on prose do not converge.
3. The quorum: no valid vote, or fewer than it needs (``--min-valid``, by default half the
   panel rounded up for strict majority and unanimity, 1 otherwise): ``failed``, not open.
4. The threshold first (strict majority, at-least-k, unanimity): not met is ``failed`` with a
   reason starting "threshold not met", whether or not the votes also tie.
5. No convergence: three or more valid votes, every one different. Two that differ are a tie.
6. A tie: leaders with equal counts (or weights). Ties are reported, never broken by list order.
7. JSON answers are voted field by field under the same rules (an answer lacking a field votes
   ``MISSING`` there); the decided answer is the object of the field winners.
8. Every decided vote carries its confidence (``core.confidence``: the winner's Beta posterior
   against the runner-up; a JSON answer its weakest field's). With the chain's trigger
   ``escalate-below:C`` a decided vote below C is open too (``low_confidence``).
9. A learned re-vote passes the fit's posterior: its winner decides, and is the confidence.

A tie, a threshold not met, no convergence and a low confidence are *open*: the declared
tie-break chain takes each up the same way (``apply_offline_branch``, ``escalated``, and the
engine for the branches that need calls). Without a chain none of them is decided (a low
confidence needs one: ``check_policy``).

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

from core.confidence import leader_posterior, vote_confidence
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
from core.policy import TRIGGER, Acceptance, Aggregation, Policy, TieBreak
from core.result import (
    CallResult,
    CallStatus,
    Decision,
    DecisionStatus,
    Degraded,
    Outcome,
    QuorumCheck,
)

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


def check_policy(policy: Policy, fmt: AnswerFormat, panel: int | None = None) -> None:
    """Raise PolicyError for a policy that cannot apply to ``fmt`` (and, given its size, to
    the panel), before any call is made: where the panel and the policy first meet."""
    if policy.aggregation != Aggregation.FASTEST and not fmt.votable:
        raise PolicyError(TEXT_REFUSED)
    if any(b.kind == "conservative" for b in policy.tie_breaks) and not (
        fmt.has_conservative_order
    ):
        raise PolicyError(
            f"the conservative tie-break needs a conservative order, and this {fmt.kind} "
            "task has none: give one or drop the branch"
        )
    if policy.escalate_below is not None:
        if policy.aggregation == Aggregation.FASTEST:
            raise PolicyError(
                f"{TRIGGER} needs a vote's confidence, and fastest-acceptable takes no vote"
            )
        if not policy.tie_breaks:
            raise PolicyError(
                f"{TRIGGER}:{policy.escalate_below:g} sends low-confidence decisions through "
                "the tie-break chain, and there is none: add branches after it"
            )
    if panel is not None:
        _check_panel(policy, panel)
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


def _check_panel(policy: Policy, panel: int) -> None:
    extra = sum(b.k or 0 for b in policy.tie_breaks if b.kind == "expand")
    k = policy.k
    if policy.aggregation == Aggregation.AT_LEAST and k is not None and k > panel + extra:
        more = f" and expand adds {extra}" if extra else ""
        raise PolicyError(f"at least {k} votes for the winner: the panel has {panel}{more}")
    need = policy.quorum.min_valid
    if need is not None and need > panel and policy.aggregation != Aggregation.FASTEST:
        raise PolicyError(f"a quorum of {need} valid votes cannot be met by a panel of {panel}")


def quorum_need(policy: Policy, panel: int) -> tuple[int, str]:
    """The valid votes a decision needs, and where that number comes from."""
    if policy.aggregation == Aggregation.FASTEST:
        return 1, "one acceptable answer"
    given = policy.quorum.min_valid
    if given is not None:
        return given, "as set"
    if policy.aggregation in (Aggregation.STRICT, Aggregation.UNANIMOUS):
        return max(1, math.ceil(panel / 2)), "default: half the panel, rounded up"
    return 1, "default: one valid vote"


def _weight(weights: Mapping[str, float] | None, model: str) -> Fraction:
    return _exact(1.0 if weights is None else weights.get(model, 1.0), model)


def _exact(weight: float, what: str) -> Fraction:
    if not math.isfinite(weight) or weight < 0:
        raise PolicyError(f"weight of {what} must be a number >= 0, got {weight}")
    return _fraction(float(weight))


@lru_cache(maxsize=256)
def _fraction(weight: float) -> Fraction:
    """The exact value of a weight as written (0.1 is 1/10): panels reuse a few weights, and
    every vote of every run counts with one."""
    return Fraction(repr(weight))


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
    outcome: Outcome
    label: str | None
    margin: float | None
    reason: str
    tied: list[str] = field(default_factory=list)
    confidence: float | None = None  # the winner's Beta confidence, for a decided race


_STATUS = {
    Outcome.DECIDED: DecisionStatus.DECIDED,
    Outcome.TIE: DecisionStatus.TIE,
    Outcome.THRESHOLD_NOT_MET: DecisionStatus.FAILED,
    Outcome.NO_CONVERGENCE: DecisionStatus.NO_CONVERGENCE,
    Outcome.NO_QUORUM: DecisionStatus.FAILED,
    Outcome.NO_ANSWER: DecisionStatus.FAILED,
    Outcome.LOW_CONFIDENCE: DecisionStatus.DECIDED,  # the vote's winner, if no branch settles
}
"""The status an outcome has when no tie-break settles it (docs/decisions.md)."""


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
    """The outcome of one set of votes (the answers, or one field of JSON answers): the
    threshold first, then no convergence, then a tie (docs/decisions.md, rows 5-12)."""
    agg = policy.aggregation
    standing = _Standing.of(votes, weighted=agg == Aggregation.WEIGHTED)
    valid = len(votes)
    top, leaders = standing.top, standing.leaders
    top_count = standing.counts[top]
    margin = float(standing.scores[top] - standing.runner_up)
    who = f"{' | '.join(leaders)} {'have' if len(leaders) > 1 else 'has'}"
    each = " each" if len(leaders) > 1 else ""

    def decided(reason: str) -> _Race:
        confidence = vote_confidence(top, standing.counts)
        return _Race(Outcome.DECIDED, top, margin, reason, list(standing.order), confidence)

    def unmet(reason: str) -> _Race:
        return _Race(
            Outcome.THRESHOLD_NOT_MET,
            None,
            margin,
            f"threshold not met: {reason}",
            tied=list(standing.order),
        )

    if agg == Aggregation.STRICT:
        if 2 * top_count > denominator:
            return decided(f"{top}: {top_count} of {denominator} counted votes, more than half")
        return unmet(
            f"{who} {top_count} of {denominator} counted votes{each}, more than half needed"
        )
    if agg == Aggregation.UNANIMOUS:
        if len(standing.counts) > 1:
            spread = ", ".join(f"{v} {c}" for v, c in _ranked(standing.counts).items())
            return unmet(f"not unanimous: {spread}")
        if valid < denominator:
            return unmet(
                f"{top} has {top_count} of {denominator} counted votes, all needed "
                "(invalid or failed calls count against)"
            )
        return decided(f"{top}: all {valid} counted votes agree")
    k = policy.k or 1
    if agg == Aggregation.AT_LEAST and top_count < k:
        return unmet(f"{who} {top_count} votes{each}, {k} needed")
    if valid > 2 and len(standing.counts) == valid:
        return _Race(
            Outcome.NO_CONVERGENCE,
            None,
            0.0,
            f"no convergence: all {valid} votes differ",
            tied=list(standing.order),
        )
    if len(leaders) > 1:
        score = _num(standing.scores[top])
        unit = "weight" if agg == Aggregation.WEIGHTED else "votes"
        return _Race(
            Outcome.TIE,
            None,
            0.0,
            f"tie between {' | '.join(leaders)} at {score} {unit} each",
            tied=leaders,
        )
    if agg == Aggregation.WEIGHTED:
        total = _num(sum(standing.scores.values(), Fraction(0)))
        return decided(
            f"{top}: weight {_num(standing.scores[top])} of {total} "
            f"({top_count} of {valid} votes), margin {margin:g}"
        )
    if agg == Aggregation.AT_LEAST:
        return decided(f"{top}: {top_count} votes, at least {k}, margin {margin:g}")
    return decided(f"{top}: {top_count} of {valid} votes, margin {margin:g}")


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
    below = policy.escalate_below
    if below is not None:  # the worst case: every remaining call a vote for the strongest rival
        rival = max((c for v, c in standing.counts.items() if v != top), default=0)
        if leader_posterior(top_count, rival + rest) < below:
            return False
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
            outcome=Outcome.NO_ANSWER,
            reason=(
                f"no acceptable answer: {refused} answered but not accepted, "
                f"{count.invalid} invalid, {count.failed} failed"
            ),
        )
    win = min(winners, key=lambda c: (math.inf if c.ended_at is None else c.ended_at, c.slot))
    return Decision(
        status=DecisionStatus.DECIDED,
        outcome=Outcome.DECIDED,
        label=win.answer,
        reason=f"fastest acceptable answer: slot {win.slot} ({win.model})",
    )


def _quorum_failure(count: _Count, need: int) -> Decision | None:
    if count.valid == 0:
        reason = f"no valid vote ({count.summary()})"
    elif count.valid < need:
        votes = "vote" if count.valid == 1 else "votes"
        reason = f"no quorum: {count.valid} valid {votes}, {need} needed ({count.summary()})"
    else:
        return None
    return Decision(status=DecisionStatus.FAILED, outcome=Outcome.NO_QUORUM, reason=reason)


def _from_race(race: _Race, **extra: Any) -> Decision:
    decided = race.outcome == Outcome.DECIDED  # its tied: every answer, for the trigger
    return Decision(
        status=_STATUS[race.outcome],
        outcome=race.outcome,
        label=race.label,
        margin=race.margin,
        reason=race.reason,
        tied=race.tied,
        confidence=race.confidence if decided else None,
        **extra,
    )


def _field_races(count: _Count, fmt: JsonFormat, policy: Policy) -> dict[str, _Race]:
    objects = [(fmt.fields(value), weight) for value, weight in count.votes]
    denominator = count.denominator(policy)
    return {
        name: _race([(obj.get(name, MISSING), w) for obj, w in objects], denominator, policy)
        for name in _field_names([obj for obj, _ in objects])
    }


_STUCK = (Outcome.THRESHOLD_NOT_MET, Outcome.NO_CONVERGENCE, Outcome.TIE)
"""Which open field outcome a JSON answer takes when fields differ, first first."""


def _decide_json(count: _Count, fmt: JsonFormat, policy: Policy) -> Decision:
    """Each top-level field is its own race; the answer is the object of the field winners."""
    races = _field_races(count, fmt, policy)
    if not races:  # every answer is {}: the whole object is the only race
        return _from_race(_race(count.votes, count.denominator(policy), policy), fields={})
    winners: dict[str, str | None] = {
        name: r.label if r.outcome == Outcome.DECIDED and r.label != MISSING else None
        for name, r in races.items()
    }
    margins = [r.margin for r in races.values() if r.margin is not None]
    margin = min(margins) if margins else None
    for outcome in _STUCK:
        stuck = {name: r for name, r in races.items() if r.outcome == outcome}
        if stuck:
            return Decision(
                status=_STATUS[outcome],
                outcome=outcome,
                margin=margin,
                reason="; ".join(f"{name}: {r.reason}" for name, r in stuck.items()),
                tied=[f"{n}: {' | '.join(sorted(r.tied))}" for n, r in stuck.items() if r.tied],
                fields=winners,
            )
    answer = {name: json.loads(v) for name, v in winners.items() if v is not None}
    confidences = [r.confidence for r in races.values() if r.confidence is not None]
    confidence = min(confidences, default=None)  # the object is as sure as its weakest field
    problem = fmt.schema_problem(answer)
    if problem is not None:
        return Decision(
            status=DecisionStatus.FAILED,
            outcome=Outcome.NO_ANSWER,
            margin=margin,
            reason=f"the field winners do not form a valid answer: {problem}",
            fields=winners,
        )
    return Decision(
        status=DecisionStatus.DECIDED,
        outcome=Outcome.DECIDED,
        label=canonical_json(answer),
        margin=margin,
        reason=f"decided field by field: {len(races)} fields, smallest margin {margin:g}",
        # for the trigger: the answers of each field, most first
        tied=[f"{n}: {' | '.join(sorted(r.tied))}" for n, r in races.items()],
        fields=winners,
        confidence=confidence,
    )


def panel_size(calls: Sequence[CallResult]) -> int:
    """N: the calls of the panel phase (expansions and escalations are extra)."""
    return sum(1 for c in calls if c.phase == "panel")


SLOW_NOTE = "slow calls cut: these are often the strongest models"


def degradation(calls: Sequence[CallResult], policy: Policy) -> Degraded | None:
    """How far the vote fell short of the calls planned for it, or None when it did not.

    An early stop's cancellations do not count against it: it only cancels calls that cannot
    change the outcome. Fastest-acceptable's do: the decision rests on the quickest answer.
    """
    voted = [c for c in calls if c.phase != "escalate"]
    by = {s: sum(1 for c in voted if c.status == s) for s in CallStatus}
    unfinished = by[CallStatus.CANCELLED] + by[CallStatus.PENDING] + by[CallStatus.RUNNING]
    fastest = policy.aggregation == Aggregation.FASTEST
    early = policy.early_stop and not fastest
    cut = 0 if early else unfinished
    invalid, errors, timeouts = by[CallStatus.INVALID], by[CallStatus.ERROR], by[CallStatus.TIMEOUT]
    if not (invalid or errors or timeouts or cut):
        return None
    counted = len(_answered(voted))
    parts = [
        f"{n} {what}"
        for n, what in (
            (invalid, "invalid"),
            (errors, "failed"),
            (timeouts, "timed out at the call deadline"),
        )
        if n
    ]
    if cut:
        parts.append(f"fastest-acceptable cut {cut} slower" if fastest else f"{cut} cut")
    if early and unfinished:
        parts.append(f"{unfinished} stopped early (they could not change the outcome)")
    why = f"{counted} of {len(voted)} counted: {', '.join(parts)}"
    if timeouts or (fastest and cut):
        why += f"; {SLOW_NOTE}"
    return Degraded(
        planned=len(voted),
        counted=counted,
        invalid=invalid,
        errors=errors,
        timeouts=timeouts,
        cut=cut,
        why=why,
    )


POSTERIOR_TIE = 1e-9
"""Posteriors closer than this are equal: no winner (as in core.analysis.reliability)."""


def _posterior_race(count: _Count, posterior: Mapping[str, float]) -> _Race:
    """A learned re-vote: the label the fit's posterior puts highest, with that probability
    as its confidence; two labels at the same posterior are a tie (docs/decisions.md)."""
    counts: dict[str, int] = {}
    for value, _ in count.votes:
        counts[value] = counts.get(value, 0) + 1
    ranked = sorted(posterior.items(), key=lambda kv: -kv[1])
    if not ranked:
        raise PolicyError("a posterior needs at least one label")
    top, best = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0.0
    # a low confidence's candidates: every answer that got a vote, the likeliest first
    order = sorted(counts, key=lambda label: (-posterior.get(label, 0.0), -counts[label]))
    if best - second <= POSTERIOR_TIE:
        leaders = [label for label, p in ranked if best - p <= POSTERIOR_TIE]
        return _Race(
            Outcome.TIE,
            None,
            0.0,
            f"tie between {' | '.join(leaders)} at posterior {best:.3f} each",
            tied=leaders,
        )
    votes = f"{counts.get(top, 0)} of {count.valid} votes"
    return _Race(
        Outcome.DECIDED,
        top,
        best - second,
        f"{top}: posterior {best:.3f} of the learned reliability ({votes})",
        tied=order,
        confidence=best,
    )


def _trigger(decision: Decision, policy: Policy) -> Decision:
    """A decided vote below the policy's ``escalate-below`` confidence is open: the chain takes
    it up, and if no branch settles it the vote's winner stands (docs/decisions.md)."""
    if decision.outcome != Outcome.DECIDED:
        return decision
    below, confidence = policy.escalate_below, decision.confidence
    if below is None or confidence is None or confidence >= below:
        return decision.model_copy(update={"tied": []})
    return decision.model_copy(
        update={
            "outcome": Outcome.LOW_CONFIDENCE,
            "reason": f"low confidence: {confidence:.2f}, below {below:g}, for {decision.reason}",
        }
    )


def decide(
    calls: Sequence[CallResult],
    policy: Policy,
    fmt: AnswerFormat,
    weights: Mapping[str, float] | None = None,
    *,
    panel: int | None = None,
) -> Decision:
    """The decision the calls alone give, before any tie-break. ``weights`` maps a call's
    model name to its weight (default 1.0) and only matters for a weighted vote. ``panel``
    is N for the quorum, by default the calls of the panel phase. A policy's ``posterior``
    (label -> probability, from a fitted reliability model) decides instead of the count;
    the quorum and the chain stay."""
    posterior = policy.posterior
    n = panel_size(calls) if panel is None else panel
    need, rule = quorum_need(policy, n)
    if policy.aggregation == Aggregation.FASTEST:
        decision = _fastest(calls, policy, fmt)
        valid = len(_answered(calls))
    else:
        check_policy(policy, fmt)
        count = _count(calls, fmt, weights)
        valid = count.valid
        failure = _quorum_failure(count, need)
        if failure is not None:
            decision = failure
        elif posterior is not None:
            decision = _from_race(_posterior_race(count, posterior))
        elif isinstance(fmt, JsonFormat):
            decision = _decide_json(count, fmt, policy)
        else:
            decision = _from_race(_race(count.votes, count.denominator(policy), policy))
            if count.grouping_note is not None:
                decision.reason = f"{decision.reason}; {count.grouping_note}"
        decision = _trigger(decision, policy)
    quorum = QuorumCheck(need=need, valid=valid, panel=n, rule=rule)
    return decision.model_copy(update={"quorum": quorum, "degraded": degradation(calls, policy)})


def is_settled(
    calls: Sequence[CallResult],
    remaining: Sequence[float],
    policy: Policy,
    fmt: AnswerFormat,
    weights: Mapping[str, float] | None = None,
) -> bool:
    """Whether the calls still outstanding can no longer change the decision (its status and
    label), so they may be cancelled. ``calls`` are the finished calls of the panel;
    ``remaining`` holds one weight per outstanding call, each of which may yet become any
    vote, an invalid reply or a failure. Exact for every count-based rule, and never True in
    doubt: numbers with a tolerance (a new vote can regroup the old ones) only settle when
    nothing is outstanding. Fastest-acceptable is the engine's own business: always False."""
    if policy.aggregation == Aggregation.FASTEST:
        return False
    check_policy(policy, fmt)
    pending = [_exact(w, "an outstanding call") for w in remaining]
    if not pending:
        return True
    panel = len(calls) + len(pending)
    count = _count(calls, fmt, weights)
    if count.valid + len(pending) < quorum_need(policy, panel)[0]:
        return True  # failed whatever comes
    if isinstance(fmt, NumberFormat) and fmt.tolerance > 0:
        return False
    if decide(calls, policy, fmt, weights, panel=panel).outcome != Outcome.DECIDED:
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


# -- the tie-break chain: the branches that need no model call, and an escalation's answer -----


_PASSED_ON = re.compile(r"^expand:\d+$| \((not applicable|error|timeout|invalid|cancelled)\)$")
"""Branches that hand the open outcome on: an expansion retook the vote, or a branch did not
apply (``conservative (not applicable)``, ``escalate:MODEL (error)``)."""


def passed_on(branch: TieBreak, why: str) -> str:
    """How a branch that did not settle the run is recorded."""
    return f"{branch} ({why})"


def is_open(decision: Decision) -> bool:
    """Whether the tie-break chain takes this decision up: a tie, a threshold not met, or no
    convergence, as long as no branch has settled it."""
    if decision.outcome is None or not decision.outcome.open:
        return False
    return not decision.branches or _PASSED_ON.search(decision.branches[-1]) is not None


def record_branch(decision: Decision, text: str) -> Decision:
    """The decision with one more tie-break branch noted, in order."""
    return decision.model_copy(update={"branches": [*decision.branches, text]})


def _settled(
    decision: Decision, branch: str, status: DecisionStatus, label: str | None, how: str
) -> Decision:
    same = label is not None and label == decision.label  # a branch that kept the vote's winner
    return decision.model_copy(
        update={
            "status": status,
            "label": label,
            "confidence": decision.confidence if same else None,
            "branches": [*decision.branches, branch],
            "reason": f"{decision.reason}; {how}",
        }
    )


def apply_offline_branch(
    decision: Decision,
    branch: TieBreak,
    calls: Sequence[CallResult],
    fmt: AnswerFormat,
) -> Decision | None:
    """Apply ``conservative``, ``human`` or ``abstain`` to an open decision: a tie, a
    threshold not met or no convergence, all alike (docs/decisions.md).

    Returns ``None`` when the branch does not apply, so the chain goes on: ``escalate`` and
    ``expand`` (they need calls: the engine runs them and decides again), a decision that is
    not open, or a conservative order that ranks none of the candidates.
    ``calls`` is accepted so every branch sees the same inputs; these three need only the
    candidates.
    """
    del calls
    if not is_open(decision):
        return None
    if branch.kind == "conservative":
        ranked = [
            (rank, label)
            for label in decision.tied
            if (rank := fmt.conservative_rank(label)) is not None
        ]
        if not ranked:
            return None
        label = min(ranked)[1]
        return _settled(
            decision,
            "conservative",
            DecisionStatus.DECIDED,
            label,
            f"broken by the conservative order: {label}",
        )
    if branch.kind == "human":
        how = "sent to two blind reviewers" if branch.k == 2 else "sent to a reviewer"
        return _settled(decision, str(branch), DecisionStatus.NEEDS_REVIEW, None, how)
    if branch.kind == "abstain":
        return _settled(decision, "abstain", DecisionStatus.FAILED, None, "abstained")
    return None


def escalated(decision: Decision, branch: TieBreak, call: CallResult) -> Decision | None:
    """An ``escalate`` branch's call settling an open decision: its answer, when it gave one
    (it is not a vote). ``None`` when the call failed, so the chain goes on."""
    if not is_open(decision) or call.status != CallStatus.OK or call.answer is None:
        return None
    return _settled(
        decision,
        str(branch),
        DecisionStatus.ESCALATED,
        call.answer,
        f"escalated to {branch.model}: {call.answer}",
    )
