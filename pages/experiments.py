"""Experiments: how many votes a set needs, who disagrees with whom, and where throughput stops.

Layout only. A curve draw and a sweep are jobs of the in-process executor, under the same
session as every other job: they keep going when the page is left, can be cancelled, and a
press twice starts one. The curve job draws its batch and then curves and stores it; the page
polls the job and shows the result when it is done. Every chart is plotly; every model-derived
string in a chart or in markdown goes through ``ui.chart_text`` or ``ui.md_text``.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core import datasets
from core.analysis import Bin, ModelReliability, SweepVerdict
from core.auth import Role
from core.errors import TallyError
from core.estimate import duration, time_left
from core.experiments import (
    DEFAULT_CALLS,
    DEFAULT_LEVELS,
    CurveReport,
    Disagreement,
    DrawPlan,
    PanelCurve,
    SweepReport,
    analyse_batch,
    curve_from_batch,
    halving_sentence,
    load_labelled,
    parse_ints,
    parse_panel,
    plan_draw,
    save_ceiling,
)
from core.experiments.curve import (
    DEFAULT_MIN_GAIN,
    halving_verdict_line,
    why_not_curvable,
    why_not_five,
)
from core.experiments.curve import load_report as load_curve
from core.experiments.reliability import BatchReliability, batch_reliability
from core.experiments.sweep import DEMO_CALLS, DEMO_MODES, estimate_sweep
from core.experiments.sweep import load_report as load_sweep
from core.jobs import Job
from core.jobs.inprocess import InProcessExecutor
from core.sim.models import DEFAULT_PANEL
from core.store import Store
from pages import ui

ui.leave_folder_mode()

S = st.session_state
SIM_PANEL = [f"sim:{name}" for name in DEFAULT_PANEL]
DEFAULTS: dict[str, Any] = {
    "exp.set": "regression",
    "exp.k": 5,
    "exp.ns": "1,3,5",
    "exp.items": 60,
    "exp.seed": 0,
    "exp.panels": "",
    "exp.levels": ",".join(str(level) for level in DEFAULT_LEVELS),
    "exp.calls": DEFAULT_CALLS,
    "exp.demo_mode": "capacity-1",
}
DEMO_TITLES = {
    "unlimited": "unlimited: every request served at once",
    "capacity-1": "capacity 1: a downstream that serves one request at a time",
    "contention-8": "contention 8: slows down past 8 requests in flight",
}
BLUE, GREY, ORANGE, GREEN, RED = "#4c78a8", "#8c8c8c", "#e17c05", "#2e8540", "#d64541"
SHAPE_TITLES = {
    "serialises": "SERIALISES",
    "falls": "FALLS PAST A KNEE",
    "ceiling": "LEVELS OFF",
    "scales": "STILL SCALING",
}


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}%}"


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# -- error against N: starting a curve -----------------------------------------------------------


def plan_curve() -> tuple[DrawPlan, list[int], list[list[str]]]:
    """The draw the form describes; any problem raises the TallyError that refuses it."""
    runner = ui.get_runner()
    ns = parse_ints(str(S["exp.ns"]), "N")
    panels = [parse_panel(line) for line in str(S["exp.panels"]).splitlines() if line.strip()]
    models = list(dict.fromkeys([*S.get("exp.models", []), *(m for p in panels for m in p)]))
    if not models:
        raise TallyError("Choose at least one model to draw from.")
    for model in models:
        runner.tally.panel([model])  # an unknown provider or a missing key is refused here
    labelled = load_labelled(str(S["exp.set"]))
    plan = plan_draw(
        labelled, models, int(S["exp.k"]), ns, items=int(S["exp.items"]), seed=int(S["exp.seed"])
    )
    return plan, ns, panels


def submit_curve() -> None:
    """Check the form and start the draw as a background batch; a problem goes beside the form."""
    runner = ui.get_runner()
    S["exp.error"] = None
    try:
        plan, ns, panels = plan_curve()
        estimate = ui.spend_estimate(plan.spec, [i.text for i in plan.items])
        if estimate is not None and not ui.spend_confirmed("exp.draw", estimate):
            raise TallyError(ui.CONFIRM_FIRST)
        params = {"set": plan.set_name, "models": plan.models, "k": plan.k, "ns": ns}
        job = runner.submit_curve(
            plan,
            ns,
            panels=panels,
            seed=int(S["exp.seed"]),
            min_gain=DEFAULT_MIN_GAIN,
            actor=ui.identity(),
            active_key=ui.form_key("curve", {**params, "panels": panels, "items": plan.calls}),
        )
    except TallyError as err:
        S["exp.error"] = str(err)
        return
    S["exp.pending"] = job.id


def curve_preflight() -> None:
    """Before the draw: its planned spend, or what would refuse it."""
    try:
        plan, _, _ = plan_curve()
    except TallyError as err:
        st.warning(f"The draw would be refused, before any call: {ui.md_text(err, 300)}")
        return
    ui.spend_box("exp.draw", ui.spend_estimate(plan.spec, [i.text for i in plan.items]))


def job_progress(job: Job, what: str, unit: str) -> None:
    """A running job's bar: how far it is, and what it does or waits for now."""
    total = job.total or 0
    text = f"{what}: {job.done} of {total} {unit}" if total else what
    if job.note:
        text += f" · {job.note}"
    if total:
        left = time_left(job.started_at, job.done, total, time.time())
        text += " · time left: estimating" if left is None else f" · about {duration(left)} left"
    st.progress(job.done / total if total else 0.0, text=text)


