"""``core.voting`` and the engine's chain against the reference decider of
tests/core/decision_reference.py (written from docs/decisions.md), on random calls, policies
and chains. Properties checked on every example besides agreement:

- no branch settles a run without being recorded in ``branches`` (last);
- a decision never claims a threshold it did not reach;
- without a chain, an open outcome (tie, threshold not met, no convergence) is never decided;
- a low-confidence winner (``escalate-below``) stands only when no branch settled it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.engine import RunRequest
from core.errors import PolicyError, ProviderError
from core.formats import AnswerFormat, JsonFormat, LabelFormat, NumberFormat, YesNoFormat
from core.panel import ModelSpec, Panel
from core.policy import Aggregation, Policy, Quorum, TieBreak
from core.result import CallResult, Decision, DecisionStatus, Outcome
from core.spec import RunSpec
from core.task import Task
from core.voting import (
    apply_offline_branch,
    check_policy,
    decide,
    is_open,
    passed_on,
    record_branch,
)
from tests.core import decision_reference as ref
from tests.core.test_engine import FakeProvider, make_engine
from tests.core.test_voting_properties import FAILURES, make_calls

FORMATS: dict[str, tuple[AnswerFormat, tuple[str, ...]]] = {
    "label": (
        LabelFormat(labels=("a", "b", "c", "d"), conservative_order=("c", "b")),
        ("a", "b", "c", "d"),
    ),
    "label-unordered": (LabelFormat(labels=("a", "b", "c")), ("a", "b", "c")),
    "yesno": (YesNoFormat(conservative="no"), ("yes", "no")),
    "yesno-unordered": (YesNoFormat(), ("yes", "no")),
    "number": (NumberFormat(), ("1", "2", "2.5")),
    "number-tolerance": (NumberFormat(tolerance=1), ("1", "1.5", "2", "3.5")),
    "json": (
        JsonFormat.model_validate(
            {
                "schema": {
                    "type": "object",
                    "properties": {"k": {"type": "string"}, "s": {"type": "integer"}},
                    "required": ["k"],
                }
            }
        ),
        ('{"k":"x"}', '{"k":"x","s":1}', '{"k":"y","s":1}', '{"k":"y"}'),
    ),
}
WEIGHTS = {"m0": 1.0, "m1": 2.0, "m2": 0.5, "m3": 1.5}
OFFLINE = ("conservative", "human", "human:2", "abstain")


def policies(chain: st.SearchStrategy[tuple[TieBreak, ...]]) -> st.SearchStrategy[Policy]:
    return st.builds(
        lambda agg, k, min_valid, count_invalid, count_errors, early, chain, below: Policy(
            aggregation=agg,
            k=k if agg == Aggregation.AT_LEAST else None,
            quorum=Quorum(
                min_valid=min_valid, count_invalid=count_invalid, count_errors=count_errors
            ),
            early_stop=early,
            tie_breaks=chain,
            escalate_below=below,
        ),
        st.sampled_from(list(Aggregation)),
        st.integers(1, 5),
        st.one_of(st.none(), st.integers(0, 6)),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        chain,
        st.one_of(st.none(), st.sampled_from((0.6, 0.8, 0.9, 0.97))),
    )


offline_chains = st.lists(st.sampled_from(OFFLINE), max_size=3).map(
    lambda kinds: tuple(TieBreak.parse(k) for k in kinds)
)


@st.composite
def runs(draw: st.DrawFn) -> tuple[AnswerFormat, list[tuple[str, str]]]:
    fmt, pool = FORMATS[draw(st.sampled_from(sorted(FORMATS)))]
    outcome = st.one_of(st.sampled_from(pool), st.sampled_from(pool), st.sampled_from(FAILURES))
    model = st.sampled_from(sorted(WEIGHTS))
    return fmt, draw(st.lists(st.tuples(outcome, model), min_size=1, max_size=8))


def agree(real: Decision, want: ref.Ref) -> None:
    """The real decision is the one the table gives, field by field."""
    got = (real.status.value, real.label, real.outcome.value if real.outcome else None)
    assert got == (want.status, want.label, want.outcome)
    assert tuple(real.branches) == want.branches
    if want.outcome in ref.OPEN:
        assert frozenset(real.tied) == want.candidates
    assert real.quorum is not None
    assert (real.quorum.need, real.quorum.valid, real.quorum.panel) == (
        want.need,
        want.valid,
        want.panel,
    )
    assert (real.degraded is not None) == want.degraded
    if real.degraded is not None:
        d = real.degraded
        assert (d.planned, d.counted) == (want.planned, want.counted)
        assert {"invalid": d.invalid, "errors": d.errors, "timeouts": d.timeouts, "cut": d.cut} == (
            want.lost
        )
    if want.confidence is None:
        assert real.confidence is None, (real.confidence, want)
    else:
        assert real.confidence == pytest.approx(want.confidence, abs=1e-9)
    assert real.reason.startswith(want.reason_starts), (real.reason, want.reason_starts)
    assert real.reason.endswith(want.reason_ends), (real.reason, want.reason_ends)


CLAIMS = ("counted votes agree", ", at least ", "more than half")


def claims_threshold(reason: str) -> bool:
    """Whether the vote's part of a reason (before any branch's) says a threshold was met."""
    head = reason.split("; ")[0].replace("more than half needed", "")
    return any(claim in head for claim in CLAIMS)


def check_properties(real: Decision, vote: Decision, chain: Sequence[TieBreak]) -> None:
    """``vote`` is the panel's own decision, before any branch."""
    if (real.status, real.label) != (vote.status, vote.label):
        # something settled it: a branch, recorded last (an expansion retakes the vote)
        assert real.branches, (real, vote)
        assert not real.branches[-1].endswith(")"), real.branches
    if real.status == DecisionStatus.DECIDED:
        assert real.outcome is not None
        if real.outcome == Outcome.LOW_CONFIDENCE:
            # the vote's winner stands, or a branch's, or an expansion's retaken vote's
            expanded = any(b.startswith("expand") for b in real.branches)
            assert real.label == vote.label or expanded or real.branches[-1:] == ["conservative"]
            assert real.reason.startswith("low confidence: ")
        elif real.outcome.open:  # decided by a branch, not by the vote
            assert real.branches[-1:] == ["conservative"]
            assert "broken by the conservative order" in real.reason
            assert not claims_threshold(real.reason), real.reason
    if not chain:
        assert real.branches == []
        if vote.outcome is not None and vote.outcome.open:
            assert real.status != DecisionStatus.DECIDED and real.label is None


