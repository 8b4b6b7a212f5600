"""History: every stored run, whoever made it, filtered and paged in SQL, with charts from SQL
aggregates, and any run opened exactly as the Run page showed it."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.errors import TallyError
from core.result import DecisionStatus
from core.store import RunFilter, RunRow, Store
from pages import ui

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
TIE_STATUSES = ("tie", "needs_review", "resolved", "escalated")


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
                "cost": ui.money(r.cost_usd) if r.status != "running" else "-",
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


def table(store: Store, f: RunFilter) -> list[RunRow]:
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
            "input": st.column_config.TextColumn("input", width="large"),
            "calls": st.column_config.NumberColumn("calls", width="small"),
        },
    )
    return rows


def when_utc(bucket: float) -> datetime:
    return datetime.fromtimestamp(bucket, tz=UTC)


def cost_charts(store: Store, f: RunFilter, bucket: str) -> None:
    points = store.cost_over_time(f, bucket)
    by_model = store.cost_by_model(f)
    c1, c2 = st.columns(2)
    with c1:
        fig = go.Figure(
            go.Bar(
                x=[when_utc(p.bucket) for p in points],
                y=[p.cost_usd for p in points],
                customdata=[[p.runs, p.unknown_cost_runs] for p in points],
                hovertemplate=(
                    "%{x}<br>$%{y:.6f} known cost<br>%{customdata[0]} runs, "
                    "%{customdata[1]} with unknown cost<extra></extra>"
                ),
                marker_color="#4c78a8",
            )
        )
        unknown = sum(p.unknown_cost_runs for p in points)
        fig.update_layout(
            title=f"Cost per {bucket} (known prices; {unknown} runs of unknown cost)",
            yaxis_title="USD",
            height=320,
            margin={"l": 10, "r": 10, "t": 40, "b": 10},
        )
        st.plotly_chart(fig, width="stretch", key="hist.cost-time")
    with c2:
        fig = go.Figure(
            go.Bar(
                x=[ui.chart_text(m.model) for m in by_model],
                y=[m.cost_usd for m in by_model],
                customdata=[[m.calls, m.unknown_cost_calls] for m in by_model],
                hovertemplate=(
                    "%{x}<br>$%{y:.6f}<br>%{customdata[0]} calls, "
                    "%{customdata[1]} of unknown cost<extra></extra>"
                ),
                marker_color="#72b7b2",
            )
        )
        fig.update_layout(
            title="Cost per model",
            yaxis_title="USD",
            height=320,
            margin={"l": 10, "r": 10, "t": 40, "b": 10},
        )
        st.plotly_chart(fig, width="stretch", key="hist.cost-model")


def latency_chart(store: Store, f: RunFilter) -> None:
    samples = store.latency_sample_by_model(f, LATENCY_SAMPLE)
    fig = go.Figure()
    for model, values in samples.items():
        fig.add_trace(go.Box(y=values, name=ui.chart_text(model), boxpoints=False))
    fig.update_layout(
        title=f"Latency per model (ok calls, latest {LATENCY_SAMPLE} per model)",
        yaxis_title="ms",
        height=340,
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    st.plotly_chart(fig, width="stretch", key="hist.latency")


def decision_charts(store: Store, f: RunFilter, bucket: str) -> None:
    mix = store.decision_mix_over_time(f, bucket)
    buckets = sorted({p.bucket for p in mix})
    by = {(p.bucket, p.status): p.runs for p in mix}
    totals = {b: sum(by.get((b, s), 0) for s in STATUSES) for b in buckets}
    c1, c2 = st.columns(2)
    with c1:
        fig = go.Figure()
        for status in STATUSES:
            ys = [by.get((b, status), 0) for b in buckets]
            if any(ys):
                fig.add_trace(
                    go.Bar(
                        x=[when_utc(b) for b in buckets],
                        y=ys,
                        name=status,
                        marker_color=ui.DECISION_COLOURS.get(status),
                    )
                )
        fig.update_layout(
            barmode="stack",
            title=f"Decision mix per {bucket}",
            yaxis_title="runs",
            height=320,
            margin={"l": 10, "r": 10, "t": 40, "b": 10},
            legend={"orientation": "h", "y": -0.2},
        )
        st.plotly_chart(fig, width="stretch", key="hist.mix")
    with c2:
        rates = [
            sum(by.get((b, s), 0) for s in TIE_STATUSES) / totals[b] if totals[b] else 0.0
            for b in buckets
        ]
        fig = go.Figure(
            go.Scatter(
                x=[when_utc(b) for b in buckets],
                y=rates,
                mode="lines+markers",
                line={"color": "#e17c05"},
                hovertemplate="%{x}<br>%{y:.1%} of runs tied<extra></extra>",
            )
        )
        fig.update_layout(
            title="Tie rate (tied, escalated, sent to review or resolved)",
            yaxis={"tickformat": ".0%", "range": [0, 1]},
            height=320,
            margin={"l": 10, "r": 10, "t": 40, "b": 10},
        )
        st.plotly_chart(fig, width="stretch", key="hist.tie-rate")


def agreement_chart(store: Store, f: RunFilter) -> None:
    pairs = store.pairwise_agreement(f, AGREEMENT_RUNS)
    models = sorted({p.model_a for p in pairs} | {p.model_b for p in pairs})
    if not models:
        st.caption("No two ok answers in the same run yet: nothing to compare.")
        return
    index = {m: i for i, m in enumerate(models)}
    z: list[list[float | None]] = [[None] * len(models) for _ in models]
    text: list[list[str]] = [[""] * len(models) for _ in models]
    for p in pairs:
        i, j = index[p.model_a], index[p.model_b]
        for a, b in ((i, j), (j, i)):
            z[a][b] = p.rate
            text[a][b] = f"{p.rate:.0%}<br>{p.pairs} pairs"
    labels = [ui.chart_text(m) for m in models]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=labels,
            text=text,
            texttemplate="%{text}",
            zmin=0,
            zmax=1,
            colorscale="Blues",
            hovertemplate="%{y} vs %{x}: %{z:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"How often two models' ok answers agree (latest {AGREEMENT_RUNS} runs; "
        "diagonal: samples of one model)",
        height=120 + 60 * len(models),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    st.plotly_chart(fig, width="stretch", key="hist.agreement")


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
    if row.status == "running":
        st.info("This run has not finished (or was cut off): the calls recorded so far.")
        ui.render_calls(store.run_calls(run_id), key="hist.running-calls")
        return
    ui.render_result(store.get_run(run_id), key="hist.detail")


def main() -> None:
    st.title("History")
    try:
        store = ui.get_runner().store
        f, bucket = filters(store)
        rows = table(store, f)
        tabs = st.tabs(["Cost", "Latency", "Decisions and ties", "Agreement"])
        with tabs[0]:
            cost_charts(store, f, bucket)
        with tabs[1]:
            latency_chart(store, f)
        with tabs[2]:
            decision_charts(store, f, bucket)
        with tabs[3]:
            agreement_chart(store, f)
        details(store, rows)
    except TallyError as err:
        st.error(str(err))


main()
