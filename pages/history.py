"""History: every stored run, whoever made it, filtered and paged in SQL, with charts from SQL
aggregates, and any run opened exactly as the Run page showed it."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.errors import TallyError
from core.result import DecisionStatus
from core.store import RunFilter, RunRow, Store
from pages import ui

ui.leave_folder_mode()

S = st.session_state
PAGE_SIZE = 50
LATENCY_SAMPLE = 500  # latest ok calls per model drawn in the box plot
AGREEMENT_RUNS = 2000  # latest runs the agreement heatmap reads
RANGES: dict[str, float | None] = {
    "last hour": 3600,
    "last 24 hours": 86400,
    "last 7 days": 7 * 86400,
    "last 30 days": 30 * 86400,
    "all time": None,
}
ANY = "(any)"
STATUSES = [s.value for s in DecisionStatus] + ["running"]


def filters(store: Store) -> tuple[RunFilter, str]:
    """The filter widgets; returns the filter and the chart bucket (hour or day)."""
    with st.container(border=True):
        c1, c2, c3, c4 = st.columns(4)
        span = c1.selectbox("Time", list(RANGES), index=1, key="hist.range")
        models = [ANY, *store.models()]
        model = c2.selectbox("Model", models, key="hist.model")
        tasks = [ANY, *store.task_names()]
        task = c3.selectbox("Task", tasks, key="hist.task")
        statuses = c4.multiselect("Decision status", STATUSES, key="hist.statuses")
        c5, c6, c7, c8 = st.columns(4)
        batches = {b.batch_id: b for b in store.list_batches(limit=200)}
        batch = c5.selectbox(
            "Batch",
            [ANY, *batches],
            key="hist.batch",
            format_func=lambda b: b if b == ANY else f"{batches[b].name} ({b})",
        )
        min_cost = c6.number_input(
            "Min cost ($)", min_value=0.0, value=None, format="%.6f", key="hist.min_cost"
        )
        max_cost = c7.number_input(
            "Max cost ($)", min_value=0.0, value=None, format="%.6f", key="hist.max_cost"
        )
        text = c8.text_input("Input contains", key="hist.text")
        ties = st.checkbox("Ties only (runs that tied or took a tie-break branch)", key="hist.ties")
    seconds = RANGES[span]
    since = time.time() - seconds if seconds is not None else None
    f = RunFilter(
        since=since,
        model=None if model == ANY else model,
        task_name=None if task == ANY else task,
        statuses=tuple(statuses),
        ties_only=ties,
        batch_id=None if batch == ANY else batch,
        min_cost=min_cost,
        max_cost=max_cost,
        text=text.strip() or None,
    )
    bucket = "hour" if seconds is not None and seconds <= 2 * 86400 else "day"
    shown = (span, f.model, f.task_name, f.statuses, f.ties_only, f.batch_id, min_cost, max_cost)
    shown += (f.text,)
    if S.get("hist.filters") != shown:  # other runs now: start from their first page
        S["hist.filters"] = shown
        S["hist.page"] = 1
    return f, bucket


def runs_frame(rows: list[RunRow]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "when": ui.when(r.created_at),
                "status": r.status,
                "label": r.label or "",
                "margin": "" if r.margin is None else f"{r.margin:g}",
                "input": " ".join(r.input.split())[:120],
                "task": r.task_name or "",
                "models": ", ".join(dict.fromkeys(r.panel)),
                "calls": r.n_calls,
                "degraded": ui.degraded_mark(r),
                "cost": ui.run_cost(r),
                "latency": ui.latency(r.latency_ms),
                "source": r.source,
                "batch": r.batch_id or "",
                "run id": r.run_id,
            }
            for r in rows
        ],
        columns=[
            "when",
            "status",
            "degraded",
            "label",
            "margin",
            "input",
            "task",
            "models",
            "calls",
            "cost",
            "latency",
            "source",
            "batch",
            "run id",
        ],
    )


def table(store: Store, f: RunFilter) -> tuple[list[RunRow], int]:
    c1, c2 = st.columns([1, 5])
    number = max(1, int(S.get("hist.page") or 1))
    rows, total = store.list_runs(f, offset=(number - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    if number > pages:  # the filters shrank the result below the page shown
        number = pages
        rows, total = store.list_runs(f, offset=(number - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    S["hist.page"] = number
    c1.number_input("Page", min_value=1, max_value=pages, step=1, key="hist.page")
    first = (number - 1) * PAGE_SIZE
    if total:
        c2.markdown(
            f"**{total:,} runs** match · showing {first + 1:,}–{first + len(rows):,} "
            f"· page {number} of {pages}"
        )
    else:
        c2.markdown("**No runs match these filters.**")
    st.dataframe(
        runs_frame(rows),
        hide_index=True,
        width="stretch",
        height=min(420, 38 + 35 * max(1, len(rows))),
        key="hist.table",
        column_config={
            "when": st.column_config.TextColumn("when", width="medium"),
            "label": st.column_config.TextColumn("label", width="medium"),
            "margin": st.column_config.TextColumn("margin", width="small"),
            "input": st.column_config.TextColumn("input", width="large"),
            "task": st.column_config.TextColumn("task", width="small"),
            "models": st.column_config.TextColumn("models", width="medium"),
            "calls": st.column_config.NumberColumn("calls", width="small"),
            "cost": st.column_config.TextColumn("cost", width="small"),
            "latency": st.column_config.TextColumn("latency", width="small"),
            "source": st.column_config.TextColumn("source", width="small"),
            "batch": st.column_config.TextColumn("batch", width="small"),
            "run id": st.column_config.TextColumn("run id", width="small"),
        },
    )
    return rows, total


def bucket_label(bucket: float, size: str) -> str:
    """A bucket's start as a category label (UTC, as the database groups by UTC)."""
    moment = datetime.fromtimestamp(bucket, tz=UTC)
    return moment.strftime("%d %b %H:00" if size == "hour" else "%d %b %Y")