@st.fragment(run_every=1)
def pending_job(job_key: str, result_key: str, error_key: str, words: tuple[str, ...]) -> None:
    """Polls a background job (a curve draw, a sweep); when it is done, shows what it made
    with a full rerun. ``words``: what it does, its unit, its cancel button and that button's
    key, its name."""
    job_id = S.get(job_key)
    if not job_id:
        return
    doing, unit, cancel, cancel_key, name = words
    runner = ui.get_runner()
    job = runner.jobs.get(job_id)
    if not job.finished:
        job_progress(job, doing, unit)
        who = ui.identity()
        if st.button(cancel, key=cancel_key, disabled=not who.has(Role.RUNNER)):
            runner.cancel(job.id, actor=who)
        return
    S[job_key] = None
    if job.status == "done":
        S[result_key] = job.result_ref
    else:
        S[error_key] = f"The {name} stopped ({job.status}): {job.error or 'no reason given'}"
    st.rerun(scope="app")


def curve_form(runner: InProcessExecutor) -> None:
    models = ui.available_models(runner)
    if "exp.models" not in S:
        S["exp.models"] = [m for m in SIM_PANEL if m in models]
    c1, c2 = st.columns([1, 2])
    c1.selectbox("Labelled set", datasets.list_sets(), key="exp.set")
    c2.multiselect("Models (each sampled K times)", models, key="exp.models")
    c3, c4, c5, c6 = st.columns(4)
    c3.number_input("K: answers per item per model", min_value=1, max_value=64, key="exp.k")
    c4.text_input("N to estimate", key="exp.ns", help="Comma-separated, e.g. 1,3,5,7")
    c5.number_input("Items (drawn at random)", min_value=1, key="exp.items")
    c6.number_input("Seed", min_value=0, key="exp.seed")
    st.text_area(
        "More panels to curve (one per line, e.g. sim:sim-mid,sim:sim-mid,sim:sim-fast)",
        key="exp.panels",
        height=68,
    )
    st.caption(
        "One draw serves every curve: each model alone (N samples of it), all of them mixed, and "
        "the panels above. The draw is a batch: every call is stored and can be opened."
    )
    curve_preflight()
    st.button(
        "Draw and curve",
        type="primary",
        on_click=submit_curve,
        key="exp.draw",
        disabled=not ui.identity().has(Role.RUNNER),
    )


def batch_form(store: Store) -> None:
    listed = store.list_batches(limit=100)
    batches = [b for b in listed if why_not_curvable(store, b) is None]
    if not batches:
        st.caption(
            "No batch can be curved yet: a curve needs a finished batch with gold labels "
            "in a voted format."
        )
        return
    if len(batches) < len(listed):
        st.caption(
            f"{len(listed) - len(batches)} other batches are not offered: unfinished, "
            "without gold, or free text."
        )
    by_id = {b.batch_id: b for b in batches}
    c1, c2 = st.columns([2, 1])
    batch_id = c1.selectbox(
        "Batch (with gold labels)",
        list(by_id),
        format_func=lambda b: (
            f"{by_id[b].name} · {by_id[b].total} items · {ui.when(by_id[b].created_at)}"
        ),
        key="exp.from_batch",
    )
    ns_text = c2.text_input("N to estimate", value="1,3,5", key="exp.from_ns")
    if st.button("Curve this batch", key="exp.curve_batch"):
        try:
            report = curve_from_batch(store, batch_id, ns=parse_ints(ns_text, "N"))
            S["exp.curve"] = report.curve_id
            S["exp.error"] = None
        except TallyError as err:
            S["exp.error"] = str(err)
        st.rerun()


# -- error against N: showing a curve ------------------------------------------------------------


