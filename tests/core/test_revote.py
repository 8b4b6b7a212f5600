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
        "conservative,human",
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
    assert [t["kind"] for t in policy["tie_breaks"]] == ["conservative", "human"]
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