def layout(fig: go.Figure, title: str, *, height: int = 300, **extra: Any) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        **extra,
    )
    return fig


def chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, width="stretch", key=key, config=ui.CHART_CONFIG)


def nothing(what: str) -> None:
    """An empty chart says so, instead of drawing bare axes."""
    st.caption(f"{what}: nothing to draw for these runs yet.")


def cost_over_time_chart(store: Store, f: RunFilter, bucket: str) -> None:
    points = store.cost_over_time(f, bucket)
    if not points:
        nothing(f"Cost per {bucket}")
        return
    unknown = sum(p.unknown_cost_runs for p in points)
    fig = go.Figure(
        go.Bar(
            x=[bucket_label(p.bucket, bucket) for p in points],
            y=[p.cost_usd for p in points],
            customdata=[[p.runs, p.unknown_cost_runs] for p in points],
            hovertemplate=(
                "%{x}<br>$%{y:.6f} known cost<br>%{customdata[0]} runs, "
                "%{customdata[1]} of unknown cost<extra></extra>"
            ),
            marker_color="#4c78a8",
        )
    )
    title = f"Cost per {bucket} (UTC)"
    if unknown:
        title += f": {unknown:,} run{'s' if unknown != 1 else ''} of unknown cost, known part only"
    chart(layout(fig, title, yaxis_title="USD", xaxis_type="category"), "hist.cost-time")


def cost_by_model_chart(store: Store, f: RunFilter) -> None:
    by_model = store.cost_by_model(f)
    if not by_model:
        nothing("Cost per model")
        return
    fig = go.Figure(
        go.Bar(
            x=[ui.chart_text(m.model) for m in by_model],
            y=[m.cost_usd for m in by_model],
            customdata=[[m.calls, m.unknown_cost_calls] for m in by_model],
            hovertemplate=(
                "%{x}<br>$%{y:.6f} known cost<br>%{customdata[0]} calls, "
                "%{customdata[1]} of unknown cost<extra></extra>"
            ),
            marker_color="#72b7b2",
        )
    )
    unknown = sum(m.unknown_cost_calls for m in by_model)
    plural = "s" if unknown != 1 else ""
    title = "Cost per model" + (
        f" ({unknown:,} call{plural} of unknown cost, known part only)" if unknown else ""
    )
    chart(layout(fig, title, yaxis_title="USD"), "hist.cost-model")


def latency_chart(store: Store, f: RunFilter) -> None:
    samples = store.latency_sample_by_model(f, LATENCY_SAMPLE)
    if not samples:
        nothing("Latency per model (ok calls)")
        return
    fig = go.Figure()
    for model, values in samples.items():
        fig.add_trace(go.Box(y=values, name=ui.chart_text(model), boxpoints=False))
    title = f"Latency per model (ok calls, latest {LATENCY_SAMPLE} per model)"
    chart(layout(fig, title, yaxis_title="ms", showlegend=False), "hist.latency")


