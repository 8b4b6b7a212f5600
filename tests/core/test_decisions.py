"""The decision rules of docs/decisions.md, defect by defect: the threshold comes first, every
non-decision goes the same way through the declared chain, the default quorum of strict and
unanimous, the quorum and degradation shown on every decision, impossible policies refused."""

from __future__ import annotations

import pytest

from core.errors import PolicyError
from core.formats import JsonFormat, LabelFormat, NumberFormat, YesNoFormat
from core.policy import Aggregation, Policy, Quorum, TieBreak
from core.result import Decision, DecisionStatus
from core.voting import apply_offline_branch, check_policy, decide, is_settled
from tests.core.test_voting import calls

FMT = LabelFormat(labels=("a", "b", "c", "d"), conservative_order=("a", "b", "c", "d"))
UNORDERED = LabelFormat(labels=("a", "b", "c", "d"))


def pol(agg: Aggregation, **kwargs: object) -> Policy:
    return Policy.model_validate({"aggregation": agg, **kwargs})


def conservative(decision: Decision, fmt: LabelFormat = FMT) -> Decision | None:
    return apply_offline_branch(decision, TieBreak(kind="conservative"), [], fmt)


# -- the threshold first; every non-decision through the chain the same way --------------------

THRESHOLD_SPLITS = [
    (pol(Aggregation.AT_LEAST, k=3), ("b", "b", "a", "a"), ("b", "b", "a", "c")),
    (pol(Aggregation.STRICT), ("b", "b", "a", "a"), ("b", "b", "a", "c")),
    (pol(Aggregation.UNANIMOUS), ("b", "b", "a", "a"), ("b", "b", "b", "a")),
]


@pytest.mark.parametrize(("policy", "even", "uneven"), THRESHOLD_SPLITS, ids=str)
def test_a_threshold_not_met_is_the_same_outcome_whether_or_not_it_ties(
    policy: Policy, even: tuple[str, ...], uneven: tuple[str, ...]
) -> None:
    """Today 2-2 under at-least:3 is a tie (and conservative decides it) while 2-1-1 fails."""
    for split in (even, uneven):
        d = decide(calls(*split), policy, FMT)
        assert d.status == DecisionStatus.FAILED, split
        assert d.reason.startswith("threshold not met"), d.reason
        assert d.label is None


@pytest.mark.parametrize(("policy", "even", "uneven"), THRESHOLD_SPLITS, ids=str)
def test_the_chain_breaks_a_threshold_not_met_however_the_votes_split(
    policy: Policy, even: tuple[str, ...], uneven: tuple[str, ...]
) -> None:
    for split in (even, uneven):
        d = decide(calls(*split), policy, FMT)
        broken = conservative(d)
        assert broken is not None, split
        assert broken.status == DecisionStatus.DECIDED
        assert broken.label == "a"  # the most conservative answer any vote gave
        assert broken.branches == ["conservative"]
        assert broken.reason.startswith("threshold not met")
        assert "broken by the conservative order: a" in broken.reason
        for kind, status in (("human", DecisionStatus.NEEDS_REVIEW), ("abstain", "failed")):
            out = apply_offline_branch(d, TieBreak.parse(kind), [], FMT)
            assert out is not None and out.status == status and out.branches == [kind]
            assert "threshold not met" in out.reason


def test_a_decision_never_claims_a_threshold_it_did_not_reach() -> None:
    d = decide(calls("b", "b", "a", "a"), pol(Aggregation.STRICT), FMT)
    broken = conservative(d)
    assert broken is not None
    assert "more than half" not in broken.reason.replace("more than half needed", "")
    assert "threshold not met: b | a have 2 of 4 counted votes each" in broken.reason


def test_a_tie_above_the_threshold_is_a_tie() -> None:
    d = decide(calls("a", "a", "b", "b", "c"), pol(Aggregation.AT_LEAST, k=2), FMT)
    assert d.status == DecisionStatus.TIE
    assert d.tied == ["a", "b"]


