"""Property: re-voting a stored run under its own stored spec gives the run's own decision.

Random runs over synthetic calls (every slot's call given, so no model is asked): random
panels with weights, random call outcomes, random count-based policies with quorum, early
stop and an offline tie-break chain. Each run is decided and stored by the engine, read back
from the store, and re-voted under its own spec.
"""

from __future__ import annotations

from pathlib import Path

import anyio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.api import Tally, build_policy, build_task
from core.engine import RunRequest
from core.errors import PolicyError
from core.panel import ModelSpec, Panel
from core.result import CallResult, CallStatus, RunResult
from core.spec import RunSpec

LABELS = ["a", "b", "c"]
MODELS = ["sim:sim-strong", "sim:sim-fast", "sim:sim-mid"]
TASK = build_task(labels=LABELS, conservative=LABELS)
# weighted twice: a decision that depends on the stored weights is the one most easily lost
AGGREGATIONS = ["majority", "strict", "weighted", "weighted", "unanimous", "at-least"]


@st.composite
def runs(draw: st.DrawFn) -> tuple[RunSpec, list[CallResult]]:
    models = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True))
    specs = [ModelSpec.parse(m, weight=draw(st.sampled_from([1.0, 3.5]))) for m in models]
    n = draw(st.integers(1, 7))
    panel = Panel.build(specs, n)
    aggregate = draw(st.sampled_from(AGGREGATIONS))
    if aggregate == "at-least":
        aggregate = f"at-least:{draw(st.integers(1, n))}"
    chain = draw(st.permutations(["conservative", "human", "abstain"]))
    chain = chain[: draw(st.integers(0, 3))]
    try:
        policy = build_policy(
            aggregate=aggregate,
            tie_break=",".join(chain) or None,
            early_stop=draw(st.booleans()),
            min_valid=draw(st.integers(1, n)),
            count_invalid=draw(st.booleans()),
            count_errors=draw(st.booleans()),
        )
    except PolicyError:  # a combination the policy itself refuses: not a run
        policy = build_policy()
    outcome = st.sampled_from([*LABELS, "invalid", "error", "timeout", "cancelled"])
    calls = []
    for slot in panel.slots():
        what = draw(outcome)
        call = CallResult(slot=slot.index, model=slot.model.name, sample=slot.sample)
        if what in LABELS:
            call.status, call.answer, call.raw = CallStatus.OK, what, f"**{what}**"
        elif what == "invalid":
            call.status, call.raw, call.error = CallStatus.INVALID, "qqq", "not a label"
        else:
            call.status, call.error = CallStatus(what), what
        calls.append(call)
    return RunSpec(task=TASK, panel=panel, policy=policy), calls


def weighted_split() -> tuple[RunSpec, list[CallResult]]:
    """The case that flipped before the store kept weights: one heavy vote beats two light."""
    panel = Panel.build([ModelSpec.parse("sim:sim-strong*3"), *MODELS[1:]])
    calls = [
        CallResult(slot=s.index, model=s.model.name, status=CallStatus.OK, answer=a, raw=a)
        for s, a in zip(panel.slots(), ["a", "b", "b"], strict=True)
    ]
    return RunSpec(task=TASK, panel=panel, policy=build_policy(aggregate="weighted")), calls


def decision_of(result: RunResult) -> tuple[object, ...]:
    d = result.decision
    return d.status, d.label, d.branches, result.votes


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(run=runs())
@example(run=weighted_split())
def test_re_vote_under_the_run_s_own_spec_is_idempotent(
    tmp_path: Path, run: tuple[RunSpec, list[CallResult]]
) -> None:
    spec, calls = run
    db = f"sqlite:///{tmp_path / 'tally.db'}"

    async def main() -> tuple[RunResult, RunResult, RunResult]:
        async with Tally.open(database_url=db) as tally:
            assert tally.store is not None
            request = RunRequest(run_id=f"r{id(calls)}", input="an input", spec=spec)
            prior = {(c.phase, c.slot): c for c in calls}
            first = await tally.engine.run(request, prior=prior)
            await tally.flush()
            stored = await anyio.to_thread.run_sync(tally.store.get_run, request.run_id)
            (again,) = await tally.revote([request.run_id])
            return first, stored, again

    first, stored, again = anyio.run(main)
    assert stored.spec == spec
    assert decision_of(stored) == decision_of(first)
    assert decision_of(again) == decision_of(first), (spec.policy.describe(), calls)
