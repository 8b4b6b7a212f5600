"""A confidence on every decision, and the ``escalate-below`` trigger that sends low-confidence
majorities through the tie-break chain (docs/decisions.md, row 15)."""

from __future__ import annotations

import json

import pytest
from scipy.stats import beta

from core.api import build_policy
from core.confidence import leader_posterior, vote_confidence
from core.errors import PolicyError
from core.formats import LabelFormat
from core.panel import ModelSpec
from core.policy import Aggregation, Policy, TieBreak
from core.result import DecisionStatus, Outcome
from core.voting import apply_offline_branch, check_policy, decide, is_open, is_settled
from tests.core.test_engine import FakeProvider, make_engine, request
from tests.core.test_voting import calls

FMT = LabelFormat(labels=("a", "b", "c"), conservative_order=("b", "a", "c"))
HUMAN = (TieBreak(kind="human"),)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(("a", "b"), [(0, 0), (1, 0), (3, 2), (4, 1), (5, 0), (7, 5)])
def test_the_vote_confidence_is_the_beta_posterior_of_winner_against_runner_up(
    a: int, b: int
) -> None:
    assert leader_posterior(a, b) == pytest.approx(beta.sf(0.5, 1 + a, 1 + b), abs=1e-12)
    assert vote_confidence("x", {"x": a, "y": b, "z": min(b, 1)}) == leader_posterior(a, b)


def test_every_decided_vote_carries_its_confidence_and_an_undecided_one_none() -> None:
    three_two = decide(calls("a", "a", "a", "b", "b"), Policy(), FMT)
    assert three_two.status == DecisionStatus.DECIDED
    assert three_two.confidence == pytest.approx(42 / 64)
    assert decide(calls("a", "a", "a", "a", "b"), Policy(), FMT).confidence == pytest.approx(
        57 / 64
    )
    tie = decide(calls("a", "b"), Policy(), FMT)
    assert (tie.status, tie.confidence) == (DecisionStatus.TIE, None)
    none = decide(calls("!error", "!invalid"), Policy(), FMT)
    assert none.confidence is None


def test_a_confidence_counts_votes_even_when_weights_pick_the_winner() -> None:
    """Weighted: the heavy model's answer wins; the confidence still reads the votes."""
    cs = calls("a", "b", "b", models=("sim:heavy", "sim:x", "sim:y"))
    d = decide(cs, Policy(aggregation=Aggregation.WEIGHTED), FMT, {"sim:heavy": 5.0})
    assert d.label == "a" and d.confidence == pytest.approx(leader_posterior(1, 2))


def test_escalate_below_opens_a_low_confidence_majority_and_not_a_confident_one() -> None:
    policy = Policy(escalate_below=0.8, tie_breaks=HUMAN)
    low = decide(calls("a", "a", "a", "b", "b"), policy, FMT)
    assert low.outcome == Outcome.LOW_CONFIDENCE and is_open(low)
    assert low.status == DecisionStatus.DECIDED and low.label == "a"  # if nothing settles it
    assert low.reason.startswith("low confidence: 0.66, below 0.8, for a: 3 of 5 votes")
    assert low.tied == ["a", "b"]
    sent = apply_offline_branch(low, HUMAN[0], [], FMT)
    assert sent is not None and sent.status == DecisionStatus.NEEDS_REVIEW
    assert (sent.label, sent.confidence, sent.branches) == (None, None, ["human"])
    sure = decide(calls("a", "a", "a", "a", "b"), policy, FMT)
    assert (sure.outcome, sure.tied, is_open(sure)) == (Outcome.DECIDED, [], False)


def test_the_conservative_branch_on_a_low_confidence_vote_picks_among_every_answer() -> None:
    policy = Policy(escalate_below=0.8, tie_breaks=(TieBreak(kind="conservative"),))
    low = decide(calls("a", "a", "a", "b", "b"), policy, FMT)
    out = apply_offline_branch(low, policy.tie_breaks[0], [], FMT)
    assert out is not None and (out.label, out.status) == ("b", DecisionStatus.DECIDED)
    assert out.confidence is None  # a branch's label is not the votes' winner