def test_without_a_chain_nothing_undecided_is_decided() -> None:
    for policy, even, uneven in THRESHOLD_SPLITS:
        for split in (even, uneven):
            assert decide(calls(*split), policy, FMT).status != DecisionStatus.DECIDED


def test_a_threshold_not_met_with_no_ranked_answer_passes_on() -> None:
    d = decide(calls("b", "b", "a", "c"), pol(Aggregation.STRICT), UNORDERED)
    assert d.status == DecisionStatus.FAILED
    assert apply_offline_branch(d, TieBreak(kind="conservative"), [], UNORDERED) is None


def test_a_quorum_failure_is_not_open_to_the_chain() -> None:
    d = decide(
        calls("a", "!error", "!error"), pol(Aggregation.MAJORITY, quorum={"min_valid": 2}), FMT
    )
    assert d.status == DecisionStatus.FAILED
    for kind in ("conservative", "human", "abstain"):
        assert apply_offline_branch(d, TieBreak.parse(kind), [], FMT) is None


# -- no convergence: three or more votes, every one different -----------------------------------


def test_two_differing_votes_are_a_tie_three_are_no_convergence() -> None:
    majority = pol(Aggregation.MAJORITY)
    assert decide(calls("a", "b"), majority, FMT).status == DecisionStatus.TIE
    assert decide(calls("a", "b", "c"), majority, FMT).status == DecisionStatus.NO_CONVERGENCE
    assert decide(calls("a", "b", "!error"), majority, FMT).status == DecisionStatus.TIE


def test_the_docs_state_the_no_convergence_rule_the_code_follows() -> None:
    import core.voting

    doc = core.voting.__doc__ or ""
    assert "three or more" in doc and "more than one of them" not in doc


# -- the default quorum of strict and unanimous --------------------------------------------------


@pytest.mark.parametrize("agg", [Aggregation.STRICT, Aggregation.UNANIMOUS])
def test_one_valid_vote_of_five_does_not_decide_by_default(agg: Aggregation) -> None:
    d = decide(calls("a", "!error", "!timeout", "!invalid", "!error"), pol(agg), FMT)
    assert d.status == DecisionStatus.FAILED
    assert "no quorum: 1 valid vote, 3 needed" in d.reason
    assert d.quorum is not None and d.quorum.need == 3 and d.quorum.valid == 1


@pytest.mark.parametrize("agg", [Aggregation.STRICT, Aggregation.UNANIMOUS])
def test_half_the_panel_rounded_up_decides(agg: Aggregation) -> None:
    d = decide(calls("a", "a", "a", "!timeout", "!invalid"), pol(agg), FMT)
    assert (d.status, d.label) == (DecisionStatus.DECIDED, "a")
    assert d.quorum is not None and (d.quorum.need, d.quorum.valid, d.quorum.panel) == (3, 3, 5)


def test_an_explicit_min_valid_replaces_the_default() -> None:
    one = pol(Aggregation.STRICT, quorum=Quorum(min_valid=1))
    assert decide(calls("a", "!error", "!error"), one, FMT).label == "a"


def test_early_stop_counts_the_whole_panel_for_the_default_quorum() -> None:
    strict = pol(Aggregation.STRICT)
    # two of five landed, both errors: three outstanding can still reach the quorum of 3
    assert not is_settled(calls("!error", "!error"), [1.0, 1.0, 1.0], strict, FMT)
    # three errors: two outstanding can never make 3 valid votes
    assert is_settled(calls("!error", "!error", "!error"), [1.0, 1.0], strict, FMT)


def test_every_decision_shows_its_quorum() -> None:
    for agg in Aggregation:
        policy = pol(agg, k=1) if agg == Aggregation.AT_LEAST else pol(agg)
        d = decide(calls("a", "a", "b"), policy, FMT)
        assert d.quorum is not None, agg
        assert d.quorum.panel == 3


# -- degraded decisions -------------------------------------------------------------------------


