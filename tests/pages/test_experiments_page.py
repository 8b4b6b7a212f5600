"""The Experiments page under AppTest: each tab with nothing stored, then with a stored curve,
its draw and a sweep; a curve drawn from the page through the runner; bad input beside the
form; a demo sweep; saving a ceiling, refused without a tally.toml and written with one."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from streamlit.testing.v1 import AppTest

from core.analysis import SweepPoint, analyse_sweep
from core.api import Tally
from core.config import load_config
from core.experiments import CurveReport, SweepReport, load_labelled, plan_draw, run_curve
from core.experiments.sweep import save_report
from core.store import Store

PAGE = "pages/experiments.py"
Rerun = Callable[[AppTest, Callable[[AppTest], bool]], AppTest]


def stored_curve(url: str) -> CurveReport:
    plan = plan_draw(
        load_labelled("regression"),
        ["sim:sim-strong", "sim:sim-fast", "sim:sim-mid"],
        5,
        [1, 3, 5],
        items=24,
        seed=2,
    )

    async def main() -> CurveReport:
        async with Tally.open(database_url=url) as tally:
            return await run_curve(tally, plan, [1, 3, 5])

    return anyio.run(main)


def stored_sweep(store: Store, model: str = "sim:sim-fast") -> SweepReport:
    """A capacity-1 shape: throughput flat, latency in proportion to concurrency."""
    points = [
        SweepPoint(
            concurrency=c,
            calls=16,
            ok=16,
            errors=0,
            elapsed_s=1.6,
            throughput=10.0,
            p50_ms=100.0 * c,
            p95_ms=120.0 * c,
        )
        for c in (1, 2, 4, 8)
    ]
    report = SweepReport(
        model=model,
        provider=model.partition(":")[0],
        levels=[1, 2, 4, 8],
        calls_per_level=16,
        calls=65,
        cost_usd=0.01,
        elapsed_s=6.4,
        verdict=analyse_sweep(points),
    )
    return save_report(store, report)


def plain(text: object) -> str:
    """Markdown as read: the page escapes every markdown character of what it shows."""
    return re.sub(r"\\(.)", r"\1", str(text))


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "error", "warning", "success")
             for e in at.get(kind)]  # fmt: skip
    return " ".join(plain(p) for p in parts)


def tab(at: AppTest, label: str) -> object:
    return next(t for t in at.tabs if t.label == label)


def charts(element: object) -> int:
    return len(element.get("plotly_chart"))  # type: ignore[attr-defined]


def test_the_page_explains_itself_with_nothing_stored(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    at = page_test(PAGE).run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Error vs N", "Disagreement", "Throughput wall"]
    shown = texts(at)
    assert "No curve yet" in shown
    assert "No batch yet" in shown
    assert "No sweep yet" in shown
    assert charts(at) == 0


def test_each_tab_renders_stored_data(
    page_test: Callable[[str], AppTest], store: Store, app_env: str
) -> None:
    report = stored_curve(app_env)
    stored_sweep(store)
    at = page_test(PAGE).run()
    assert not at.exception, [e.message for e in at.exception]

    curve = tab(at, "Error vs N")
    metrics = {m.label: m.value for m in curve.get("metric")}  # type: ignore[attr-defined]
    head = report.panel()
    assert metrics["Recommended N"] == str(head.recommendation.n)
    assert metrics["Halving check"] == f"{head.recommendation.halving_check:.2f}"
    # the curve with cost and latency, every panel, and each model's confusion matrix
    assert charts(curve) == 2 + len(report.models)
    fitted = next(f.value for f in curve.dataframe if "estimated accuracy" in f.value)  # type: ignore[attr-defined]
    assert list(fitted["model"]) == [m.model for m in report.reliability]
    assert list(fitted["estimated accuracy"]) == [f"{m.accuracy:.1%}" for m in report.reliability]
    assert "**Learned reliability** (Dawid–Skene on the draw's answers, no gold)" in texts(at)
    assert "halving check: error(5) / error(1)" in texts(at)
    verdicts = [
        b.value.replace("\\", "")
        for b in (*at.success, *at.warning, *at.info)
        if "handbook" in b.value
    ]
    assert any(v.startswith("The handbook's check ") and "interval" in v for v in verdicts)
    frames = curve.dataframe  # type: ignore[attr-defined]
    early = frames[-1].value
    assert list(early["rule"]) == ["fixed", "decided", "beta", "window", "dawid-skene"]

    disagreement = tab(at, "Disagreement")
    assert charts(disagreement) == 4  # heatmap, accuracy, vote share and confidence calibration
    assert "decisions with gold; calibration error" in texts(at)
    labels = {m.label for m in disagreement.get("metric")}  # type: ignore[attr-defined]
    assert {"Fleiss' kappa", "Effective independent voters", "Calibration error"} <= labels

    wall = tab(at, "Throughput wall")
    assert charts(wall) == 1
    assert "serves one request at a time: parallel calls only queue" in texts(at)
    assert "Handbook: Parallel models still serialise on a single tool" in texts(at)


def test_a_panel_of_the_curve_can_be_chosen(
    page_test: Callable[[str], AppTest], store: Store, app_env: str
) -> None:
    report = stored_curve(app_env)
    at = page_test(PAGE).run()
    at.selectbox(key="exp.panel").set_value("sim:sim-fast").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.get("metric")}
    assert metrics["Recommended N"] == str(report.panel("sim:sim-fast").recommendation.n)


def test_a_hard_item_opens_its_run(
    page_test: Callable[[str], AppTest], store: Store, app_env: str
) -> None:
    stored_curve(app_env)
    at = page_test(PAGE).run()
    assert "Slots" not in {m.label for m in at.get("metric")}
    choice = at.selectbox(key="exp.open_run")
    run_id = choice.options[1]
    choice.set_value(run_id).run()
    assert not at.exception
    run = store.get_run(run_id)
    metrics = {m.label: m.value for m in at.get("metric")}
    assert metrics["Slots"] == str(run.spec.panel.n) == "15"  # three models, K=5
    calls = [f.value for f in at.dataframe if "slot" in f.value.columns]
    assert len(calls) == 1 and len(calls[0]) == len(run.calls)


def test_a_curve_drawn_from_the_page(
    page_test: Callable[[str], AppTest], store: Store, rerun_until: Rerun
) -> None:
    at = page_test(PAGE).run()
    at.number_input(key="exp.items").set_value(10)
    at.number_input(key="exp.k").set_value(3)
    at.text_input(key="exp.ns").set_value("1,3")
    at.button(key="exp.draw").click().run()
    assert not at.exception
    rerun_until(at, lambda a: "exp.curve" in a.session_state and bool(a.session_state["exp.curve"]))
    # one press, one job: the draw and its curve are that job's work
    from core.jobs import JobStore

    (job,) = JobStore(store).list_jobs()
    assert (job.kind, job.status, job.done, job.total) == ("curve", "done", 10, 10)
    curves = store.list_curves()
    assert job.result_ref == curves[0].id
    assert len(curves) == 1 and curves[0].result["items"] == 10
    assert store.get_batch(curves[0].result["batch_id"]).status == "done"
    models = len(curves[0].result["models"])  # a confusion matrix each, beside the two curves
    assert charts(tab(at, "Error vs N")) == 2 + models


def test_bad_input_is_shown_beside_the_form_and_nothing_is_drawn(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    at = page_test(PAGE).run()
    at.number_input(key="exp.k").set_value(3)
    at.text_input(key="exp.ns").set_value("1,3,5")
    at.button(key="exp.draw").click().run()
    assert not at.exception
    assert "K=3 samples per model is fewer than N=5 needs" in " ".join(
        plain(e.value) for e in at.error
    )
    assert store.list_batches() == []


def test_the_demo_sweep_shows_a_serialising_downstream(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    """The sweep is a background job: the page polls it and shows it when it is done."""
    from core.jobs import JobStore

    at = page_test(PAGE)
    at.default_timeout = 60
    at.run()
    at.radio(key="exp.demo_mode").set_value("capacity-1")
    at.button(key="exp.run_demo").click().run()
    assert not at.exception
    (job,) = JobStore(store).list_jobs()
    assert job.kind == "sweep" and job.spec["demo"] == "capacity-1"
    deadline = time.monotonic() + 60
    while not JobStore(store).get(job.id).finished:  # idle, so the page's reruns do not
        assert time.monotonic() < deadline  # compete with the sweep being measured
        time.sleep(0.2)
    at.run()  # the page's poll after the job ended shows its sweep
    sweeps = store.list_sweeps()
    assert JobStore(store).get(job.id).result_ref == sweeps[0].id == at.session_state["exp.sweep"]
    assert [s.name for s in sweeps] == ["sim-capacity-1:sim-fast"]
    assert sweeps[0].result["verdict"]["shape"] == "serialises"
    assert "serves one request at a time" in texts(at)
    assert all(b.key != "exp.save" for b in at.button)  # nothing of the user's to save


def test_saving_the_ceiling_needs_a_tally_toml(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    stored_sweep(store)
    at = page_test(PAGE).run()
    at.button(key="exp.save").click().run()
    assert "no tally.toml is in use" in " ".join(plain(e.value) for e in at.error)


def test_saving_the_ceiling_writes_the_file_in_use(
    page_test: Callable[[str], AppTest],
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "tally.toml"
    config.write_text("[defaults]\nn = 5\n")
    monkeypatch.setenv("TALLY_CONFIG", str(config))
    stored_sweep(store)
    at = page_test(PAGE).run()
    at.button(key="exp.save").click().run()
    assert not at.exception
    assert "Saved max_concurrency = 1 for [providers.sim]" in " ".join(
        plain(e.value) for e in at.success
    )
    assert load_config(config).providers["sim"].max_concurrency == 1


def test_the_learned_reliability_section_fits_a_stored_batch(
    page_test: Callable[[str], AppTest], store: Store, app_env: str
) -> None:
    from core.experiments.reliability import store_scenario
    from core.sim.scenarios import SCENARIOS

    store_scenario(store, SCENARIOS["uneven"], 150)
    at = page_test(PAGE).run()
    assert not at.exception, [e.message for e in at.exception]
    disagreement = tab(at, "Disagreement")
    before = charts(disagreement)
    at.button(key="exp.fit").click().run()
    assert not at.exception, [e.message for e in at.exception]
    disagreement = tab(at, "Disagreement")
    # one confusion matrix per model and the calibration of the confidence
    assert charts(disagreement) == before + 5 + 1
    shown = texts(at)
    assert "votes are worth" in shown
    frames = [f.value for f in disagreement.dataframe]  # type: ignore[attr-defined]
    models = next(f for f in frames if "estimated accuracy" in f.columns)
    assert set(models["model"]) == {f"sim:{m.name}" for m in SCENARIOS["uneven"].panel}
    scores = next(f for f in frames if "decided by" in f.columns)
    assert list(scores["decided by"]) == ["majority", "weighted", "one-coin", "dawid-skene"]