def decision_charts(store: Store, f: RunFilter, bucket: str) -> tuple[go.Figure, go.Figure]:
    mix = store.decision_mix_over_time(f, bucket)
    buckets = sorted({p.bucket for p in mix})
    labels = [bucket_label(b, bucket) for b in buckets]
    by = {(p.bucket, p.status): p.runs for p in mix}
    totals = {b: sum(by.get((b, s), 0) for s in STATUSES) for b in buckets}
    mix_fig = go.Figure()
    for status in STATUSES:
        ys = [by.get((b, status), 0) for b in buckets]
        if any(ys):
            mix_fig.add_trace(
                go.Bar(x=labels, y=ys, name=status, marker_color=ui.DECISION_COLOURS.get(status))
            )
    layout(
        mix_fig,
        f"Decision mix per {bucket} (UTC)",
        barmode="stack",
        yaxis_title="runs",
        xaxis_type="category",
        legend={"orientation": "h", "y": -0.15},
    )
    tied: dict[float, int] = {}
    for p in store.decision_mix_over_time(replace(f, ties_only=True), bucket):
        tied[p.bucket] = tied.get(p.bucket, 0) + p.runs
    rates = [tied.get(b, 0) / totals[b] if totals[b] else 0.0 for b in buckets]
    tie_fig = go.Figure(
        go.Scatter(
            x=labels,
            y=rates,
            mode="lines+markers",
            line={"color": "#e17c05"},
            marker={"size": 9},
            hovertemplate="%{x}<br>%{y:.1%} of runs tied<extra></extra>",
        )
    )
    layout(
        tie_fig,
        "Tie rate: runs that tied, whatever the tie-break then did",
        yaxis={"tickformat": ".0%", "range": [0, 1.05]},
        xaxis_type="category",
    )
    return mix_fig, tie_fig


def agreement_chart(store: Store, f: RunFilter) -> None:
    pairs = store.pairwise_agreement(f, AGREEMENT_RUNS)
    if not pairs:
        st.caption("Agreement: no two ok answers in the same run yet, nothing to compare.")
        return
    title = "Agreement of ok answers (pairs in brackets; diagonal: samples of one model)"
    fig = ui.agreement_heatmap(
        ((p.model_a, p.model_b, p.rate, f"{p.rate:.0%} ({p.pairs})") for p in pairs), title
    )
    chart(fig, "hist.agreement")


def charts(store: Store, f: RunFilter, bucket: str, total: int) -> None:
    st.subheader("Charts")
    if not total:
        st.info("No runs match these filters, so there is nothing to chart.")
        return
    st.caption(
        "For the runs the filters select, computed by the database. The sums are what is "
        "known: a cost that is unknown adds its known part only, never a made-up $0."
    )
    c1, c2 = st.columns(2)
    with c1:
        cost_over_time_chart(store, f, bucket)
    with c2:
        cost_by_model_chart(store, f)
    mix_fig, tie_fig = decision_charts(store, f, bucket)
    c1, c2 = st.columns(2)
    with c1:
        if mix_fig.data:
            chart(mix_fig, "hist.mix")
        else:
            nothing(f"Decision mix per {bucket}")
    with c2:
        if mix_fig.data:
            chart(tie_fig, "hist.tie-rate")
        else:
            nothing("Tie rate")
    c1, c2 = st.columns(2)
    with c1:
        latency_chart(store, f)
    with c2:
        agreement_chart(store, f)


def details(store: Store, rows: list[RunRow]) -> None:
    st.subheader("Run details")
    if not rows:
        st.caption("No run on this page.")
        return
    labels = {r.run_id: f"{ui.when(r.created_at)} · {r.status} · {r.input[:60]}" for r in rows}
    run_id = st.selectbox(
        "Open a run from this page",
        [None, *labels],
        format_func=lambda r: "(choose a run)" if r is None else labels[r],
        key="hist.run",
    )
    if run_id is None:
        return
    row = next(r for r in rows if r.run_id == run_id)
    st.caption(
        f"Run {run_id} · {ui.md_text(row.source)} · {ui.when(row.created_at)}"
        + (f" · batch {ui.md_text(row.batch_id)}" if row.batch_id else "")
    )
    # the Run and Batch pages re-attach from the id in the address
    where = f"[Open on the Run page](/run?run={quote(run_id, safe='')})"
    if row.batch_id:
        where += f" · [Open its batch](/batch?batch={quote(row.batch_id, safe='')})"
    st.markdown(where)
    if row.status == "running":
        st.info("This run has not finished (or was cut off): the calls recorded so far.")
        ui.render_calls(store.run_calls(run_id), key="hist.running-calls")
        return
    ui.render_result(store.get_run(run_id), key="hist.detail")
    reviews = store.reviews(run_id)
    if reviews:
        st.markdown("**Resolved by a reviewer**")
        for review in reviews:
            st.caption(
                f"{ui.md_text(review.reviewer)} chose {ui.md_text(review.label)} on "
                f"{ui.when(review.created_at)} (the panel had left it "
                f"{review.previous_status.replace('_', ' ')}): "
                f"{ui.md_text(review.reason, 300)}"
            )


def main() -> None:
    ui.page_identity()
    st.title("History")
    try:
        store = ui.get_runner().store
        f, bucket = filters(store)
        rows, total = table(store, f)
        details(store, rows)
        charts(store, f, bucket, total)
    except TallyError as err:
        st.error(str(err))


main()