def curve_figure(entry: PanelCurve) -> go.Figure:
    """One quantity per axis, the three sharing N: error with its interval and the
    independent-voters prediction on top, then cost per 1,000 items, then the vote's latency."""
    points = entry.curve.points
    ns = [p.n for p in points]
    costs = [p.cost_per_item for p in points]
    latencies = [p.latency_ms for p in points]
    rows = [
        "error",
        *(["cost per 1,000 items"] if all(c is not None for c in costs) else []),
        *(["latency of the vote"] if all(v is not None for v in latencies) else []),
    ]
    heights = [0.56] + [0.44 / max(1, len(rows) - 1)] * (len(rows) - 1)
    fig = make_subplots(
        rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=heights
    )
    fig.add_trace(
        go.Scatter(
            x=ns + ns[::-1],
            y=[p.ci_high for p in points] + [p.ci_low for p in points][::-1],
            fill="toself",
            fillcolor="rgba(76,120,168,0.18)",
            mode="lines",
            line={"width": 0},
            hoverinfo="skip",
            name=f"{entry.curve.confidence:.0%} interval",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=ns,
            y=[p.error for p in points],
            mode="lines+markers",
            line={"color": BLUE, "width": 3},
            name="measured error",
            hovertemplate="N=%{x}: %{y:.1%}<extra>measured</extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=ns,
            y=[p.independent_error for p in points],
            mode="lines+markers",
            line={"color": GREY, "dash": "dash"},
            name="independent voters (Condorcet)",
            hovertemplate="N=%{x}: %{y:.1%}<extra>independent</extra>",
        ),
        row=1,
        col=1,
    )
    if "cost per 1,000 items" in rows:
        fig.add_trace(
            go.Scatter(
                x=ns,
                y=[1000 * c for c in costs if c is not None],
                mode="lines+markers",
                line={"color": ORANGE},
                marker={"symbol": "diamond"},
                name="cost per 1,000 items ($)",
                hovertemplate="N=%{x}: $%{y:.3f} per 1,000 items<extra>cost</extra>",
            ),
            row=rows.index("cost per 1,000 items") + 1,
            col=1,
        )
    if "latency of the vote" in rows:
        fig.add_trace(
            go.Scatter(
                x=ns,
                y=latencies,
                mode="lines+markers",
                line={"color": GREEN},
                marker={"symbol": "square"},
                name="latency of the vote (ms)",
                hovertemplate="N=%{x}: %{y:.0f} ms<extra>latency</extra>",
            ),
            row=rows.index("latency of the vote") + 1,
            col=1,
        )
    rec = entry.recommendation
    for row in range(1, len(rows) + 1):
        fig.add_vline(x=rec.n, line={"color": "#555555", "dash": "dash"}, row=row, col=1)
    fig.add_annotation(
        x=rec.n, y=1, xref="x", yref="y domain", text=f"recommended N={rec.n}", showarrow=False,
        xanchor="left", yanchor="bottom",
    )  # fmt: skip
    top = max([p.ci_high for p in points] + [p.error for p in points] + [0.01])
    titles = {"cost per 1,000 items": "$ per 1,000 items", "latency of the vote": "ms"}
    fig.update_yaxes(title_text="error", tickformat=".0%", range=[0, top * 1.15], row=1, col=1)
    for i, name in enumerate(rows[1:], start=2):
        fig.update_yaxes(title_text=titles[name], rangemode="tozero", row=i, col=1)
    fig.update_xaxes(tickvals=ns)
    fig.update_xaxes(title_text="N (votes)", row=len(rows), col=1)
    fig.update_layout(
        title={"text": f"Error against N: {ui.chart_text(entry.name, 60)}", "font": {"size": 15}},
        height=360 + 150 * (len(rows) - 1),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.12},
    )
    return fig