def offline_chain(decision: Decision, chain: Sequence[TieBreak], fmt: AnswerFormat) -> Decision:
    """The chain over offline branches as the engine drives it."""
    if not is_open(decision):
        return decision
    for branch in chain:
        out = apply_offline_branch(decision, branch, [], fmt)
        if out is not None:
            return out
        decision = record_branch(decision, passed_on(branch, "not applicable"))
    return decision


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs(), policies(offline_chains))
def test_voting_follows_the_table(
    run: tuple[AnswerFormat, list[tuple[str, str]]], policy: Policy
) -> None:
    fmt, outcomes = run
    calls = make_calls(outcomes)
    n = len(calls)
    if ref.refused(policy, fmt, n):
        with pytest.raises(PolicyError):
            check_policy(policy, fmt, panel=n)
        return
    check_policy(policy, fmt, panel=n)
    vote = decide(calls, policy, fmt, WEIGHTS)
    real = offline_chain(vote, policy.tie_breaks, fmt)
    agree(real, ref.run(calls, policy, fmt, WEIGHTS))
    check_properties(real, vote, policy.tie_breaks)


LEARNED = FORMATS["label"]
POSTERIOR_VALUES = (0.05, 0.1, 0.25, 0.4, 0.6, 0.9)  # a few values: ties come up


@st.composite
def learned_policies(draw: st.DrawFn) -> Policy:
    """A learned re-vote's policy: any counting aggregation, a fitted posterior of the run."""
    base = draw(policies(offline_chains).filter(lambda p: p.aggregation != Aggregation.FASTEST))
    labels = draw(st.lists(st.sampled_from(LEARNED[1]), min_size=1, max_size=4, unique=True))
    posterior = {label: draw(st.sampled_from(POSTERIOR_VALUES)) for label in labels}
    return base.model_copy(update={"posterior": posterior})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(LEARNED[1] + FAILURES), st.sampled_from(sorted(WEIGHTS))),
                min_size=1, max_size=8), learned_policies())  # fmt: skip
