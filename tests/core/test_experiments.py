"""Error against N and disagreement, orchestrated: a draw through the engine and the in-process
sim into the store, then every panel's curve and a batch's agreement statistics read back.

The sim is tuned so that on the bundled regression set the default panel's majority of 5
makes roughly half the errors of one call; the curve must find that from the stored draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import pytest

from core.api import Tally, build_policy
from core.auth import local_identity
from core.errors import InputError, TallyError
from core.experiments import (
    CurveReport,
    analyse_batch,
    analyse_draws,
    load_labelled,
    plan_draw,
    read_batch_draws,
    read_draws,
    run_curve,
)
from core.experiments.curve import MIXED, load_report, pick_items
from core.experiments.sweep import SweepReport
from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.sim.models import DEFAULT_PANEL
from core.spec import RunSpec
from core.store import BatchItem, Store
from tests.specs import spec

PANEL = [f"sim:{name}" for name in DEFAULT_PANEL]
ITEMS = 100
K = 5
NS = [1, 3, 5]


@dataclass(frozen=True)
class Drawn:
    report: CurveReport
    url: str


def quiet_env(mp: pytest.MonkeyPatch) -> None:
    mp.setenv("TALLY_SIM_TIME_SCALE", "0.001")
    for name in ("TALLY_CONFIG", "TALLY_SIM_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        mp.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet_env(monkeypatch)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drawn]:
    """One curve of the default sim panel on 100 regression items, K=5, through the engine."""
    url = f"sqlite:///{tmp_path_factory.mktemp('curve') / 'curve.db'}"
    with pytest.MonkeyPatch.context() as mp:
        quiet_env(mp)
        plan = plan_draw(load_labelled("regression"), PANEL, K, NS, items=ITEMS, seed=0)

        async def main() -> CurveReport:
            async with Tally.open(database_url=url) as tally:
                return await run_curve(tally, plan, NS, seed=0)

        yield Drawn(anyio.run(main), url)


@pytest.fixture
def store(drawn: Drawn) -> Iterator[Store]:
    with Store(drawn.url) as s:
        yield s


# -- the curve of the default panel -----------------------------------------------------------


def test_the_default_panel_recommends_an_n_and_roughly_halves_the_error(drawn: Drawn) -> None:
    report = drawn.report
    head = report.panel()
    assert report.headline == MIXED and head.kind == "mixed" and head.panel == PANEL
    assert [p.n for p in head.curve.points] == NS
    rec = head.recommendation
    assert rec.n in NS
    assert rec.halving_check is not None
    print(f"\nrecommended N={rec.n}, error(5)/error(1)={rec.halving_check:.2f}")
    assert 0.30 <= rec.halving_check <= 0.70
    assert rec.removed is not None and rec.removed > 0.25
    for point in head.curve.points:
        assert point.ci_low <= point.error <= point.ci_high
        assert point.cost_per_item is not None and point.latency_ms is not None
    five = head.curve.point(5)
    assert five is not None
    # correlated errors: the vote does worse than independent voters would
    assert five.error > five.independent_error
    assert head.curve.rho is not None and head.curve.rho > 0.1


def test_the_draw_is_a_stored_batch_and_the_curve_reads_back(drawn: Drawn, store: Store) -> None:
    report = drawn.report
    info = store.get_batch(report.batch_id)
    assert info.total == ITEMS and info.status == "done"
    runs = store.batch_results(report.batch_id)
    assert len(runs) == ITEMS
    assert all(len([c for c in r.calls if c.phase == "panel"]) == K * len(PANEL) for r in runs)
    assert report.items + report.skipped_items == ITEMS
    assert load_report(store, report.curve_id or "") == report
    assert store.list_curves()[0].name == "regression"


def test_one_call_of_a_mixed_panel_is_a_call_to_a_random_member(drawn: Drawn) -> None:
    report = drawn.report
    singles = [report.panel(m).curve.points[0].error for m in PANEL]
    one = report.panel().curve.points[0]
    assert one.n == 1
    assert one.error == pytest.approx(float(np.mean(singles)))
    assert report.panel().one_call.startswith("one call of a model picked at random")


@pytest.mark.parametrize("model", ["sim:sim-strong", "sim:sim-mid", "sim:sim-fast"])
def test_samples_of_one_model_err_together_more_than_the_mixed_panel(
    drawn: Drawn, model: str
) -> None:
    same = drawn.report.panel(model).curve.rho
    mixed = drawn.report.panel().curve.rho
    assert same is not None and mixed is not None
    assert same > mixed


def test_harmful_items_and_early_stop_come_with_the_curve(drawn: Drawn) -> None:
    head = drawn.report.panel()
    harm = head.harm
    assert harm.items, "the regression set has ambiguous items one call gets wrong"
    assert all(harm.item_accuracy[i] < 0.5 for i in harm.items)
    assert not harm.set_harmful
    rules = {r.rule: r for r in head.early_stop.rules}
    assert rules["fixed"].calls_per_item == 5
    assert rules["decided"].accuracy == pytest.approx(rules["fixed"].accuracy)
    assert rules["decided"].calls_per_item < 5
    assert head.early_stop.best is not None


def test_a_custom_panel_weights_one_call_by_its_slots(drawn: Drawn, store: Store) -> None:
    draws = read_batch_draws(store, drawn.report.batch_id)
    custom = ["sim:sim-strong", "sim:sim-strong", "sim:sim-fast"]
    report = analyse_draws(
        draws, set_name="regression", batch_id=drawn.report.batch_id, ns=[1, 3], panels=[custom]
    )
    entry = report.panel(",".join(custom))
    assert entry.kind == "custom"
    strong = report.panel("sim:sim-strong").curve.points[0].error
    fast = report.panel("sim:sim-fast").curve.points[0].error
    assert entry.curve.points[0].error == pytest.approx((2 * strong + fast) / 3)
    with pytest.raises(InputError, match="did not sample"):
        analyse_draws(draws, set_name="r", batch_id="b", ns=[1], panels=[["sim:sim-oracle"]])
    with pytest.raises(InputError, match="K=5 samples per model is fewer than N=7 needs"):
        analyse_draws(draws, set_name="r", batch_id="b", ns=[1, 7])


# -- refusals before anything is paid for -----------------------------------------------------


def test_plan_refuses_what_cannot_be_curved(tmp_path: Path) -> None:
    regression = load_labelled("regression")
    with pytest.raises(InputError, match=r"^K=3 samples per model is fewer than N=5 needs$"):
        plan_draw(regression, PANEL, 3, [1, 3, 5])
    with pytest.raises(InputError, match="more than the 64 a run allows"):
        plan_draw(regression, PANEL, 15, [1, 3])
    with pytest.raises(InputError, match="unknown labelled set 'nope'"):
        load_labelled("nope")
    no_gold = tmp_path / "no_gold.csv"
    no_gold.write_text("text,other\nthe button moved,1\n")
    with pytest.raises(InputError, match=r"^curve needs gold labels: no_gold\.csv has no column"):
        load_labelled(str(no_gold))
    empty_gold = tmp_path / "empty_gold.csv"
    empty_gold.write_text("text,label\nthe button moved,\nthe page is blank,\n")
    with pytest.raises(InputError, match=r"^curve needs gold labels: no row"):
        load_labelled(str(empty_gold))


def test_a_file_set_takes_its_labels_from_the_gold(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"text": "the logo is blurry", "gold": "Bug"}\n'
        '{"text": "please add dark mode", "gold": "idea"}\n'
        '{"text": "no gold here"}\n'
    )
    labelled = load_labelled(str(path), gold_column="gold")
    assert [i.gold for i in labelled.items] == ["Bug", "idea"]
    assert labelled.task.format.kind == "label"
    assert set(labelled.task.format.labels) == {"Bug", "idea"}  # type: ignore[union-attr]


def test_items_are_picked_at_random_but_repeatably_and_in_set_order() -> None:
    items = [BatchItem(index=i, item_id=str(i), text=f"t{i}", gold="a") for i in range(50)]
    first = pick_items(items, 10, seed=4)
    assert first == pick_items(items, 10, seed=4)
    assert first != pick_items(items, 10, seed=5)
    assert [i.index for i in first] == sorted(i.index for i in first)
    assert pick_items(items, None, seed=0) == items


# -- reading stored answers -------------------------------------------------------------------


def call(
    model: str, sample: int, status: CallStatus, answer: str | None, **kw: object
) -> CallResult:
    return CallResult(
        slot=sample,
        model=model,
        sample=sample,
        status=status,
        answer=answer,
        **kw,  # type: ignore[arg-type]
    )


def run(
    item: str, gold: str | None, calls: list[CallResult], cost: float | None, known: float = 0.0
) -> RunResult:
    return RunResult(
        run_id=f"run-{item}",
        input=item,
        spec=spec([c.model for c in calls]),
        decision=Decision(status=DecisionStatus.DECIDED),
        votes={},
        calls=calls,
        cost_usd=cost,
        cost_known_usd=known,
        latency_ms=1.0,
        item_id=item,
        gold=gold,
    )


def test_read_draws_keeps_failed_calls_as_no_vote_and_unknown_prices_unknown() -> None:
    ok, bad = CallStatus.OK, CallStatus.INVALID
    results = [
        run(
            "a",
            "yes",
            [
                call("p:m2", 0, ok, "yes", tokens_in=5, cost_usd=0.2, latency_ms=10.0),
                call("p:m1", 1, ok, "no", tokens_in=5, cost_usd=None, latency_ms=30.0),
                call("p:m1", 0, bad, None, tokens_in=5, cost_usd=None),
                call("p:m2", 1, CallStatus.ERROR, None),
            ],
            None,
            0.2,
        ),
        run("b", "no", [call("p:m2", 0, ok, "no", tokens_in=5, cost_usd=0.4)], 0.4),
        run("c", None, [call("p:m1", 0, ok, "no")], 0.0),
    ]
    draws = read_draws(results, order=["p:m1", "p:m2"])
    assert draws.models == ["p:m1", "p:m2"]
    assert draws.samples == {"a": {"p:m1": [None, "no"], "p:m2": ["yes", None]}}
    assert draws.gold == {"a": "yes"} and draws.run_ids == {"a": "run-a"}
    assert draws.skipped == 1  # b has no answers from p:m1; c has no gold and is not an item
    assert draws.cost_per_call == {"p:m1": None, "p:m2": pytest.approx(0.3)}
    assert draws.latencies == {"p:m2": [10.0], "p:m1": [30.0]}
    assert draws.cost_usd is None
    # the known part stays: the partly unknown run's and the known runs'
    assert (draws.cost_known_usd, draws.cost_unknown_runs) == (pytest.approx(0.6), 1)
    assert draws.k() == 2


def test_a_draw_and_a_sweep_with_a_partly_unknown_cost_read_at_least_x_plus_unknown() -> None:
    results = [
        run("a", "yes", [call("p:m", 0, CallStatus.OK, "yes", tokens_in=5)], None, 0.25),
        run("b", "yes", [call("p:m", 0, CallStatus.OK, "yes", tokens_in=5)], 0.5),
    ]
    report = analyse_draws(read_draws(results), set_name="s", batch_id="b", ns=[1])
    assert report.cost_text() == "≥ $0.75 + unknown"
    assert report.model_copy(update={"cost_known_usd": None}).cost_text() == "unknown"
    sweep = SweepReport.model_construct(  # only what its cost reads from
        model="sim:sim-mid", cost_usd=None, cost_known_usd=0.5, cost_unknown_calls=1
    )
    assert sweep.cost_text() == "≥ $0.50 + unknown (simulated)"


def test_a_draw_without_a_single_vote_is_a_failure_not_a_curve() -> None:
    results = [
        run(str(i), "yes", [call("p:m", 0, CallStatus.ERROR, None, error="HTTP 500")], 0.0)
        for i in range(3)
    ]
    with pytest.raises(TallyError, match="no call of the draw returned a valid answer") as err:
        analyse_draws(read_draws(results), set_name="s", batch_id="b", ns=[1])
    assert err.value.exit_code == 1


# -- disagreement of a stored batch -----------------------------------------------------------


def test_disagreement_of_the_draw(drawn: Drawn, store: Store) -> None:
    result = analyse_batch(store, drawn.report.batch_id, top=10)
    assert result.runs == ITEMS
    assert result.models == sorted(PANEL) and result.raters == sorted(PANEL)
    assert len(result.kappas) == 10 and all(p.kappa is not None for p in result.kappas)
    diagonal = {c.model_a for c in result.heatmap if c.model_a == c.model_b}
    assert diagonal == set(PANEL)  # samples of one model against each other
    assert result.fleiss_kappa is not None and 0 < result.fleiss_kappa < 1
    assert 0 < result.fleiss_items <= ITEMS
    assert result.independence is not None and result.independence.voters == len(PANEL)
    assert result.independence.effective is not None
    assert 1.0 <= result.independence.effective < len(PANEL)
    assert set(result.accuracy_gold) == set(PANEL)
    assert result.accuracy_gold["sim:sim-strong"] > result.accuracy_gold["sim:sim-fast"]
    assert result.accuracy_review == {} and result.reviewed == 0
    assert sum(b.count for b in result.reliability) == result.calibration_items > 0
    assert result.calibration_error is not None
    entropies = [h.entropy for h in result.hardest]
    assert entropies == sorted(entropies, reverse=True) and len(entropies) <= 10
    for hard in result.hardest:
        assert store.get_run(hard.run_id).item_id == hard.item_id


def test_reviewers_decisions_count_as_a_reference(tmp_path: Path) -> None:
    """A two-model batch whose ties go to a human; a reviewer resolves one of them."""
    url = f"sqlite:///{tmp_path / 'review.db'}"
    labelled = load_labelled("regression")

    async def main() -> str:
        async with Tally.open(database_url=url) as tally:
            return await tally.run_batch(
                labelled.items[:40],
                spec=RunSpec(
                    task=labelled.task,
                    panel=tally.panel(["sim:sim-fast", "sim:sim-biased"]),
                    policy=build_policy(tie_break="human"),
                ),
            )

    batch_id = anyio.run(main)
    with Store(url) as store:
        waiting = store.review_queue()
        assert waiting, "sim-fast and sim-biased disagree on some of 40 items"
        store.decide_review(
            waiting[0].run_id,
            local_identity("ana"),
            label=waiting[0].gold or "",
            reason="the gold label reads right",
        )
        resolved = store.get_run(waiting[0].run_id)
        result = analyse_batch(store, batch_id)
    assert result.reviewed == 1
    assert set(result.accuracy_review) == {"sim:sim-fast", "sim:sim-biased"}
    assert sorted(result.accuracy_review.values()) == [0.0, 1.0]  # a tie: one of each was right
    assert result.human_vs_panel is None  # a tie has no plurality to agree with
    assert result.review_stats["resolved_today"] == 1
    assert resolved.decision.status == DecisionStatus.RESOLVED
