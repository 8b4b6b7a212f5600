"""Re-voting stored runs: under a run's own spec a re-vote gives the run's own decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from core.api import Tally, build_policy, build_task
from core.cli import app
from core.engine import reusable_calls
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


def cli_revote(db: str, *args: str) -> Any:
    done = CliRunner().invoke(app, ["revote", *args, "--database-url", db, "--json"])
    return done


@pytest.fixture
def weighted_db(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'tally.db'}"
    with Store(db) as store:
        store.ensure_schema()
        stored_run(store, weighted_spec(), split_by_weight())
    return db


def test_the_cli_re_votes_under_the_run_s_own_policy_without_policy_flags(weighted_db: str) -> None:
    done = cli_revote(weighted_db, "r1")
    assert done.exit_code == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["decision"]["label"] == "regression"
    assert doc["spec"]["policy"]["aggregation"] == "weighted"


def test_the_cli_re_vote_takes_every_policy_flag_run_takes(weighted_db: str) -> None:
    """The flags ``tally run`` reads for the policy are the flags ``tally revote`` reads."""
    from core.cli import POLICY_OPTIONS

    run_flags = option_names("run")
    policy_flags = {flag for name in POLICY_OPTIONS for flag in option_flags("run", name)}
    assert policy_flags <= run_flags and policy_flags <= option_names("revote")
    assert {"--aggregate", "--tie-break", "--accept", "--early-stop", "--min-valid"} <= policy_flags
    done = cli_revote(
        weighted_db,
        "r1",
        "--aggregate",
        "at-least:2",
        "--tie-break",
        "human,abstain",  # conservative is refused: this task has no conservative order
        "--min-valid",
        "2",
        "--count-errors",
        "--count-invalid",
        "--early-stop",
    )
    assert done.exit_code == 0, done.stderr
    doc = json.loads(done.stdout)
    policy = doc["spec"]["policy"]
    assert (policy["aggregation"], policy["k"]) == ("at-least", 2)
    assert [t["kind"] for t in policy["tie_breaks"]] == ["human", "abstain"]
    assert policy["quorum"] == {"min_valid": 2, "count_invalid": True, "count_errors": True}
    assert policy["early_stop"] is True
    assert doc["decision"]["label"] == "no regression"  # two of three, counted as votes


def command(name: str) -> Any:
    import typer.main

    group = typer.main.get_command(app)
    return group.commands[name]  # type: ignore[attr-defined]


def option_names(name: str) -> set[str]:
    return {flag for p in command(name).params for flag in p.opts}


def option_flags(name: str, param: str) -> set[str]:
    return {flag for p in command(name).params if p.name == param for flag in p.opts}


def early_stopped(db: str) -> RunSpec:
    """A run of five whose early stop cancelled the last two slots once three agreed."""
    spec = RunSpec(
        task=TASK,
        panel=Panel.build(["sim:sim-strong", "sim:sim-fast", "sim:sim-mid"], 5),
        policy=build_policy(early_stop=True),
    )
    calls = [ok(i, spec.slot_names[i], "regression") for i in range(3)] + [
        CallResult(
            slot=i,
            model=spec.slot_names[i],
            status=CallStatus.CANCELLED,
            error="not needed: cancelled before it began",
            tokens_in=0,
            tokens_out=0,
            cost_usd=0.0,
        )
        for i in (3, 4)
    ]
    with Store(db) as store:
        store.ensure_schema()
        stored_run(store, spec, calls)
    return spec


def test_a_re_vote_that_needs_votes_early_stop_cancelled_names_them(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tally.db'}"
    spec = early_stopped(db)
    (own,) = revote(db, ["r1"])
    assert own.decision.label == "regression" and own.missing == []  # its own policy: settled
    (strict,) = revote(db, ["r1"], policy=build_policy(aggregate="unanimous", count_errors=True))
    assert [(m.slot, m.model) for m in strict.missing] == [
        (3, spec.slot_names[3]),
        (4, spec.slot_names[4]),
    ]
    assert [c.status for c in strict.calls[3:]] == [CallStatus.CANCELLED] * 2  # nothing called


def test_expand_calls_just_the_missing_votes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tally.db'}"
    early_stopped(db)
    policy = build_policy(aggregate="unanimous", count_errors=True)
    (done,) = revote(db, ["r1"], policy=policy, expand=True)
    assert done.missing == []
    assert [c.cached for c in done.calls] == [True, True, True, False, False]  # 0-2 reused
    assert all(c.status != CallStatus.CANCELLED for c in done.calls)
    assert len(done.calls) == 5


def test_the_cli_says_which_votes_are_missing_and_how_to_get_them(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tally.db'}"
    spec = early_stopped(db)
    done = CliRunner().invoke(
        app, ["revote", "r1", "--aggregate", "unanimous", "--count-errors", "--database-url", db]
    )
    assert done.exit_code == 0, done.stderr
    note = [line for line in done.stderr.splitlines() if "missing" in line]
    assert len(note) == 1 and f"slot 3 {spec.slot_names[3]}" in note[0]
    assert "--expand" in note[0]
    expanded = cli_revote(db, "r1", "--aggregate", "unanimous", "--count-errors", "--expand")
    assert expanded.exit_code == 0, expanded.stderr
    assert json.loads(expanded.stdout)["missing"] == []


def test_resume_and_re_vote_share_one_rule_for_cancelled_calls() -> None:
    """A cancelled call has no reply: neither a resumed run nor a re-vote reuses it as a
    finished call (resume calls it again, a re-vote with expand does)."""
    calls = [
        ok(0, "sim:a", "yes"),
        CallResult(slot=1, model="sim:a", status=CallStatus.CANCELLED),
        CallResult(slot=2, model="sim:a", status=CallStatus.ERROR, error="503"),
        CallResult(slot=3, model="sim:a", status=CallStatus.TIMEOUT),
        CallResult(slot=4, model="sim:a", status=CallStatus.RUNNING),
    ]
    assert sorted(reusable_calls(calls)) == [("panel", 0), ("panel", 2), ("panel", 3)]