def test_a_learned_re_vote_follows_row_16(outcomes: list[tuple[str, str]], policy: Policy) -> None:
    fmt = LEARNED[0]
    calls = make_calls(outcomes)
    n = len(calls)
    if ref.refused(policy, fmt, n):
        with pytest.raises(PolicyError):
            check_policy(policy, fmt, panel=n)
        return
    vote = decide(calls, policy, fmt, WEIGHTS)
    real = offline_chain(vote, policy.tie_breaks, fmt)
    agree(real, ref.run(calls, policy, fmt, WEIGHTS))
    check_properties(real, vote, policy.tie_breaks)


# -- the engine's chain, expand and escalate included ---------------------------------------------


ENGINE_FAILURES = ("!invalid", "!error", "!timeout")


def scripted(answer: str) -> Any:
    if answer == "!invalid":
        return "banana"
    if answer == "!error":
        return ProviderError("HTTP 400: bad request", status=400)
    if answer == "!timeout":
        return ProviderError("no answer within 1s", timeout=True)
    return answer


all_chains = st.lists(
    st.one_of(
        st.sampled_from(OFFLINE).map(TieBreak.parse),
        st.integers(1, 3).map(lambda k: TieBreak(kind="expand", k=k)),
        st.just(TieBreak.parse("escalate:f:big")),
    ),
    max_size=3,
).map(tuple)


@st.composite
def engine_runs(draw: st.DrawFn) -> tuple[AnswerFormat, list[list[str]], list[str], list[float]]:
    """A format, each model's answers in the order it is asked, the escalation's answers and
    the models' weights."""
    name = draw(st.sampled_from(sorted(set(FORMATS) - {"number-tolerance"})))
    fmt, pool = FORMATS[name]
    outcome = st.one_of(
        st.sampled_from(pool), st.sampled_from(pool), st.sampled_from(ENGINE_FAILURES)
    )
    n = draw(st.integers(1, 4))
    answers = [draw(st.lists(outcome, min_size=1, max_size=3)) for _ in range(n)]
    big = draw(st.lists(outcome, min_size=1, max_size=3))
    weights = [draw(st.sampled_from((0.5, 1.0, 2.0))) for _ in range(n)]
    return fmt, answers, big, weights


def by_phase(calls: Sequence[CallResult], phase: str) -> list[CallResult]:
    return sorted((c for c in calls if c.phase == phase), key=lambda c: c.slot)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine_runs(), policies(all_chains))
def test_the_engine_chain_follows_the_table(
    run: tuple[AnswerFormat, list[list[str]], list[str], list[float]], policy: Policy
) -> None:
    fmt, answers, big, weights = run
    provider = FakeProvider(
        "f",
        {f"m{i}": [scripted(a) for a in script] for i, script in enumerate(answers)}
        | {"big": [scripted(a) for a in big]},
    )
    models = [ModelSpec.parse(f"f:m{i}", weight=w) for i, w in enumerate(weights)]
    request = RunRequest(
        run_id="r",
        input="x",
        spec=RunSpec(task=Task(format=fmt), panel=Panel.build(models), policy=policy),
    )
    n = len(models)
    engine = make_engine(provider)
    engine.retry = engine.retry.__class__(max_attempts=1, base_s=0.001, max_s=0.01)
    if ref.refused(policy, fmt, n):
        with pytest.raises(PolicyError):
            anyio.run(engine.run, request)
        assert provider.requests == []
        return
    result = anyio.run(engine.run, request)
    panel = by_phase(result.calls, "panel")
    expanded = by_phase(result.calls, "expand")
    chunks: list[list[CallResult]] = []
    for branch in policy.tie_breaks:
        if branch.kind == "expand" and expanded:
            assert branch.k is not None
            chunks.append(expanded[: branch.k])
            expanded = expanded[branch.k :]
    weight_of = {m.name: m.weight for m in models}
    want = ref.run(
        panel,
        policy,
        fmt,
        weight_of,
        expansions=chunks,
        escalations=by_phase(result.calls, "escalate"),
    )
    agree(result.decision, want)
    vote = decide(panel, policy, fmt, weight_of)
    check_properties(result.decision, vote, policy.tie_breaks)
