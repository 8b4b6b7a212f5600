"""Properties of the vote over random call outcomes.

- Early stop is safe: whenever ``is_settled`` says so on the calls landed so far, the full
  run decides the same (status and label), and no completion of the outstanding calls at all
  could change it (checked by brute force on small cases). For a decided vote it is also exact:
  if no completion can change the decision, ``is_settled`` sees it.
- Permuting the calls never changes a decision.
- A tie is never decided silently: a decided vote has a strict leader, and a tie becomes
  decided only through a recorded tie-break branch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.formats import AnswerFormat, JsonFormat, LabelFormat, NumberFormat, YesNoFormat
from core.policy import Aggregation, Policy, Quorum, TieBreak
from core.result import CallResult, CallStatus, Decision, DecisionStatus, Outcome
from core.voting import apply_offline_branch, count_votes, decide, is_settled

LABELS = LabelFormat(labels=("a", "b", "c", "f0", "f1", "f2"), conservative_order=("c", "b"))
NUMBERS = NumberFormat()
NUMBERS_TOL = NumberFormat(tolerance=1)
YESNO = YesNoFormat(conservative="no")
JSON = JsonFormat.model_validate(
    {
        "schema": {
            "type": "object",
            "properties": {"k": {"type": "string"}, "s": {"type": "integer"}},
            "required": ["k"],
        }
    }
)
WEIGHTS = {"m1": 1.0, "m2": 2.0, "m3": 0.5, "m4": 1.5}
FAILURES = ("!invalid", "!error", "!timeout", "!cancelled")
_STATUS = {
    "!invalid": CallStatus.INVALID,
    "!error": CallStatus.ERROR,
    "!timeout": CallStatus.TIMEOUT,
    "!cancelled": CallStatus.CANCELLED,
}

# Vote pools per format: few distinct answers, so votes agree often enough to decide.
POOLS: dict[str, tuple[AnswerFormat, tuple[str, ...]]] = {
    "label": (LABELS, ("a", "b", "c")),
    "yesno": (YESNO, ("yes", "no")),
    "number": (NUMBERS, ("1", "2", "2.5", "10")),
    "number-tolerance": (NUMBERS_TOL, ("1", "1.5", "2", "2.5", "4")),
    "json": (JSON, ('{"k":"x"}', '{"k":"x","s":1}', '{"k":"y","s":1}', '{"k":"x","s":2}')),
}


def make_calls(outcomes: Sequence[tuple[str, str]], start: int = 0) -> list[CallResult]:
    out = []
    for i, (answer, model) in enumerate(outcomes, start):
        status = _STATUS.get(answer, CallStatus.OK)
        out.append(
            CallResult(
                slot=i,
                model=model,
                status=status,
                answer=answer if status == CallStatus.OK else None,
                ended_at=float(i),
            )
        )
    return out


def key(decision: Decision) -> tuple[DecisionStatus, str | None, Outcome | None]:
    """What the chain sees of a decision: a low-confidence winner goes through it."""
    return decision.status, decision.label, decision.outcome


policies = st.builds(
    lambda agg, k, min_valid, count_invalid, count_errors, below: Policy(
        aggregation=agg,
        k=k if agg == Aggregation.AT_LEAST else None,
        quorum=Quorum(min_valid=min_valid, count_invalid=count_invalid, count_errors=count_errors),
        escalate_below=below,
        tie_breaks=() if below is None else (TieBreak(kind="human"),),  # the trigger needs one
    ),
    st.sampled_from([a for a in Aggregation if a != Aggregation.FASTEST]),
    st.integers(1, 4),
    st.integers(0, 4),
    st.booleans(),
    st.booleans(),
    st.one_of(st.none(), st.none(), st.sampled_from((0.6, 0.8, 0.9))),
)


@st.composite
def runs(draw: st.DrawFn, max_calls: int = 9) -> tuple[AnswerFormat, list[tuple[str, str]]]:
    fmt, pool = POOLS[draw(st.sampled_from(sorted(POOLS)))]
    outcome = st.one_of(
        st.sampled_from(pool),
        st.sampled_from(pool),
        st.sampled_from(pool),
        st.sampled_from(FAILURES),
    )
    model = st.sampled_from(sorted(WEIGHTS))
    outcomes = draw(st.lists(st.tuples(outcome, model), max_size=max_calls))
    return fmt, outcomes


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs(), policies)
def test_a_settled_prefix_decides_like_the_full_run(
    run: tuple[AnswerFormat, list[tuple[str, str]]], policy: Policy
) -> None:
    fmt, outcomes = run
    full = make_calls(outcomes)
    final = key(decide(full, policy, fmt, WEIGHTS))
    for i in range(len(full) + 1):
        remaining = [WEIGHTS[c.model] for c in full[i:]]
        if is_settled(full[:i], remaining, policy, fmt, WEIGHTS):
            prefix = decide(full[:i], policy, fmt, WEIGHTS, panel=len(full))
            assert key(prefix) == final, (i, outcomes)


def completions(pool: Sequence[str], models: Sequence[str]) -> list[list[CallResult]]:
    """Every way the outstanding calls (one per model) may end: any existing answer, fresh
    answers (as many as there are calls), an invalid reply, a failure or a cancellation."""
    fresh = [f"f{i}" for i in range(len(models))]
    choices = [*pool, *fresh, *FAILURES]
    return [
        make_calls(list(zip(ends, models, strict=True)), start=100)
        for ends in itertools.product(choices, repeat=len(models))
    ]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(("a", "b", "c", *FAILURES)), st.sampled_from(sorted(WEIGHTS))),
        max_size=6,
    ),
    st.lists(st.sampled_from(sorted(WEIGHTS)), min_size=1, max_size=3),
    policies,
)
def test_is_settled_agrees_with_brute_force(
    landed: list[tuple[str, str]], outstanding: list[str], policy: Policy
) -> None:
    done = make_calls(landed)
    panel = len(done) + len(outstanding)
    now = key(decide(done, policy, LABELS, WEIGHTS, panel=panel))
    pool = sorted({answer for answer, _ in landed if not answer.startswith("!")})
    unchanged = all(
        key(decide(done + rest, policy, LABELS, WEIGHTS)) == now
        for rest in completions(pool, outstanding)
    )
    settled = is_settled(done, [WEIGHTS[m] for m in outstanding], policy, LABELS, WEIGHTS)
    if settled:
        assert unchanged
    if unchanged and now[2] == Outcome.DECIDED:
        assert settled, "a decided vote that nothing can change must be seen as settled"


@settings(max_examples=300, deadline=None)
@given(runs(), policies, st.randoms(use_true_random=False))
def test_permuting_the_calls_never_changes_the_decision(
    run: tuple[AnswerFormat, list[tuple[str, str]]], policy: Policy, rnd: object
) -> None:
    fmt, outcomes = run
    shuffled = list(outcomes)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    one = decide(make_calls(outcomes), policy, fmt, WEIGHTS)
    two = decide(make_calls(shuffled), policy, fmt, WEIGHTS)
    assert key(one) == key(two)
    assert sorted(one.tied) == sorted(two.tied)
    assert one.margin == two.margin
    assert one.fields == two.fields
    assert count_votes(make_calls(outcomes), fmt) == count_votes(make_calls(shuffled), fmt)


@settings(max_examples=300, deadline=None)
@given(runs(), policies)
def test_a_tie_is_never_decided_silently(
    run: tuple[AnswerFormat, list[tuple[str, str]]], policy: Policy
) -> None:
    fmt, outcomes = run
    calls = make_calls(outcomes)
    decision = decide(calls, policy, fmt, WEIGHTS)
    assert decision.branches == []
    if decision.status == DecisionStatus.DECIDED and not isinstance(fmt, JsonFormat):
        answers = [c for c in calls if c.status == CallStatus.OK and c.answer is not None]
        grouped = fmt.group([c.answer for c in answers if c.answer is not None])
        scores: dict[str, Fraction] = {}
        for c in answers:
            assert c.answer is not None
            weight = WEIGHTS[c.model] if policy.aggregation == Aggregation.WEIGHTED else 1.0
            label = grouped[c.answer]
            scores[label] = scores.get(label, Fraction(0)) + Fraction(weight)
        assert decision.label is not None
        best = scores.pop(decision.label)
        assert all(best > other for other in scores.values())
    if decision.status in (DecisionStatus.TIE, DecisionStatus.NO_CONVERGENCE):
        assert decision.label is None
        for kind in ("conservative", "human", "abstain"):
            broken = apply_offline_branch(decision, TieBreak.parse(kind), calls, fmt)
            if broken is not None:
                assert broken.branches == [kind]
                if broken.status == DecisionStatus.DECIDED:
                    assert broken.label in decision.tied


@settings(max_examples=200, deadline=None)
@given(st.lists(st.decimals(-50, 50, places=1).map(str), max_size=12), st.randoms())
def test_number_grouping_does_not_depend_on_order(values: list[str], rnd: object) -> None:
    fmt = NumberFormat(tolerance=1.5)
    shuffled = list(values)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert fmt.group(values) == fmt.group(shuffled)
    for value, representative in fmt.group(values).items():
        assert abs(float(value) - float(representative)) <= 3.0
