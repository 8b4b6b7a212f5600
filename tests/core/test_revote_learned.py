"""Re-voting a batch under learned reliability: fit the stored answers, decide every run by
the fitted posterior through the usual engine, with no new call; bad uses refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.cli import app
from core.experiments.reliability import batch_reliability, store_scenario
from core.sim.scenarios import SCENARIOS
from core.store import Store

ITEMS = 120


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    db = f"sqlite:///{tmp_path_factory.mktemp('learned') / 'tally.db'}"
    with Store(db) as store:
        store.ensure_schema()
        bid = store_scenario(store, SCENARIOS["uneven"], ITEMS)
    return db, bid


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_a_learned_re_vote_decides_by_the_posterior(stored: tuple[str, str]) -> None:
    db, bid = stored
    res = cli(
        "revote", "--batch", bid, "--aggregate", "dawid-skene", "--database-url", db, "--json"
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    report, runs = doc["reliability"], doc["runs"]
    assert report["method"] == "dawid-skene" and report["items"] == ITEMS
    models = {m["model"] for m in report["models"]}
    assert models == {f"sim:{m.name}" for m in SCENARIOS["uneven"].panel}
    for m in report["models"]:
        assert 0.0 <= m["accuracy"] <= 1.0
        assert set(m["confusion"]) == set(report["labels"])
    assert report["independence_basis"] == "gold"
    assert [s["aggregate"] for s in report["scores"]] == [
        "majority",
        "weighted",
        "one-coin",
        "dawid-skene",
    ]
    assert len(runs) == ITEMS
    weights = report["weights"]
    with Store(db) as store:
        fit = batch_reliability(store, bid)[1]
    for run in runs:
        assert run["spec"]["policy"]["aggregation"] == "weighted"
        learned = {
            f"{m['provider']}:{m['model']}": m["weight"] for m in run["spec"]["panel"]["models"]
        }
        assert learned == pytest.approx(
            {name: max(w, 0.001) for name, w in weights.items()}, abs=1e-6
        )
        assert all(c["cached"] for c in run["calls"])  # every answer reused: no new call
        old = f"{bid}-{run['item_id']}"  # store_scenario's run ids
        decision = run["decision"]
        assert decision["label"] == fit.winner[old]
        if fit.winner[old] is None:
            assert decision["status"] == "tie" and decision["confidence"] is None
            continue
        assert decision["status"] == "decided"
        assert decision["confidence"] == pytest.approx(fit.confidence[old])
        assert doc["confidence"][run["run_id"]] == decision["confidence"]
        assert "posterior" in decision["reason"]


def test_clamping_gold_leaves_nothing_to_score_on(stored: tuple[str, str]) -> None:
    db, bid = stored
    res = cli(
        "revote",
        "--batch",
        bid,
        "--aggregate",
        "one-coin",
        "--clamp-gold",
        "--database-url",
        db,
        "--json",
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["reliability"]
    assert report["method"] == "one-coin" and report["known"] == ITEMS
    assert report["scores"] == [] and report["calibration"] == []


def test_the_human_output_names_the_effective_voters(stored: tuple[str, str]) -> None:
    db, bid = stored
    res = cli("revote", "--batch", bid, "--aggregate", "dawid-skene", "--database-url", db)
    assert res.exit_code == 0, res.output
    assert "independent ones" in res.stdout and "sim:uneven-strong" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["revote", "r1", "--aggregate", "dawid-skene"], "learns from a whole batch"),
        (["revote", "--batch", "B", "--clamp-gold"], "--clamp-gold goes with"),
        (["revote", "--batch", "nope", "--aggregate", "dawid-skene"], "no batch 'nope'"),
    ],
)
def test_bad_uses_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    res = cli(*args, "--database-url", f"sqlite:///{tmp_path / 'tally.db'}")
    assert res.exit_code == 2, res.output
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_scenario_models_are_served_by_the_sim_but_not_offered() -> None:
    from core.config import TallyConfig
    from core.panel import ModelSpec
    from core.providers.registry import build_registry, sim_catalogue, sim_prices

    registry = build_registry(TallyConfig())
    registry.resolve(ModelSpec.parse("sim:uneven-strong"))  # no error: it is served
    assert "uneven-strong" not in sim_catalogue()
    assert "sim:uneven-strong" in sim_prices()


def test_a_new_batch_with_dawid_skene_runs_majority_fits_and_decides_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0")
    rows = (Path(__file__).parents[2] / "data" / "regression.csv").read_text().splitlines()
    small = tmp_path / "small.csv"
    small.write_text("\n".join(rows[:41]) + "\n")
    db = f"sqlite:///{tmp_path / 'tally.db'}"
    models = [a for m in ("sim-strong", "sim-fast", "sim-mid") for a in ("-m", f"sim:{m}")]
    res = cli(
        "batch", str(small), "--gold-column", "label", "--labels", "regression,no regression",
        *models,
        "--aggregate", "dawid-skene", "--database-url", db, "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["effective_voters"]["basis"] == "gold"
    assert summary["effective_voters"]["voters"] == 3
    learned = summary["learned"]
    assert learned["method"] == "dawid-skene" and len(learned["runs"]) == 40
    assert sum(learned["statuses"].values()) == 40
    assert 0.0 <= learned["accuracy"] <= 1.0
    with Store(db) as store:
        first = store.get_batch(summary["batch_id"]).spec.policy
        again = store.get_run(learned["runs"][0]).spec
    assert first.aggregation == "majority"  # the first pass
    assert again.policy.aggregation == "weighted"  # the second, under learned weights
    assert {m.name for m in again.panel.models} == {"sim:sim-strong", "sim:sim-fast", "sim:sim-mid"}
    shown = cli(
        "batch", str(small), "--gold-column", "label", "--labels", "regression,no regression",
        *models,
        "--aggregate", "dawid-skene", "--database-url", f"sqlite:///{tmp_path / 'b.db'}",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())  # the table wraps its cells
    assert "your 3 votes are worth" in text
    assert "dawid-skene:" in text and "decisions changed, accuracy" in text


def test_each_decisions_confidence_is_calibrated_against_gold(stored: tuple[str, str]) -> None:
    """The Disagreement report bins every stored decision's confidence with how often its
    label was the gold; a higher confidence bin is right more often on the uneven panel."""
    from core.experiments.disagreement import analyse_batch

    db, bid = stored
    with Store(db) as store:
        report = analyse_batch(store, bid)
        runs = {r.run_id: r for r in store.batch_results(bid)}
    assert report.confidence_items == sum(r.decision.confidence is not None for r in runs.values())
    assert report.confidence_items > ITEMS // 2
    filled = [b for b in report.confidence_calibration if b.count]
    assert sum(b.count for b in filled) == report.confidence_items
    for b in filled:
        assert b.mean_confidence is not None and b.lower <= b.mean_confidence <= b.upper
    assert report.confidence_error is not None and 0.0 <= report.confidence_error <= 1.0
    low, high = filled[0], filled[-1]
    assert high.accuracy is not None and low.accuracy is not None
    assert high.accuracy > low.accuracy


def test_re_voting_a_learned_run_under_its_own_spec_gives_its_own_decision(
    stored: tuple[str, str],
) -> None:
    import anyio

    from core.api import Tally

    db, bid = stored

    async def go() -> tuple[list[Any], list[Any]]:
        async with Tally.open(database_url=db) as tally:
            learned = await tally.revote_learned(bid, method="dawid-skene")
            again = await tally.revote([r.run_id for r in learned.runs])
            return learned.runs, again

    first, again = anyio.run(go)
    assert len(again) == ITEMS
    for before, after in zip(first, again, strict=True):
        assert before.spec.policy.posterior is not None
        assert after.spec == before.spec  # the posterior is part of what ran
        assert (after.decision.status, after.decision.label) == (
            before.decision.status,
            before.decision.label,
        )
        assert after.decision.confidence == before.decision.confidence
        assert after.decision.reason == before.decision.reason
