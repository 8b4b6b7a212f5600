"""A reference decider written from the tables of docs/decisions.md alone.

It uses nothing of ``core.voting``: only the data types, and the answer format for what the
format owns (reading a vote's group, a field of a JSON answer, the conservative rank, the
schema). The property tests run it beside ``core.voting`` and the engine and compare.
Simple over fast: every rule is spelled out as the table says it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

from scipy.stats import beta

from core.formats import MISSING, AnswerFormat, JsonFormat
from core.policy import Policy
from core.result import CallResult

OPEN = ("tie", "threshold_not_met", "no_convergence", "low_confidence")
OWN_STATUS = {
    "decided": "decided",
    "low_confidence": "decided",
    "tie": "tie",
    "threshold_not_met": "failed",
    "no_convergence": "no_convergence",
    "no_quorum": "failed",
    "no_answer": "failed",
}
REASON_START = {
    "tie": "tie between",
    "threshold_not_met": "threshold not met",
    "no_convergence": "no convergence",
    "low_confidence": "low confidence",
}


@dataclass(frozen=True)
class Ref:
    """What the table says a run ends as."""

    outcome: str
    status: str
    label: str | None = None
    candidates: frozenset[str] = frozenset()
    branches: tuple[str, ...] = ()
    need: int = 1
    valid: int = 0
    panel: int = 0
    reason_starts: str = ""  # what the reason must start with ("" for no check)
    reason_ends: str = ""
    planned: int = 0
    counted: int = 0
    lost: dict[str, int] = field(default_factory=dict)  # invalid, errors, timeouts, cut
    degraded: bool = False
    confidence: float | None = None  # the winner's P(its rate beats the runner-up's)


# -- the words ------------------------------------------------------------------------------


def need_of(policy: Policy, n: int) -> int:
    agg = policy.aggregation.value
    if agg == "fastest":
        return 1
    if policy.quorum.min_valid is not None:
        return policy.quorum.min_valid
    if agg in ("strict", "unanimous"):
        return max(1, math.ceil(n / 2))
    return 1


def _valid(calls: Sequence[CallResult]) -> list[CallResult]:
    return [c for c in calls if c.status.value == "ok" and c.answer is not None]


def _degradation(calls: Sequence[CallResult], policy: Policy) -> tuple[int, int, dict[str, int]]:
    voted = [c for c in calls if c.phase != "escalate"]
    status = [c.status.value for c in voted]
    unfinished = sum(s in ("cancelled", "pending", "running") for s in status)
    early = policy.early_stop and policy.aggregation.value != "fastest"
    lost = {
        "invalid": status.count("invalid"),
        "errors": status.count("error"),
        "timeouts": status.count("timeout"),
        "cut": 0 if early else unfinished,
    }
    return len(voted), len(_valid(voted)), lost


# -- one race (rows 5-12) ------------------------------------------------------------------------


def confidence_of(winner: str, votes: Sequence[tuple[str, Fraction]]) -> float:
    """The Beta(1 + a, 1 + b) posterior mass above 1/2: a the winner's votes, b the most any
    other answer has."""
    count: dict[str, int] = {}
    for vote, _ in votes:
        count[vote] = count.get(vote, 0) + 1
    rival = max([c for v, c in count.items() if v != winner] + [0])
    return float(beta.sf(0.5, 1 + count.get(winner, 0), 1 + rival))


def _race(
    votes: Sequence[tuple[str, Fraction]], counted: int, policy: Policy
) -> tuple[str, str | None, frozenset[str]]:
    """(outcome, label, candidates) of one set of (vote, weight); a decided race's candidates
    are every answer (what a low confidence leaves in play)."""
    agg = policy.aggregation.value
    count: dict[str, int] = {}
    score: dict[str, Fraction] = {}
    for vote, weight in votes:
        count[vote] = count.get(vote, 0) + 1
        score[vote] = score.get(vote, Fraction(0)) + (weight if agg == "weighted" else 1)
    best = max(score.values())
    leaders = [v for v in score if score[v] == best]
    everyone = frozenset(score)
    # rows 5-9: the threshold first
    if agg == "strict":
        winner = [v for v in count if 2 * count[v] > counted]
        if winner:
            return "decided", winner[0], everyone
        return "threshold_not_met", None, everyone
    if agg == "unanimous":
        if len(count) == 1 and len(votes) == counted:
            return "decided", next(iter(count)), everyone
        return "threshold_not_met", None, everyone
    if agg == "at-least":
        k = policy.k or 1
        if max(count[v] for v in leaders) < k:
            return "threshold_not_met", None, everyone
    # row 10, 11, 12
    if len(votes) >= 3 and len(count) == len(votes):
        return "no_convergence", None, everyone
    if len(leaders) > 1:
        return "tie", None, frozenset(leaders)
    return "decided", leaders[0], everyone


def _weight(weights: Mapping[str, float] | None, model: str) -> Fraction:
    return Fraction(repr(float(1.0 if weights is None else weights.get(model, 1.0))))


# -- the vote (rows 1-14) ------------------------------------------------------------------------


def vote(
    calls: Sequence[CallResult],
    policy: Policy,
    fmt: AnswerFormat,
    weights: Mapping[str, float] | None,
    n: int,
    accept: Callable[[CallResult], bool] | None = None,
) -> Ref:
    """The outcome of the vote over ``calls`` (panel and expansion), before any branch."""
    planned, counted, lost = _degradation(calls, policy)
    degraded = any(lost.values())
    need = need_of(policy, n)
    base = Ref(
        outcome="",
        status="",
        need=need,
        panel=n,
        planned=planned,
        counted=counted,
        lost=lost,
        degraded=degraded,
    )
    valid = _valid(calls)
    base = replace(base, valid=len(valid))
    agg = policy.aggregation.value
    if agg == "fastest":  # rows 1, 2
        ok = [c for c in valid if accept is None or accept(c)]
        if not ok:
            return replace(base, outcome="no_answer", status="failed")
        win = min(ok, key=lambda c: (math.inf if c.ended_at is None else c.ended_at, c.slot))
        return replace(base, outcome="decided", status="decided", label=win.answer)
    # rows 3, 4
    if not valid:
        return replace(base, outcome="no_quorum", status="failed", reason_starts="no valid vote")
    if len(valid) < need:
        return replace(base, outcome="no_quorum", status="failed", reason_starts="no quorum")
    if policy.posterior is not None:  # row 16
        return _learned(base, [c.answer for c in valid if c.answer is not None], policy)
    invalid = sum(c.status.value == "invalid" for c in calls)
    failed = sum(c.status.value in ("error", "timeout") for c in calls)
    counted_d = (
        len(valid)
        + (invalid if policy.quorum.count_invalid else 0)
        + (failed if policy.quorum.count_errors else 0)
    )
    groups = fmt.group([c.answer for c in valid if c.answer is not None])
    votes = [(groups[c.answer], _weight(weights, c.model)) for c in valid if c.answer is not None]
    if isinstance(fmt, JsonFormat):
        return _json(base, votes, counted_d, policy, fmt)
    return _whole(base, votes, counted_d, policy)


def _whole(base: Ref, votes: Sequence[tuple[str, Fraction]], counted: int, policy: Policy) -> Ref:
    """The answers as one race (rows 5-12), then the trigger (row 15)."""
    outcome, label, candidates = _race(votes, counted, policy)
    confidence = None if label is None else confidence_of(label, votes)
    return _trigger(
        replace(
            base,
            outcome=outcome,
            status=OWN_STATUS[outcome],
            label=label,
            candidates=candidates,
            reason_starts=REASON_START.get(outcome, ""),
            confidence=confidence,
        ),
        policy,
    )


def _learned(base: Ref, answers: Sequence[str], policy: Policy) -> Ref:
    """Row 16: the label with the highest fitted posterior decides, with it as the confidence;
    two labels at the same posterior are a tie. Then row 15, whose candidates are the answers
    that got a vote."""
    posterior = policy.posterior or {}
    best = max(posterior.values())
    leaders = frozenset(label for label, p in posterior.items() if p == best)
    if len(leaders) > 1:
        return replace(
            base, outcome="tie", status="tie", candidates=leaders, reason_starts="tie between"
        )
    (label,) = leaders
    decided = replace(
        base,
        outcome="decided",
        status="decided",
        label=label,
        candidates=frozenset(answers),
        confidence=best,
    )
    return _trigger(decided, policy)


def _trigger(ref: Ref, policy: Policy) -> Ref:
    """Row 15: a decided vote whose confidence is below escalate-below is open."""
    below = policy.escalate_below
    if ref.outcome != "decided" or ref.confidence is None:
        return ref
    if below is not None and ref.confidence < below:
        return replace(ref, outcome="low_confidence", reason_starts="low confidence")
    return replace(ref, candidates=frozenset())


def _json(
    base: Ref,
    votes: Sequence[tuple[str, Fraction]],
    counted: int,
    policy: Policy,
    fmt: JsonFormat,
) -> Ref:
    """Row 13 and 14: every top-level field a race; the object open with its first stuck one."""
    objects = [(fmt.fields(v), w) for v, w in votes]
    names = sorted({name for obj, _ in objects for name in obj})
    if not names:  # every answer is {}: the whole object is the only race
        return _whole(base, votes, counted, policy)
    races = {
        name: _race([(obj.get(name, MISSING), w) for obj, w in objects], counted, policy)
        for name in names
    }
    for stuck in ("threshold_not_met", "no_convergence", "tie"):
        fields = [name for name, race in races.items() if race[0] == stuck]
        if fields:
            candidates = frozenset(
                f"{name}: {' | '.join(sorted(races[name][2]))}" for name in fields
            )
            return replace(base, outcome=stuck, status=OWN_STATUS[stuck], candidates=candidates)
    answer = {
        name: json.loads(race[1])
        for name, race in races.items()
        if race[1] is not None and race[1] != MISSING
    }
    if fmt.schema_problem(answer) is not None:
        return replace(base, outcome="no_answer", status="failed")
    label = json.dumps(answer, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    confidence = min(
        confidence_of(races[name][1] or "", [(obj.get(name, MISSING), w) for obj, w in objects])
        for name in names
    )
    every = frozenset(f"{name}: {' | '.join(sorted(races[name][2]))}" for name in names)
    decided = replace(
        base,
        outcome="decided",
        status="decided",
        label=label,
        candidates=every,
        confidence=confidence,
    )
    return _trigger(decided, policy)


# -- the chain -------------------------------------------------------------------------------


def run(
    panel_calls: Sequence[CallResult],
    policy: Policy,
    fmt: AnswerFormat,
    weights: Mapping[str, float] | None,
    *,
    expansions: Sequence[Sequence[CallResult]] = (),
    escalations: Sequence[CallResult] = (),
) -> Ref:
    """The whole run: the vote, then the declared chain for an open outcome. ``expansions``
    holds the calls each ``expand`` branch gets, ``escalations`` each ``escalate``'s call."""
    n = len(panel_calls)
    calls = list(panel_calls)
    ref = vote(calls, policy, fmt, weights, n)
    if ref.outcome not in OPEN:
        return ref
    more = list(expansions)
    asked = list(escalations)
    branches: list[str] = []
    for branch in policy.tie_breaks:
        name = str(branch)
        if branch.kind == "expand":
            calls += more.pop(0)
            branches.append(name)
            ref = replace(vote(calls, policy, fmt, weights, n), branches=tuple(branches))
            if ref.outcome not in OPEN:
                return replace(ref, reason_starts="", reason_ends=f"; after {name}")
            continue
        if branch.kind == "escalate":
            call = asked.pop(0)
            if call.status.value == "ok" and call.answer is not None:
                how = f"escalated to {branch.model}: {call.answer}"
                return _settled(ref, branches, name, "escalated", call.answer, how)
            branches.append(f"{name} ({call.status.value})")
            continue
        if branch.kind == "conservative":
            ranked = [
                (rank, c) for c in ref.candidates if (rank := fmt.conservative_rank(c)) is not None
            ]
            if ranked:
                label = min(ranked)[1]
                how = f"broken by the conservative order: {label}"
                return _settled(ref, branches, name, "decided", label, how)
            branches.append(f"{name} (not applicable)")
            continue
        if branch.kind == "human":
            how = "sent to two blind reviewers" if branch.k == 2 else "sent to a reviewer"
            return _settled(ref, branches, name, "needs_review", None, how)
        if branch.kind == "abstain":
            return _settled(ref, branches, name, "failed", None, "abstained")
    return replace(ref, branches=tuple(branches))