@pytest.mark.anyio
async def test_the_engine_escalates_a_low_confidence_majority_and_keeps_a_confident_one() -> None:
    chain = (TieBreak(kind="escalate", model=ModelSpec.parse("f:big")),)
    answers = {"a": ["regression"], "b": ["regression"], "c": ["no regression"]}
    provider = FakeProvider("f", answers | {"big": ["no regression"]})
    engine = make_engine(provider)
    split = await engine.run(request(["f:a", "f:b", "f:c"], escalate_below=0.8, tie_breaks=chain))
    assert split.decision.status == DecisionStatus.ESCALATED
    assert split.decision.branches == ["escalate:f:big"]
    assert split.decision.reason.startswith("low confidence: 0.69, below 0.8")
    plain = await engine.run(request(["f:a", "f:b", "f:c"], tie_breaks=chain))
    assert plain.decision.status == DecisionStatus.DECIDED
    assert plain.decision.confidence == pytest.approx(leader_posterior(2, 1))
    assert plain.to_json()["decision"]["confidence"] == pytest.approx(11 / 16)


def test_a_chain_that_cannot_settle_a_low_confidence_vote_leaves_its_winner() -> None:
    unordered = LabelFormat(labels=("a", "b"))
    policy = Policy(escalate_below=0.9, tie_breaks=(TieBreak(kind="expand", k=1),))
    low = decide(calls("a", "a", "b"), policy, unordered)
    assert (low.status, low.label, low.outcome) == ("decided", "a", Outcome.LOW_CONFIDENCE)


def test_early_stop_waits_while_the_remaining_votes_could_pull_the_confidence_under() -> None:
    policy = Policy(escalate_below=0.9, tie_breaks=HUMAN)
    done = calls("a", "a", "a")
    assert is_settled(done, [1.0, 1.0], Policy(), FMT)  # 3-0 of 5 cannot lose the lead
    assert not is_settled(done, [1.0, 1.0], policy, FMT)  # but 3-2 is 0.66
    assert is_settled(calls("a", "a", "a", "a", "a"), [1.0], policy, FMT)  # 5-1 is 0.94


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ("escalate-below:0.8,human", None),
        ("human,escalate-below:0.75", None),
        ("escalate-below:1.5,human", "between 0 and 1"),
        ("escalate-below:0,human", "between 0 and 1"),
        ("escalate-below:nan,human", "between 0 and 1"),
        ("escalate-below:high,human", "takes a confidence"),
        ("escalate-below:0.8,escalate-below:0.9,human", "given twice"),
        ("escalate-below,human", "takes a confidence"),
    ],
)
def test_the_trigger_is_read_from_the_chain(chain: str, message: str | None) -> None:
    if message is None:
        policy = build_policy(tie_break=chain)
        assert policy.escalate_below in (0.8, 0.75)
        assert [str(b) for b in policy.tie_breaks] == ["human"]
        assert policy.describe().endswith(
            f"tie-break escalate-below:{policy.escalate_below:g},human"
        )
        return
    with pytest.raises(PolicyError, match=message):
        build_policy(tie_break=chain)


def test_a_trigger_with_nothing_to_send_to_or_no_vote_is_refused_up_front() -> None:
    with pytest.raises(PolicyError, match="there is none"):
        check_policy(build_policy(tie_break="escalate-below:0.8"), FMT, panel=5)
    with pytest.raises(PolicyError, match="fastest-acceptable takes no vote"):
        check_policy(build_policy(aggregate="fastest", tie_break="escalate-below:0.8,human"), FMT)


def test_the_cli_prints_and_emits_the_confidence_and_takes_the_trigger() -> None:
    from typer.testing import CliRunner

    from core.cli import app

    base = ["run", "the checkout button moved", "--labels", "regression,no regression"]
    base += ["--model", "sim:sim-mid", "-n", "5", "--no-store"]
    runner = CliRunner()
    plain = runner.invoke(app, [*base, "--json"])
    assert plain.exit_code == 0, plain.output
    decision = json.loads(plain.stdout)["decision"]
    counts = json.loads(plain.stdout)["votes"]
    assert decision["confidence"] == pytest.approx(vote_confidence(decision["label"], counts))
    # five votes can never reach 0.99 (5-0 is 0.98): the trigger always sends the vote on
    low = runner.invoke(app, [*base, "--tie-break", "escalate-below:0.99,abstain"])
    assert low.exit_code == 1, low.output  # abstained: the work failed
    assert "low confidence: " in low.stdout and "tie-break: abstain" in low.stdout
    shown = runner.invoke(app, base)
    assert "confidence 0." in shown.stdout and "(the chance the winner is right)" in shown.stdout