def panels_figure(report: CurveReport) -> go.Figure:
    """Every panel's measured error against N: samples of one model against the mixed panel."""
    fig = go.Figure()
    for entry in report.panels:
        points = entry.curve.points
        fig.add_trace(
            go.Scatter(
                x=[p.n for p in points],
                y=[p.error for p in points],
                mode="lines+markers",
                name=ui.chart_text(entry.name, 50),
                line={"width": 4 if entry.kind == "mixed" else 2},
                hovertemplate="N=%{x}: %{y:.1%}<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(
        title={"text": "Every panel from the same draw", "font": {"size": 15}},
        height=380,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": "N (votes)", "tickvals": report.ns},
        yaxis={"title": "error", "tickformat": ".0%", "rangemode": "tozero"},
    )
    return fig


def harm_section(store: Store, report: CurveReport, entry: PanelCurve) -> None:
    harm = entry.harm
    st.markdown("**Where more votes hurt**")
    if harm.message:
        st.warning(ui.md_text(harm.message, 300))
    else:
        st.caption("No item is answered right less than half the time: more votes help everywhere.")
    if not harm.items:
        return
    runs = {r.item_id: r for r in store.batch_runs(report.batch_id)}
    rows = [
        {
            "item": item,
            "single-call accuracy": pct(harm.item_accuracy[item], 0),
            "gold": runs[item].gold if item in runs else "",
            "input": " ".join(runs[item].input.split()) if item in runs else "",
            "run": runs[item].run_id if item in runs else "",
        }
        for item in harm.items
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="exp.harm")


def early_stop_section(entry: PanelCurve) -> None:
    early = entry.early_stop
    st.markdown(f"**Early stop, up to N={early.max_n}** (replayed on the stored answers)")
    rows = [
        {
            "rule": r.rule,
            "how it stops": r.description,
            "calls per item": f"{r.calls_per_item:.2f}",
            "accuracy": pct(r.accuracy),
            "saving": pct(r.saving, 0),
            "as accurate as fixed": "yes" if r.equal_or_better else f"no ({r.accuracy_delta:+.1%})",
        }
        for r in early.rules
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="exp.early")
    if early.best is not None:
        best = early.rule(early.best)
        st.caption(
            f"Best saving at equal accuracy: {best.rule} makes {best.calls_per_item:.2f} calls "
            f"per item instead of {early.max_n} ({best.saving:.0%} fewer)."
        )
    else:
        st.caption("No rule saves calls without losing accuracy on this set.")


def show_curve(store: Store, report: CurveReport) -> None:
    names = [p.name for p in report.panels]
    ui.keep_choice("exp.panel", names, report.headline)
    name = st.selectbox(
        "Panel",
        names,
        key="exp.panel",
        format_func=lambda n: f"{n} ({report.panel(n).kind})",
    )
    entry = report.panel(name)
    rec = entry.recommendation
    cols = st.columns(5)
    cols[0].metric("Recommended N", rec.n)
    cols[1].metric(
        f"Error at N={rec.n}",
        pct(rec.error),
        help=f"{report.panel(name).curve.confidence:.0%} interval {pct(rec.ci_low)} to "
        f"{pct(rec.ci_high)}",
    )
    cols[2].metric(
        "Removed vs one call", pct(rec.removed, 0), help="Share of the one-call error removed"
    )
    cols[3].metric(
        "Halving check",
        number(rec.halving_check),
        help="error(5) / error(1). The handbook: majority of 5 makes roughly half the errors "
        "of one call.",
    )
    cols[4].metric(
        "Error correlation",
        number(entry.curve.rho),
        help="Mean pairwise correlation of the slots' errors: what keeps the vote from the "
        "independent-voters curve.",
    )
    verdict = halving_verdict_line(rec)
    if verdict is not None:
        shown = {"holds": st.success, "does not hold": st.warning, "cannot tell": st.info}
        shown[rec.halving_verdict or "cannot tell"](ui.md_text(verdict, 500))
    why = why_not_five(rec, entry.curve)
    if why is not None:
        st.markdown(ui.md_text(why, 500))
    st.caption(ui.md_text(rec.reason, 400))
    st.caption(ui.md_text(halving_sentence(rec), 300))
    st.caption(
        f"N=1 is {ui.md_text(entry.one_call)}. {report.items} items, K={report.k}, "
        f"draw cost {report.cost_text(ui.money)}."
    )
    st.plotly_chart(curve_figure(entry), width="stretch", key="exp.curve_chart")
    st.plotly_chart(panels_figure(report), width="stretch", key="exp.panels_chart")
    if report.reliability:
        st.markdown("**Learned reliability** (Dawid–Skene on the draw's answers, no gold)")
        models_frame(report.reliability, key="exp.curve.models")
        confusion_grid(report.reliability, key="exp.curve.confusion")
    harm_section(store, report, entry)
    early_stop_section(entry)


def curve_tab(runner: InProcessExecutor) -> None:
    store = runner.store
    curves = store.list_curves(limit=50)
    pending_job(
        "exp.pending",
        "exp.curve",
        "exp.error",
        ("Drawing answers", "items", "Cancel the draw", "exp.cancel", "draw"),
    )
    if S.get("exp.error"):
        st.error(ui.md_text(S["exp.error"], 400))
    with st.expander("New curve: draw K answers per item per model", expanded=not curves):
        curve_form(runner)
    with st.expander("Curve a stored batch", expanded=False):
        batch_form(store)
    if not curves:
        if not S.get("exp.pending"):  # while a draw goes on, its progress says what happens
            st.info("No curve yet: draw one above.")
        return
    by_id = {c.id: c for c in curves}
    ui.keep_choice("exp.curve", by_id)
    curve_id = st.selectbox(
        "Curve",
        list(by_id),
        key="exp.curve",
        format_func=lambda c: (
            f"{by_id[c].name} · {by_id[c].result.get('items', '?')} items · "
            f"K={by_id[c].result.get('k', '?')} · {ui.when(by_id[c].created_at)}"
        ),
    )
    show_curve(store, load_curve(store, curve_id))


# -- disagreement ----------------------------------------------------------------------------------


def heatmap_figure(result: Disagreement) -> go.Figure:
    return ui.agreement_heatmap(
        ((c.model_a, c.model_b, c.agreement, f"{c.agreement:.0%}") for c in result.heatmap),
        "Pairwise agreement",
    )


def accuracy_figure(result: Disagreement) -> go.Figure:
    models = sorted(set(result.accuracy_gold) | set(result.accuracy_review))
    labels = [ui.chart_text(m) for m in models]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=labels,
            y=[result.accuracy_gold.get(m) for m in models],
            name="against gold",
            marker_color=BLUE,
            text=[pct(result.accuracy_gold.get(m), 0) for m in models],
            textposition="outside",
        )
    )
    if result.accuracy_review:
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[result.accuracy_review.get(m) for m in models],
                name=f"against reviewers ({result.reviewed} runs)",
                marker_color=ORANGE,
                text=[pct(result.accuracy_review.get(m), 0) for m in models],
                textposition="outside",
            )
        )
    fig.update_layout(
        title={"text": "Each model's accuracy (every sample)", "font": {"size": 15}},
        barmode="group",
        height=340,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        yaxis={"tickformat": ".0%", "range": [0, 1.12]},
    )
    return fig