def test_a_decision_with_failed_or_invalid_calls_is_degraded() -> None:
    d = decide(calls("a", "a", "a", "!invalid", "!timeout"), pol(Aggregation.MAJORITY), FMT)
    assert d.status == DecisionStatus.DECIDED
    assert d.degraded is not None
    assert (d.degraded.planned, d.degraded.counted) == (5, 3)
    assert "1 invalid" in d.degraded.why and "1 timed out" in d.degraded.why
    assert d.degraded.why.endswith("; slow calls cut: these are often the strongest models")


def test_a_full_count_is_not_degraded() -> None:
    assert decide(calls("a", "a", "b"), pol(Aggregation.MAJORITY), FMT).degraded is None


def test_fastest_acceptable_says_it_cut_the_slow_calls() -> None:
    d = decide(calls("a", "!cancelled", "!cancelled"), pol(Aggregation.FASTEST), FMT)
    assert d.status == DecisionStatus.DECIDED
    assert d.degraded is not None and d.degraded.cut == 2
    assert "fastest-acceptable cut 2" in d.degraded.why
    assert "slow calls cut: these are often the strongest models" in d.degraded.why


def test_an_early_stop_does_not_degrade_a_decision() -> None:
    early = pol(Aggregation.MAJORITY, early_stop=True)
    assert decide(calls("a", "a", "a", "!cancelled", "!cancelled"), early, FMT).degraded is None
    late = pol(Aggregation.MAJORITY)
    d = decide(calls("a", "a", "a", "!cancelled", "!cancelled"), late, FMT)
    assert d.degraded is not None and d.degraded.cut == 2


# -- impossible policies, refused before any call ------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "fmt", "message"),
    [
        (pol(Aggregation.AT_LEAST, k=4), FMT, "at least 4 votes for the winner: the panel has 3"),
        (pol(Aggregation.MAJORITY, quorum={"min_valid": 4}), FMT, "quorum of 4 valid votes"),
        (pol(Aggregation.MAJORITY, tie_breaks=[{"kind": "conservative"}]), UNORDERED, "order"),
        (pol(Aggregation.MAJORITY, tie_breaks=[{"kind": "conservative"}]), YesNoFormat(), "order"),
        (
            pol(Aggregation.MAJORITY, tie_breaks=[{"kind": "conservative"}]),
            NumberFormat(),
            "order",
        ),
        (
            pol(Aggregation.MAJORITY, tie_breaks=[{"kind": "conservative"}]),
            JsonFormat.model_validate({"schema": {"type": "object"}}),
            "order",
        ),
    ],
)
def test_impossible_policies_are_refused(policy: Policy, fmt: LabelFormat, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as info:
        check_policy(policy, fmt, panel=3)
    assert "\n" not in str(info.value)


def test_possible_policies_pass() -> None:
    check_policy(pol(Aggregation.AT_LEAST, k=3), FMT, panel=3)
    # expand can bring the votes an at-least needs
    expand = pol(Aggregation.AT_LEAST, k=5, tie_breaks=[{"kind": "expand", "k": 2}])
    check_policy(expand, FMT, panel=3)
    check_policy(pol(Aggregation.MAJORITY, tie_breaks=[{"kind": "conservative"}]), FMT, panel=3)
    check_policy(
        pol(Aggregation.MAJORITY, tie_breaks=[{"kind": "conservative"}]),
        YesNoFormat(conservative="no"),
        panel=2,
    )


# -- the engine's chain follows the same rules ---------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answers",
    [
        ["no regression", "no regression", "regression", "regression"],
        ["no regression", "no regression", "regression", "banana"],
    ],
    ids=["2-2", "2-1-1"],
)
async def test_the_engine_breaks_a_threshold_not_met_through_the_chain(
    answers: list[str],
) -> None:
    from tests.core.test_engine import FakeProvider, make_engine, request, task

    models = {f"m{i}": [a] for i, a in enumerate(answers)}
    p = FakeProvider("f", models)
    req = request(
        [f"f:{m}" for m in models],
        task=task(conservative=True),
        aggregation=Aggregation.AT_LEAST,
        k=3,
        tie_breaks=(TieBreak(kind="conservative"),),
    )
    result = await make_engine(p).run(req)
    d = result.decision
    assert (d.status, d.label) == (DecisionStatus.DECIDED, "regression")
    assert d.branches == ["conservative"]
    assert d.reason.startswith("threshold not met")


