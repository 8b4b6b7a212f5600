"""The rough edges a new user hits: History's page after a filter change, empty charts, who
resolved a review; a fastest-acceptable chart not dwarfed by the calls it cut."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core.auth import local_identity
from core.result import CallResult, CallStatus, Decision, DecisionStatus, Outcome
from core.store import Store, WriteBatch
from core.store.tables import finish_row
from pages import ui
from tests.pages.test_history_page import make_result, total_line

PageTest = Callable[[str], AppTest]


def test_a_filter_change_goes_back_to_the_first_page(page_test: PageTest, store: Store) -> None:
    now = time.time()
    rows = [
        make_result(f"run-{i:03d}", created_at=now - i, text="alpha" if i % 2 else "beta")
        for i in range(240)
    ]
    store.write(WriteBatch(finishes=[finish_row(r, source="cli", finished_at=now) for r in rows]))
    at = page_test("pages/history.py").run()
    at.number_input(key="hist.page").set_value(2).run()
    assert "page 2 of 5" in total_line(at)
    at.text_input(key="hist.text").set_value("alpha").run()
    assert total_line(at) == "**120 runs** match · showing 1–50 · page 1 of 3"
    at.number_input(key="hist.page").set_value(2).run()  # paging itself keeps the page
    assert "page 2 of 3" in total_line(at)


def test_empty_charts_say_so_instead_of_bare_axes(page_test: PageTest, store: Store) -> None:
    at = page_test("pages/history.py").run()
    assert "No runs match these filters, so there is nothing to chart." in [
        i.value for i in at.info
    ]
    assert not at.get("plotly_chart")


def test_run_details_show_who_resolved_a_review(page_test: PageTest, store: Store) -> None:
    now = time.time()
    run = make_result("tied", status=DecisionStatus.NEEDS_REVIEW, label=None, created_at=now)
    store.write(WriteBatch(finishes=[finish_row(run, source="ui", finished_at=now)]))
    store.decide_review("tied", local_identity("Ana"), label="yes", reason="the log shows it")
    at = page_test("pages/history.py").run()
    at.selectbox(key="hist.run").set_value("tied").run()
    lines = [c.value for c in at.caption]
    assert any(line.startswith("Ana chose yes on") and "the log shows it" in line for line in lines)


def test_a_fastest_answer_chart_is_not_dwarfed_by_the_calls_it_cut() -> None:
    calls = [CallResult(slot=0, model="m", status=CallStatus.OK, answer="yes")] + [
        CallResult(slot=i, model="m", status=CallStatus.CANCELLED, error="cancelled")
        for i in range(1, 8)
    ]
    won = Decision(status=DecisionStatus.DECIDED, label="yes", outcome=Outcome.DECIDED)
    fig = ui.vote_chart({"yes": 1}, calls, won)
    assert list(fig.data[0].x) == ["yes"]  # the cut calls get no bar
    assert "7 calls cut once the outcome was known" in fig.layout.title.text
    # a user's cancel still shows what it cut
    stopped = Decision(status=DecisionStatus.FAILED, reason="run cancelled")
    assert "[cancelled]" in list(ui.vote_chart({"yes": 1}, calls, stopped).data[0].x)


def test_a_curve_draw_shows_progress_never_no_curve_yet(
    page_test: PageTest, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "20")  # a draw that takes a while
    at = page_test("pages/experiments.py").run()
    at.number_input(key="exp.items").set_value(4)
    at.number_input(key="exp.k").set_value(3)
    at.text_input(key="exp.ns").set_value("1,3")
    at.button(key="exp.draw").click().run()
    assert not at.exception
    texts = [i.value for i in at.info]
    assert not any("No curve yet" in t for t in texts), texts
    (bar,) = at.get("progress")
    assert "Drawing answers: 0 of 4 items" in bar.proto.text
    assert "time left" in bar.proto.text or "left" in bar.proto.text
    at.button(key="exp.cancel").click().run()


def test_the_curve_form_keeps_its_values_after_a_refusal(page_test: PageTest) -> None:
    at = page_test("pages/experiments.py").run()
    at.number_input(key="exp.k").set_value(3)
    at.text_input(key="exp.ns").set_value("1,3,5")
    at.button(key="exp.draw").click().run()
    assert at.error
    assert at.number_input(key="exp.k").value == 3
    assert at.text_input(key="exp.ns").value == "1,3,5"


def test_agreement_heatmaps_fit_their_colour_scale_to_the_data() -> None:
    assert ui.heatmap_range([0.91, 0.97]) == pytest.approx((0.9, 1.0))
    assert ui.heatmap_range([0.22, 0.78]) == pytest.approx((0.2, 0.8))
    assert ui.heatmap_range([0.5, 0.5]) == pytest.approx((0.45, 0.55))
    assert ui.heatmap_range([0.0, 0.01]) == pytest.approx((0.0, 0.1))
    fig = ui.agreement_heatmap([("a", "b", 0.91, "91%"), ("a", "a", 0.97, "97%")], "t")
    (heat,) = fig.data
    assert (heat.zmin, heat.zmax) == pytest.approx((0.9, 1.0))
    assert fig.layout.yaxis.autorange == "reversed" and heat.colorbar.tickformat == ".0%"


def test_both_agreement_heatmaps_are_drawn_the_same_way() -> None:
    import inspect

    import pages.experiments as experiments_page
    import pages.history as history_page

    for drawn in (experiments_page.heatmap_figure, history_page.agreement_chart):
        source = inspect.getsource(drawn)
        assert "ui.agreement_heatmap(" in source  # one drawing, one colour scale
        assert "update_traces" not in source and "update_layout" not in source


def test_the_curve_chart_has_one_quantity_per_axis() -> None:
    from core.analysis.curves import Curve, CurvePoint, Recommendation
    from core.experiments.curve import PanelCurve
    from pages.experiments import curve_figure

    points = [
        CurvePoint(n=n, error=0.2 / n, ci_low=0.1 / n, ci_high=0.3 / n, independent_error=0.1,
                   effective_voters=None, calls_per_item=n, cost_per_item=0.001 * n,
                   latency_ms=100.0 * n)
        for n in (1, 3, 5)
    ]  # fmt: skip
    curve = Curve(
        panel=["m"], items=10, k={"m": 5}, labels=2, k_labels=2, tie="error", confidence=0.95,
        draws=10, single_call_error=0.2, model_errors={"m": 0.2}, rho=0.1, points=points,
    )  # fmt: skip
    rec = Recommendation(
        n=3, error=0.07, ci_low=0.03, ci_high=0.1, baseline_error=0.2, removed=0.6,
        halving_check=0.2, halves=True, min_gain=0.1, still_improving=False, reason="N=3: x",
    )  # fmt: skip
    entry = PanelCurve.model_construct(name="m", curve=curve, recommendation=rec)
    fig = curve_figure(entry)
    axes = [k for k in fig.layout.to_plotly_json() if k.startswith("yaxis")]
    assert len(axes) == 3  # error, cost, latency: each its own axis, stacked
    assert not any(fig.layout[a].overlaying for a in axes)