def reliability_figure(
    all_bins: list[Bin],
    title: str = "Reliability: the winner's vote share against how often it is right",
    x_title: str = "winner's share of the votes",
) -> go.Figure:
    """A confidence against how often the winner was right: on the diagonal is calibrated."""
    bins = [b for b in all_bins if b.count]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=[(b.lower + b.upper) / 2 for b in bins],
            y=[b.count for b in bins],
            width=[(b.upper - b.lower) * 0.9 for b in bins],
            name="items in the bin",
            marker_color="rgba(140,140,140,0.35)",
            yaxis="y2",
            hovertemplate="%{y} items<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line={"color": GREY, "dash": "dash"},
            name="calibrated",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[b.mean_confidence for b in bins],
            y=[b.accuracy for b in bins],
            mode="lines+markers",
            line={"color": BLUE, "width": 3},
            marker={"size": 9},
            name="winner right",
            hovertemplate="%{x:.0%}: right %{y:.0%}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 15}},
        height=400,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": x_title, "tickformat": ".0%", "range": [0, 1.02]},
        yaxis={"title": "right (against gold)", "tickformat": ".0%", "range": [0, 1.05]},
        yaxis2={
            "title": "items",
            "overlaying": "y",
            "side": "right",
            "showgrid": False,
            "rangemode": "tozero",
            "tickmode": "auto",
            "tickformat": ",d",
        },
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def disagreement_tab(store: Store) -> None:
    batches = store.list_batches(limit=100)
    if not batches:
        st.info("No batch yet: draw a curve, or run a batch, to see who disagrees.")
        return
    by_id = {b.batch_id: b for b in batches}
    if S.get("exp.batch") not in by_id:
        current = S.get("exp.curve")
        drawn = None
        if current:
            try:
                drawn = load_curve(store, current).batch_id
            except TallyError:
                drawn = None
        S["exp.batch"] = drawn if drawn in by_id else batches[0].batch_id
    batch_id = st.selectbox(
        "Batch",
        list(by_id),
        key="exp.batch",
        format_func=lambda b: (
            f"{by_id[b].name} · {by_id[b].total} items · {ui.when(by_id[b].created_at)}"
        ),
    )
    try:
        result = analyse_batch(store, batch_id)
    except TallyError as err:
        st.error(ui.md_text(str(err), 300))
        return
    if not result.runs:
        st.info("No run of this batch has finished yet.")
        return
    independence = result.independence
    cols = st.columns(5)
    cols[0].metric("Runs", result.runs)
    cols[1].metric(
        "Fleiss' kappa",
        number(result.fleiss_kappa),
        help=f"{result.fleiss_items} runs where every slot voted",
    )
    cols[2].metric(
        "Effective independent voters",
        "-"
        if independence is None or independence.effective is None
        else f"{independence.effective:.1f} of {independence.voters}",
    )
    cols[3].metric("Calibration error", pct(result.calibration_error), help="0 is calibrated")
    agreement = result.review_stats.get("agreement_with_plurality")
    cols[4].metric(
        "Reviewers agree",
        pct(result.human_vs_panel if result.human_vs_panel is not None else agreement, 0),
        help="Share of reviews that chose the panel's plurality label "
        + ("(this batch)" if result.human_vs_panel is not None else "(all reviews)"),
    )
    left, right = st.columns(2)
    with left:
        if result.heatmap:
            st.plotly_chart(heatmap_figure(result), width="stretch", key="exp.heatmap")
        else:
            st.caption("No two valid answers in the same run: nothing to compare.")
    with right:
        if result.accuracy_gold or result.accuracy_review:
            st.plotly_chart(accuracy_figure(result), width="stretch", key="exp.accuracy")
        else:
            st.caption("No gold labels or reviews: accuracy needs a reference.")
    if result.kappas:
        st.markdown("**Cohen's kappa per pair** (agreement corrected for chance)")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "rater A": p.model_a,
                        "rater B": p.model_b,
                        "items": p.items,
                        "agreement": pct(p.agreement),
                        "kappa": number(p.kappa),
                    }
                    for p in result.kappas
                ]
            ),
            hide_index=True,
            width="stretch",
            key="exp.kappas",
        )
    if result.reliability:
        st.plotly_chart(
            reliability_figure(result.reliability), width="stretch", key="exp.reliability"
        )
    if result.confidence_calibration:
        st.plotly_chart(
            reliability_figure(
                result.confidence_calibration,
                "Confidence: each decision's confidence against how often it is right",
                "decision's confidence",
            ),
            width="stretch",
            key="exp.confidence",
        )
        st.caption(
            f"{result.confidence_items} decisions with gold; calibration error "
            f"{pct(result.confidence_error)} (0 is calibrated)"
        )
    learned_section(store, batch_id)
    hardest_section(store, result)