def _settled(
    ref: Ref, branches: list[str], name: str, status: str, label: str | None, how: str
) -> Ref:
    """A branch settled the run: the confidence stays only if it kept the vote's winner."""
    confidence = ref.confidence if label is not None and label == ref.label else None
    return replace(
        ref,
        status=status,
        label=label,
        branches=(*branches, name),
        reason_ends=f"; {how}",
        confidence=confidence,
    )


def refused(policy: Policy, fmt: AnswerFormat, n: int) -> bool:
    """Row 0: a policy refused before any call (the acceptance checks left aside)."""
    agg = policy.aggregation.value
    if agg != "fastest" and fmt.kind == "text":
        return True
    chain = policy.tie_breaks
    ordered = {
        "label": bool(getattr(fmt, "conservative_order", ())),
        "yesno": bool(getattr(fmt, "conservative", None)),
    }.get(fmt.kind, False)
    if any(b.kind == "conservative" for b in chain) and not ordered:
        return True
    if policy.escalate_below is not None and (agg == "fastest" or not chain):
        return True
    extra = sum(b.k or 0 for b in chain if b.kind == "expand")
    if agg == "at-least" and (policy.k or 1) > n + extra:
        return True
    q = policy.quorum.min_valid
    return agg != "fastest" and q is not None and q > n
