"""Re-voting stored runs: under a run's own spec a re-vote gives the run's own decision."""

from __future__ import annotations

from pathlib import Path

import anyio

from core.api import Tally, build_policy, build_task
from core.panel import ModelSpec, Panel
from core.result import CallResult, CallStatus, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import Store

TASK = build_task(labels=["regression", "no regression"])


def ok(slot: int, model: str, answer: str) -> CallResult:
    return CallResult(
        slot=slot, model=model, status=CallStatus.OK, answer=answer, raw=answer, cost_usd=0.001
    )


def stored_run(store: Store, spec: RunSpec, calls: list[CallResult], run_id: str = "r1") -> None:
    """A finished run as the engine stores it, decided as its own policy decides it."""
    from core import voting

    decision = voting.decide(calls, spec.policy, spec.task.format, spec.panel.weights)
    result = RunResult(
        run_id=run_id,
        input="the checkout button moved off screen",
        spec=spec,
        decision=decision,
        votes=voting.count_votes(calls, spec.task.format),
        calls=calls,
        cost_usd=0.003,
        latency_ms=10.0,
    )
    store.save_run(result, source="library")


def revote(db: str, run_ids: list[str], **kw: object) -> list[RunResult]:
    async def main() -> list[RunResult]:
        async with Tally.open(database_url=db) as tally:
            return await tally.revote(run_ids, **kw)  # type: ignore[arg-type]

    return anyio.run(main)


def weighted_spec() -> RunSpec:
    strong = ModelSpec.parse("sim:sim-strong*3", params={"temperature": 0})
    return RunSpec(
        task=TASK,
        panel=Panel.build(
            [strong, ModelSpec.parse("sim:sim-fast"), ModelSpec.parse("sim:sim-mid")]
        ),
        policy=build_policy(aggregate="weighted"),
    )


def split_by_weight() -> list[CallResult]:
    """One heavy vote against two light ones: weighted, the heavy one wins."""
    return [
        ok(0, "sim:sim-strong", "regression"),
        ok(1, "sim:sim-fast", "no regression"),
        ok(2, "sim:sim-mid", "no regression"),
    ]


def test_a_weighted_run_re_voted_under_its_own_policy_keeps_its_decision(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tally.db'}"
    spec = weighted_spec()
    with Store(db) as store:
        store.ensure_schema()
        stored_run(store, spec, split_by_weight())
        own = store.get_run("r1")
    assert own.decision.status == DecisionStatus.DECIDED and own.decision.label == "regression"
    assert own.spec == spec  # weights and params come back as they ran
    (again,) = revote(db, ["r1"], policy=own.spec.policy)
    assert (again.decision.status, again.decision.label) == (DecisionStatus.DECIDED, "regression")
    assert again.votes == own.votes and again.spec.panel == spec.panel


def test_without_a_policy_a_re_vote_uses_the_run_s_own(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tally.db'}"
    with Store(db) as store:
        store.ensure_schema()
        stored_run(store, weighted_spec(), split_by_weight())
    (again,) = revote(db, ["r1"])
    assert again.decision.label == "regression"
    assert again.spec.policy == weighted_spec().policy