def confusion_figure(model: ModelReliability) -> go.Figure:
    """One model's confusion matrix: the chance it votes each label (column) given the truth."""
    labels = list(model.confusion)
    fig = go.Figure(
        go.Heatmap(
            z=[[model.confusion[t][v] for v in labels] for t in labels],
            x=labels,
            y=labels,
            zmin=0,
            zmax=1,
            colorscale="Blues",
            showscale=False,
            text=[[f"{model.confusion[t][v]:.0%}" for v in labels] for t in labels],
            texttemplate="%{text}",
            hovertemplate="true %{y}, votes %{x}: %{z:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": f"{model.model}: right {model.accuracy:.0%}", "font": {"size": 13}},
        height=260,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": "votes"},
        yaxis={"title": "truth", "autorange": "reversed"},
    )
    return fig


def models_frame(
    models: list[ModelReliability], weights: dict[str, float] | None = None, *, key: str
) -> None:
    """Each model's fitted votes and estimated accuracy (and weight, where one was learned)."""
    rows = [
        {"model": m.model, "votes": m.votes, "estimated accuracy": pct(m.accuracy)}
        | ({"weight": number(weights[m.model])} if weights is not None else {})
        for m in models
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=key)


def confusion_grid(models: list[ModelReliability], *, key: str) -> None:
    """Every model's confusion matrix, three to a row."""
    cols = st.columns(min(3, len(models)))
    for i, model in enumerate(models):
        with cols[i % len(cols)]:
            st.plotly_chart(confusion_figure(model), width="stretch", key=f"{key}.{i}")


def learned_section(store: Store, batch_id: str) -> None:
    """Dawid–Skene on the batch's stored answers: who to trust, and whether it pays."""
    st.markdown("**Learned reliability** (Dawid–Skene on the stored answers, no gold needed)")
    key = f"exp.learned.{batch_id}"
    if st.button("Fit Dawid–Skene", key="exp.fit") or key in S:
        try:
            if key not in S:
                S[key] = batch_reliability(store, batch_id)[0]
            report: BatchReliability = S[key]
        except TallyError as err:
            st.error(ui.md_text(str(err), 300))
            return
        st.caption(ui.md_text(report.sentence(), 300))
        models_frame(report.models, report.weights, key="exp.learned.models")
        confusion_grid(report.models, key="exp.confusion")
        if report.scores:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "decided by": s.aggregate,
                            "accuracy on gold": pct(s.accuracy),
                            "95% interval": f"{pct(s.ci_low)} - {pct(s.ci_high)}",
                            "calls per item": number(s.calls_per_item),
                        }
                        for s in report.scores
                    ]
                ),
                hide_index=True,
                width="stretch",
                key="exp.learned.scores",
            )
        if report.calibration:
            st.plotly_chart(
                reliability_figure(
                    report.calibration,
                    "Confidence: the Dawid–Skene posterior against how often it is right",
                    "winner's posterior",
                ),
                width="stretch",
                key="exp.learned.calibration",
            )


def hardest_section(store: Store, result: Disagreement) -> None:
    st.markdown("**The hardest items** (most split votes first)")
    if not result.hardest:
        st.caption("Every vote of this batch was unanimous.")
        return
    rows = [
        {
            "run": h.run_id,
            "item": h.item_id or "",
            "input": " ".join(h.input.split()),
            "gold": h.gold or "",
            "votes": ", ".join(f"{k}: {v}" for k, v in h.votes.items()),
            "entropy (bits)": f"{h.entropy:.2f}",
            "margin": f"{h.margin:.2f}",
            "decision": h.decision,
        }
        for h in result.hardest
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="exp.hardest")
    run_id = st.selectbox(
        "Open one of these runs",
        [None, *(h.run_id for h in result.hardest)],
        format_func=lambda r: "(choose a run)" if r is None else r,
        key="exp.open_run",
    )
    if run_id is not None:
        ui.render_result(store.get_run(run_id), key="exp.run")


# -- the throughput wall ---------------------------------------------------------------------------