@pytest.mark.anyio
async def test_expand_can_bring_a_threshold_within_reach() -> None:
    from tests.core.test_engine import FakeProvider, make_engine, request

    p = FakeProvider("f", {"a": ["regression"], "b": ["no regression"]})
    req = request(
        ["f:a", "f:a", "f:b"],
        aggregation=Aggregation.AT_LEAST,
        k=3,
        tie_breaks=(TieBreak(kind="expand", k=1), TieBreak(kind="human")),
    )
    result = await make_engine(p).run(req)
    d = result.decision
    # slot 3 goes round-robin to f:a: 3 votes for regression reach the threshold
    assert (d.status, d.label) == (DecisionStatus.DECIDED, "regression")
    assert d.branches == ["expand:1"]
    assert "after expand:1" in d.reason


@pytest.mark.anyio
async def test_the_engine_refuses_an_impossible_policy_before_any_call() -> None:
    from tests.core.test_engine import FakeProvider, MemoryRecorder, make_engine, request

    p = FakeProvider("f", {"a": ["regression"]})
    engine = make_engine(p)
    with pytest.raises(PolicyError, match="at least 4 votes"):
        await engine.run(request(["f:a"], n=3, aggregation=Aggregation.AT_LEAST, k=4))
    assert p.requests == []
    assert isinstance(engine.recorder, MemoryRecorder) and engine.recorder.started == []


# -- shown where people look: the CLI, JSON and the dashboard ------------------------------------


@pytest.mark.anyio
async def test_the_cli_shows_the_quorum_and_a_degraded_decision(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from core.cli import print_decision
    from core.errors import ProviderError
    from tests.core.test_engine import FakeProvider, make_engine, request

    p = FakeProvider(
        "f",
        {
            "a": ["regression"],
            "b": ["regression"],
            "slow": [ProviderError("no answer within 1s", timeout=True)],
        },
    )
    result = await make_engine(p).run(request(["f:a", "f:b", "f:slow"]))
    doc = result.to_json()
    assert doc["decision"]["quorum"] == {
        "need": 1,
        "valid": 2,
        "panel": 3,
        "rule": "default: one valid vote",
    }
    assert doc["decision"]["degraded"]["planned"] == 3
    assert doc["decision"]["degraded"]["counted"] == 2
    assert doc["decision"]["degraded"]["timeouts"] == 1
    print_decision(result)
    shown = " ".join(capsys.readouterr().out.split())  # however the console wrapped it
    assert "quorum 1 of 3" in shown
    assert "DEGRADED: 2 of 3 counted: 1 timed out" in shown
    assert "slow calls cut: these are often the strongest models" in shown


def test_blind_double_review_is_a_branch_of_its_own() -> None:
    """``human:2`` sends an open decision to two blind reviewers; other counts are refused."""
    d = decide(calls("b", "a"), pol(Aggregation.MAJORITY), FMT)
    out = apply_offline_branch(d, TieBreak.parse("human:2"), [], FMT)
    assert out is not None and out.status == DecisionStatus.NEEDS_REVIEW
    assert out.branches == ["human:2"] and out.reason.endswith("; sent to two blind reviewers")
    assert str(TieBreak.parse("human:2")) == "human:2" and str(TieBreak.parse("human")) == "human"
    assert [str(b) for b in TieBreak.parse_chain("expand:2,human:2")] == ["expand:2", "human:2"]
    for bad in ("human:3", "human:x", "human:1"):
        with pytest.raises(PolicyError, match="human takes one reviewer"):
            TieBreak.parse(bad)