def sweep_figure(report: SweepReport) -> go.Figure:
    verdict: SweepVerdict = report.verdict
    points = verdict.points
    levels = [p.concurrency for p in points]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=levels,
            y=[p.throughput for p in points],
            mode="lines+markers",
            line={"color": BLUE, "width": 3},
            marker={"size": 9},
            name="throughput (calls/s)",
            hovertemplate="%{x} in flight: %{y:.1f} calls/s<extra></extra>",
        )
    )
    for key, colour, dash in (("p50_ms", GREEN, "dot"), ("p95_ms", RED, "dash")):
        fig.add_trace(
            go.Scatter(
                x=levels,
                y=[getattr(p, key) for p in points],
                mode="lines+markers",
                line={"color": colour, "dash": dash},
                name=f"{key[:3]} latency (ms)",
                yaxis="y2",
                hovertemplate="%{x} in flight: %{y:.0f} ms<extra>" + key[:3] + "</extra>",
            )
        )
    if verdict.ceiling is not None:
        # a trace, not a shape: shapes and annotations on a log axis take log10 coordinates
        top = max(p.throughput for p in points) * 1.08
        fig.add_trace(
            go.Scatter(
                x=[verdict.ceiling, verdict.ceiling],
                y=[0, top],
                mode="lines+text",
                line={"color": ORANGE, "dash": "dash", "width": 2},
                text=["", f"ceiling {verdict.ceiling}"],
                textposition="middle right",
                textfont={"color": ORANGE},
                name=f"ceiling: {verdict.ceiling}",
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        title={
            "text": f"Throughput wall: {ui.chart_text(report.model, 50)} "
            f"({SHAPE_TITLES[verdict.shape].lower()})",
            "font": {"size": 15},
        },
        height=420,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={
            "title": "concurrency (calls in flight)",
            "type": "log",
            "tickvals": levels,
            "ticktext": [str(v) for v in levels],
        },
        yaxis={"title": "calls per second", "rangemode": "tozero"},
        yaxis2={
            "title": "latency (ms)",
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
            "tickmode": "auto",
            "nticks": 6,
        },
        legend={"orientation": "h", "y": -0.22},
    )
    return fig


DEMO_COLOURS = {"unlimited": GREEN, "capacity-1": RED, "contention-8": ORANGE}


def shapes_figure(reports: dict[str, SweepReport]) -> go.Figure:
    """The latest demo sweep of each mode, throughput relative to one call in flight."""
    fig = go.Figure()
    for mode, report in reports.items():
        points = report.verdict.points
        base = points[0].throughput or 1.0
        fig.add_trace(
            go.Scatter(
                x=[p.concurrency for p in points],
                y=[p.throughput / base for p in points],
                mode="lines+markers",
                name=DEMO_TITLES.get(mode, mode),
                line={"color": DEMO_COLOURS.get(mode, BLUE), "width": 3},
            )
        )
    levels = sorted({p.concurrency for r in reports.values() for p in r.verdict.points})
    fig.update_layout(
        title={
            "text": "Three downstreams, three shapes (throughput / throughput at 1)",
            "font": {"size": 15},
        },
        height=380,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={
            "title": "concurrency",
            "type": "log",
            "tickvals": levels,
            "ticktext": [str(v) for v in levels],
        },
        yaxis={"title": "speed-up", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.22},
    )
    return fig


def verdict_box(verdict: SweepVerdict) -> None:
    text = f"**{SHAPE_TITLES[verdict.shape]}**: {ui.md_text(verdict.message, 400)}"
    if verdict.shape == "serialises":
        st.error(text)
    elif verdict.shape == "falls":
        st.warning(text)
    elif verdict.shape == "ceiling":
        st.success(text)
    else:
        st.info(text)
    if verdict.warning:
        st.warning(f"Handbook: {ui.md_text(verdict.warning, 400)}")


def sweep_preflight(runner: InProcessExecutor, model: str | None) -> None:
    """Before a sweep: its planned calls, cost and time, level after level."""
    if not model:
        return
    try:
        levels = parse_ints(str(S["exp.levels"]), "Levels")
        estimate = estimate_sweep(runner.tally, model, levels, int(S["exp.calls"]))
    except TallyError as err:
        st.warning(f"The sweep would be refused, before any call: {ui.md_text(err, 300)}")
        return
    ui.spend_box("exp.sweep", estimate)


def run_sweep_now(runner: InProcessExecutor, model: str) -> None:
    try:
        levels = parse_ints(str(S["exp.levels"]), "Levels")
        calls = int(S["exp.calls"])
        estimate = estimate_sweep(runner.tally, model, levels, calls)
        if not ui.spend_confirmed("exp.sweep", estimate):
            raise TallyError(ui.CONFIRM_FIRST)
        key = ui.form_key("sweep", {"model": model, "levels": levels, "calls": calls})
        job = runner.submit_sweep(
            model=model, levels=levels, calls_per_level=calls, actor=ui.identity(), active_key=key
        )
        S["exp.sweep_job"] = job.id
        S["exp.sweep_error"] = None
    except TallyError as err:
        S["exp.sweep_error"] = str(err)


def run_demo_now(mode: str) -> None:
    try:
        levels = list(DEMO_MODES[mode].levels)
        key = ui.form_key("sweep", {"demo": mode})
        job = ui.get_runner().submit_sweep(
            demo=mode,
            levels=levels,
            calls_per_level=DEMO_CALLS,
            actor=ui.identity(),
            active_key=key,
        )
        S["exp.sweep_job"] = job.id
        S["exp.sweep_error"] = None
    except TallyError as err:
        S["exp.sweep_error"] = str(err)


def save_now(runner: InProcessExecutor, report: SweepReport) -> None:
    try:
        saved = save_ceiling(runner.tally.config, report, actor=ui.identity())
        S["exp.saved"] = (
            f"Saved max_concurrency = {saved.max_concurrency} for [providers.{saved.provider}] "
            f"in {saved.path}. It applies from the next start of the dashboard or the CLI."
        )
        S["exp.save_error"] = None
    except TallyError as err:
        S["exp.save_error"] = str(err)
        S["exp.saved"] = None


def is_demo(report: SweepReport) -> bool:
    return report.provider.removeprefix("sim-") in DEMO_MODES


def wall_tab(runner: InProcessExecutor) -> None:
    store = runner.store
    left, right = st.columns(2)
    with left, st.container(border=True):
        st.markdown("**Sweep a model**")
        models = ui.available_models(runner)
        ui.keep_choice("exp.sweep_model", models, "sim:sim-fast")
        model = st.selectbox("Model", models, key="exp.sweep_model")
        c1, c2 = st.columns(2)
        c1.text_input("Concurrency levels", key="exp.levels")
        c2.number_input("Calls per level (at least 4 rounds)", min_value=1, key="exp.calls")
        sweep_preflight(runner, model)
        spender = ui.identity().has(Role.RUNNER)
        run = st.button("Run sweep", type="primary", key="exp.run_sweep", disabled=not spender)
        if run and model:
            run_sweep_now(runner, model)
    with right, st.container(border=True):
        st.markdown("**Demo: the sim server in three modes**")
        st.radio(
            "Downstream",
            list(DEMO_MODES),
            key="exp.demo_mode",
            format_func=DEMO_TITLES.__getitem__,
        )
        st.caption("Starts a sim server on loopback in that mode and sweeps it: seconds.")
        if st.button("Run demo sweep", key="exp.run_demo", disabled=not spender):
            run_demo_now(str(S["exp.demo_mode"]))
    pending_job(
        "exp.sweep_job",
        "exp.sweep",
        "exp.sweep_error",
        ("Sweeping", "levels", "Cancel the sweep", "exp.cancel_sweep", "sweep"),
    )
    if S.get("exp.sweep_error"):
        st.error(ui.md_text(S["exp.sweep_error"], 400))
    sweeps = store.list_sweeps(limit=50)
    if not sweeps:
        st.info("No sweep yet: run one above.")
        return
    by_id = {s.id: s for s in sweeps}
    ui.keep_choice("exp.sweep", by_id)
    sweep_id = st.selectbox(
        "Sweep",
        list(by_id),
        key="exp.sweep",
        format_func=lambda s: (
            f"{by_id[s].name} · {by_id[s].result.get('verdict', {}).get('shape', '?')} · "
            f"{ui.when(by_id[s].created_at)}"
        ),
    )
    report = load_sweep(store, sweep_id)
    verdict = report.verdict
    cols = st.columns(4)
    cols[0].metric("Ceiling", "none yet" if verdict.ceiling is None else verdict.ceiling)
    cols[1].metric(
        "Peak", f"{verdict.peak_throughput:.1f} calls/s", help=f"at {verdict.peak} in flight"
    )
    cols[2].metric(
        "Latency slope",
        number(verdict.latency_slope),
        help="log-log slope of p50 against concurrency: 1 is proportional",
    )
    cols[3].metric("Calls", report.calls, help=f"cost {report.cost_text(ui.money)}")
    verdict_box(verdict)
    st.plotly_chart(sweep_figure(report), width="stretch", key="exp.sweep_chart")
    if is_demo(report):
        st.caption(
            "A demo sweep of the sim server: there is no provider of yours to save a ceiling for."
        )
    elif verdict.ceiling is not None:
        st.button(
            f"Save {verdict.ceiling} as max_concurrency of {report.provider} in tally.toml",
            key="exp.save",
            on_click=save_now,
            args=(runner, report),
            disabled=not ui.identity().has(Role.ADMIN),
        )
        if S.get("exp.saved"):
            st.success(ui.md_text(S["exp.saved"], 400))
        if S.get("exp.save_error"):
            st.error(ui.md_text(S["exp.save_error"], 400))
    latest: dict[str, SweepReport] = {}
    for saved in sweeps:
        mode = saved.name.partition(":")[0].removeprefix("sim-")
        if mode in DEMO_MODES and mode not in latest:
            latest[mode] = load_sweep(store, saved.id)
    if len(latest) > 1:
        st.plotly_chart(shapes_figure(latest), width="stretch", key="exp.shapes_chart")


def main() -> None:
    for key, value in DEFAULTS.items():
        S.setdefault(key, value)
    ui.page_identity()
    st.title("Experiments")
    st.caption(
        "How many votes your set needs and what they cost, which models vote alike, and where "
        "more concurrency stops buying throughput: measured on your data and your endpoints."
    )
    try:
        runner = ui.get_runner()
        tabs = st.tabs(["Error vs N", "Disagreement", "Throughput wall"])
        with tabs[0]:
            curve_tab(runner)
        with tabs[1]:
            disagreement_tab(runner.store)
        with tabs[2]:
            wall_tab(runner)
    except TallyError as err:
        st.error(ui.md_text(str(err), 400))


main()
