"""Display pieces the pages share: the executor handle, number formats, and how a run is drawn.

The Run page and History's run detail both call ``render_result`` so a stored run looks exactly
as it did live. Model output is always shown as inert text: raw replies in ``st.code`` (no
markdown, no HTML), tables in ``st.dataframe`` (cells are drawn as text), and any model-derived
string that must sit inside markdown (a banner) or a chart label goes through ``md_text`` or
``chart_text`` first.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import cost
from core.api import build_policy
from core.auth import AuthSettings, Identity, Role, binding_refusal
from core.calls import CALL_COLUMNS, FAILED_STATUSES, call_rows
from core.cost import dollars
from core.engine import RUN_CANCELLED
from core.errors import TallyError
from core.estimate import LARGE_CALLS, LARGE_COST_USD, SpendEstimate
from core.jobs.inprocess import InProcessExecutor
from core.jobs.store import submission_key
from core.policy import Aggregation, Policy
from core.result import CallResult, CallStatus, Decision, DecisionStatus, Outcome, RunResult
from core.spec import RunSpec
from core.store import RunRow
from core.timeline import Lane, Timeline, run_timeline

PROSE_WARNING = "Votes on prose are vibes: vote on classifications, structured outputs or yes/no."
REVIEW_NOTE = "The tie went to the Review queue: a person will pick the final answer."


STATUS_COLOURS = {
    "vote": "#4c78a8",
    "winner": "#2e8540",
    CallStatus.INVALID.value: "#f2a93b",
    CallStatus.ERROR.value: "#d64541",
    CallStatus.TIMEOUT.value: "#a83279",
    CallStatus.CANCELLED.value: "#8c8c8c",
}
DECISION_COLOURS = {
    DecisionStatus.DECIDED.value: "#2e8540",
    DecisionStatus.ESCALATED.value: "#6a9f58",
    DecisionStatus.RESOLVED.value: "#4c78a8",
    DecisionStatus.TIE.value: "#f2a93b",
    DecisionStatus.NEEDS_REVIEW.value: "#e17c05",
    DecisionStatus.NO_CONVERGENCE.value: "#a83279",
    DecisionStatus.FAILED.value: "#d64541",
    "running": "#8c8c8c",
}

CHART_CONFIG = {"displayModeBar": False}
ZWSP = "\u200b"
_NO_AUTOLINK = (  # markdown links bare URLs and e-mail addresses even when escaped
    ("\\:\\/\\/", f"\\:{ZWSP}\\/\\/"),
    ("www\\.", f"www{ZWSP}\\."),
    ("\\@", f"\\@{ZWSP}"),
)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&^\"'@/%])")


def leave_folder_mode() -> None:
    """Start over through ``app.py`` when Streamlit ran a page file on its own.

    Streamlit treats a ``pages/`` folder beside the main script as its older multipage mode
    until ``st.navigation`` has run once in the process, so the very first visit straight to
    ``/run`` would run the page without ``app.py``: no page config, every file of the folder
    listed. Turning that mode off and re-running sends the visit through ``app.py``'s navigation,
    which opens the page the address asked for. Each page calls this first thing in its own
    script, never while this module is being imported: a rerun raised inside an import aborts it,
    and another session importing this module at that moment gets the dead half-imported module
    (``cannot import name 'ui' from 'pages'``).
    """
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if PagesManager.uses_pages_directory and get_script_run_ctx() is not None:
        PagesManager.uses_pages_directory = False
        st.rerun()


@st.cache_resource(show_spinner=False, on_release=lambda runner: runner.close())
def get_runner() -> InProcessExecutor:
    """The one in-process executor of this server process (its loop keeps jobs going across
    reruns, tabs and reloads)."""
    return InProcessExecutor()


def form_key(kind: str, content: Any) -> str:
    """The active key of one form submission: pressed twice, or in two tabs, one job."""
    return submission_key(None, kind, content)


def follow(name: str, value: str | None) -> None:
    """Put the job's run or batch id in the address, so a reload or a shared link opens the
    same view."""
    st.session_state[f"{name}.linked"] = value  # written here: not a link to open anew
    if value is None:
        st.query_params.pop(name, None)
    elif st.query_params.get(name) != value:
        st.query_params[name] = value


# -- who is acting ----------------------------------------------------------------------------


def secrets() -> dict[str, Any]:
    """Streamlit's secrets as a plain dict; empty when there is no secrets file."""
    try:
        return dict(st.secrets.to_dict())
    except Exception:  # no secrets file anywhere: Streamlit raises rather than giving {}
        return {}


def auth_settings() -> AuthSettings:
    return AuthSettings.from_secrets(secrets())


def identity(typed_name: str | None = None) -> Identity:
    """Who this session is (``core.auth``): the local user while sign-in is off, else the
    signed-in identity with its roles, else anonymous."""
    try:
        user: dict[str, Any] = dict(st.user.to_dict())
    except Exception:  # no sign-in configured: there is no user to read
        user = {}
    return auth_settings().identity(user, typed_name=typed_name)


def page_identity(role: Role = Role.VIEWER) -> Identity:
    """First thing on every page: who is here, stopping the page for a visitor who must sign
    in or whose role does not reach ``role``. The checks are ``core.auth``'s; every action the
    page offers is checked again where it is carried out."""
    try:
        settings = auth_settings()
        who = identity()
    except TallyError as err:
        st.error(str(err))
        st.stop()
    if settings.enabled:
        with st.sidebar:
            if who.known:
                roles = ", ".join(sorted(who.roles)) or "no role"
                st.caption(f"Signed in as {md_text(who.display, 60)} ({md_text(roles)})")
                st.button("Sign out", key="tally_sign_out", on_click=st.logout)
        if not who.known:
            st.title("Tally")
            st.info("Sign in to use Tally: every action records who took it.")
            st.button("Sign in", type="primary", key="tally_sign_in", on_click=st.login)
            st.stop()
    try:
        who.require(role)
    except TallyError as err:
        st.error(str(err))
        st.stop()
    return who


def binding_problem() -> str | None:
    """Why this server must not serve pages: listening off loopback without sign-in (a
    ``streamlit run`` by hand can bypass the launcher's own refusal)."""
    try:
        return binding_refusal(st.get_option("server.address"), auth_settings())
    except TallyError as err:
        return str(err)


# -- form pieces -------------------------------------------------------------------------------

TIE_BREAKS = {
    "escalate": "escalate to a stronger model",
    "expand": "expand: draw k more votes",
    "conservative": "take the most conservative tied label",
    "human": "send to the Review queue",
    "human:2": "send to two blind reviewers (Review queue)",
    "abstain": "abstain (record the tie as failed)",
}


def available_models(runner: InProcessExecutor) -> list[str]:
    """Every model the configured providers offer, as provider:model, the simulated ones first
    (they work with no key)."""
    names = [f"{p['name']}:{m}" for p in runner.tally.registry.describe() for m in p["models"]]
    return sorted(names, key=lambda n: (not n.startswith("sim:"), n))


def split_list(text: str) -> list[str]:
    """The items of a comma-separated text input, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def keep_choice(key: str, options: Collection[Any], *preferred: Any) -> None:
    """Keep a picker's value while it is still offered; otherwise start it on the first of
    ``preferred`` that is offered, else on the first option (a stored run, batch or model that
    went away would otherwise leave the widget pointing at nothing)."""
    if options and st.session_state.get(key) not in options:
        fallback = next((p for p in preferred if p in options), next(iter(options)))
        st.session_state[key] = fallback


# -- check before spending ---------------------------------------------------------------------

CONFIRM_FIRST = "This is a large spend: tick the box under the estimate to confirm it first."


def spend_estimate(spec: RunSpec, inputs: Sequence[str]) -> SpendEstimate | None:
    """What the work will spend, or None when it cannot be estimated (the form's checks say
    why)."""
    try:
        return get_runner().tally.estimate(spec, inputs)
    except TallyError:
        return None


def _confirm_key(prefix: str, estimate: SpendEstimate) -> str:
    """A confirmation belongs to one spend: a changed form asks again."""
    cost = estimate.known_cost_usd + (estimate.extra_cost_usd or 0.0)
    return f"{prefix}.confirm.{estimate.calls + estimate.extra_calls}.{cost:.4f}"


def spend_confirmed(prefix: str, estimate: SpendEstimate) -> bool:
    return not estimate.large or bool(st.session_state.get(_confirm_key(prefix, estimate)))


def spend_box(prefix: str, estimate: SpendEstimate | None, what: str = "Before it runs") -> None:
    """The planned spend in one line, and for a large one the box that confirms it."""
    if estimate is None:
        return
    st.info(f"**{what}**: {md_text(estimate.describe(money), 600)}", icon=":material/payments:")
    if estimate.large:
        st.checkbox(
            f"Yes, spend this: it is large (over {money(LARGE_COST_USD)} or {LARGE_CALLS} calls)",
            key=_confirm_key(prefix, estimate),
        )


# -- formats -----------------------------------------------------------------------------------


money = dollars
"""Dollars as every page shows them (``unknown`` when no price is known)."""


def run_cost(run: RunResult | RunRow) -> str:
    """A run's cost as every view words it: ``≥ $x + unknown`` when part is unknown."""
    return cost.run_cost_text(run, money)


def degraded_mark(row: RunRow) -> str:
    """A run list's degraded cell: ``3 of 5 counted`` when fewer votes were counted than
    planned, empty otherwise (the run's banner says why)."""
    d = row.degraded
    return "" if d is None else f"{d.counted} of {d.planned} counted"


def latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.2f} s"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def md_text(text: object, limit: int = 200) -> str:
    """A string made safe to place inside markdown: one line, every markdown character escaped,
    so a reply like ``![x](http://..)`` or ``<b>`` shows as those characters, nothing more."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    escaped = _MD_SPECIAL.sub(r"\\\1", flat)
    for plain, broken in _NO_AUTOLINK:
        escaped = escaped.replace(plain, broken)
    return escaped


def chart_text(text: object, limit: int = 40) -> str:
    """A string made safe for a plotly label: plotly reads a little HTML (links, bold) in
    labels, so ``&``, ``<`` and ``>`` are written as entities and shown literally."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- calls -------------------------------------------------------------------------------------


def calls_frame(calls: Sequence[CallResult]) -> pd.DataFrame:
    """One row per call, every value already a display string (a table of text)."""
    rows = [
        {
            "slot": row.slot,
            "phase": row.phase,
            "model": row.model,
            "state": row.state,
            "reply": row.reply,
            "vote": row.vote,
            "latency": latency(row.latency_ms) if row.final else "-",
            "tokens in / out": row.tokens,
            "cached": "-" if row.tokens_cached is None else str(row.tokens_cached),
            "cost": row.cost,
            "retries": row.retries,
        }
        for row in call_rows(calls, money=money)
    ]
    return pd.DataFrame(rows, columns=CALL_COLUMNS)


def render_calls(calls: Sequence[CallResult], *, key: str | None = None) -> None:
    """The calls as a table: slot, model, state (with the reason), the raw reply beside the
    vote it was read as, latency, tokens, cost, retries. Cells are text; nothing a model wrote
    is interpreted."""
    frame = calls_frame(calls)
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        key=key,
        column_config={
            "slot": st.column_config.NumberColumn("slot", width="small"),
            "phase": st.column_config.TextColumn("phase", width="small"),
            "retries": st.column_config.NumberColumn("retries", width="small"),
            "reply": st.column_config.TextColumn(
                "reply", width="medium", help="the raw reply, as plain text"
            ),
            "vote": st.column_config.TextColumn("vote", help="the reply as the format read it"),
            "cost": st.column_config.TextColumn(
                "cost (simulated)" if cost.is_simulated(c.model for c in calls) else "cost"
            ),
            "cached": st.column_config.TextColumn(
                "cached", width="small", help="prompt tokens read from the provider's cache"
            ),
        },
    )


def render_raw(calls: Sequence[CallResult]) -> None:
    """Every raw reply, exactly as received, as plain text."""
    for call in calls:
        st.caption(
            f"slot {call.slot} · {md_text(call.phase)} · {md_text(call.model)} · "
            f"{md_text(call.status.value)}"
        )
        st.code(call.raw if call.raw else "(no reply)", language=None, wrap_lines=True)


# -- the vote and the decision -----------------------------------------------------------------


def vote_bars(
    votes: Mapping[str, int],
    calls: Sequence[CallResult],
    winner: str | None,
    *,
    cut: bool = False,
) -> list[tuple[str, int, str]]:
    """(label, count, colour) per bar: every vote, then invalid and failed calls by status,
    so a run where most calls failed never looks like a clean win. With ``cut``, cancelled
    calls were cut by the policy once the outcome was known (an early stop, a fastest answer):
    they are not failures and get no bar, or they would dwarf the votes."""
    bars = [
        (chart_text(label), count, STATUS_COLOURS["winner" if label == winner else "vote"])
        for label, count in votes.items()
    ]
    voting = [c for c in calls if c.phase != "escalate"]
    for status in FAILED_STATUSES:
        if cut and status == CallStatus.CANCELLED:
            continue
        n = sum(1 for c in voting if c.status == status)
        if n:
            bars.append((f"[{status.value}]", n, STATUS_COLOURS[status.value]))
    return bars


def vote_chart(
    votes: Mapping[str, int], calls: Sequence[CallResult], decision: Decision
) -> go.Figure:
    cut = decision.reason != RUN_CANCELLED
    bars = vote_bars(votes, calls, decision.label, cut=cut)
    n_cut = sum(1 for c in calls if c.status == CallStatus.CANCELLED) if cut else 0
    fig = go.Figure(
        go.Bar(
            x=[b[0] for b in bars],
            y=[b[1] for b in bars],
            marker_color=[b[2] for b in bars],
            text=[str(b[1]) for b in bars],
            textposition="outside",
            hovertemplate="%{x}: %{y}<extra></extra>",
            cliponaxis=False,
        )
    )
    top = max((b[1] for b in bars), default=1)
    fig.update_layout(
        height=260,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis={"title": "calls", "dtick": 1 if top <= 10 else None, "range": [0, top * 1.25]},
        xaxis={"type": "category"},
        showlegend=False,
        title={
            "text": "Votes (invalid and failed calls in brackets)"
            + (f"; {n_cut} calls cut once the outcome was known" if n_cut else ""),
            "font": {"size": 14},
        },
    )
    return fig


ESCALATE_BELOW: dict[str, Any] = {
    "label": "Also send decisions below this confidence through the chain",
    "min_value": 0.0,
    "max_value": 0.99,
    "step": 0.05,
    "format": "%.2f",
    "help": "escalate-below: 0 sends only ties and unmet thresholds; 0.8 also sends a 3-2 "
    "majority (confidence 0.66), not a 4-1 one (0.89).",
}
"""The Run and Batch forms' number input for the chain's trigger."""


def open_words(decision: Decision, tied: str) -> str:
    """What left the vote open for the tie-break chain, in the banner's words."""
    if decision.outcome == Outcome.THRESHOLD_NOT_MET:
        return f"THRESHOLD NOT MET (candidates {tied})"
    if decision.outcome == Outcome.NO_CONVERGENCE:
        return "NO CONVERGENCE (every vote differs)"
    if decision.outcome == Outcome.LOW_CONFIDENCE:
        return f"LOW CONFIDENCE (candidates {tied})"
    return f"TIE between {tied}"


def decision_banner(decision: Decision, votes: Mapping[str, int]) -> None:
    """The outcome in one coloured line, then the branches the tie-break chain took, the
    quorum it was taken under and, when calls were lost, that it is degraded and why."""
    status = decision.status
    total = sum(votes.values())
    label = md_text(decision.label) if decision.label is not None else "-"
    margin = f"{decision.margin:g}" if decision.margin is not None else "-"
    tied = ", ".join(md_text(t, 60) for t in decision.tied) or "all votes"
    branches = " → ".join(md_text(b, 80) for b in decision.branches)
    what = open_words(decision, tied)
    if status == DecisionStatus.DECIDED:
        head = f"**DECIDED: {label}**, margin {margin} ({total} votes)"
        if decision.confidence is not None:
            head += f", confidence {decision.confidence:.2f}"
        if branches:
            head += f" after the tie-break {branches}"
        st.success(head)
    elif status == DecisionStatus.ESCALATED:
        st.success(f"**ESCALATED: {label}**. {what}, broken by {branches}")
    elif status == DecisionStatus.RESOLVED:
        st.success(f"**RESOLVED by a reviewer: {label}**. The vote had left: {what}")
    elif status == DecisionStatus.TIE:
        st.warning(
            f"**TIE** between {tied}. "
            + (f"Tie-break branches taken: {branches}." if branches else "No tie-break declared.")
        )
    elif status == DecisionStatus.NEEDS_REVIEW:
        st.warning(
            f"**NEEDS REVIEW**: {what}. "
            + (f"Branches taken: {branches}. " if branches else "")
            + REVIEW_NOTE
        )
    elif status == DecisionStatus.NO_CONVERGENCE:
        st.error(
            f"**NO CONVERGENCE**: every vote differs. {PROSE_WARNING}"
            + (f" Branches taken: {branches}." if branches else "")
        )
    elif decision.reason == RUN_CANCELLED:
        st.info(
            "Cancelled: you stopped this run. The calls already made stay recorded, with "
            "what they cost so far.",
            icon=":material/cancel:",
        )
    else:
        st.error(f"**FAILED**: {md_text(decision.reason, 300)}")
    if decision.reason == RUN_CANCELLED:
        return
    if decision.reason and status != DecisionStatus.FAILED:
        st.caption(md_text(decision.reason, 300))
    if decision.quorum is not None:
        st.caption(md_text(decision.quorum.describe(), 200))
    if decision.degraded is not None:
        st.warning(f"**DEGRADED**: {md_text(decision.degraded.why, 300)}")


def render_decision(
    decision: Decision,
    votes: Mapping[str, int],
    calls: Sequence[CallResult],
    *,
    key: str | None = None,
) -> None:
    """The decision banner and the vote breakdown chart."""
    decision_banner(decision, votes)
    if decision.fields:
        st.caption("Per-field winners")
        st.dataframe(
            pd.DataFrame(
                [
                    {"field": k, "winner": v if v is not None else "-"}
                    for k, v in decision.fields.items()
                ]
            ),
            hide_index=True,
        )
    st.plotly_chart(
        vote_chart(votes, calls, decision), key=key, width="stretch", config=CHART_CONFIG
    )


def render_result(result: RunResult, *, key: str = "result") -> None:
    """A finished run as the Run page shows it: decision, votes, calls, raw replies."""
    cols = st.columns([2, 1, 1, 1])  # room for "≥ $0.0042 + unknown"
    simulated = cost.is_simulated(result.spec.slot_names)
    cols[0].metric(
        "Cost (simulated)" if simulated else "Cost", cost.run_cost_text(result, money, label=False)
    )
    cols[1].metric("Latency", latency(result.latency_ms))
    cols[2].metric("Calls", len(result.calls))
    cols[3].metric("Slots", result.spec.panel.n)
    render_decision(result.decision, result.votes, result.calls, key=f"{key}-votes")
    if result.decision.status != DecisionStatus.FAILED or result.decision.outcome is not None:
        revote_panel(result, key=f"{key}.whatif")
    render_timeline(run_timeline(result), key=f"{key}-timeline")
    st.subheader("Calls")
    render_calls(result.calls, key=f"{key}-calls")
    with st.expander("Raw replies (plain text)", expanded=False):
        render_raw(result.calls)
    with st.expander("Input, task, panel and policy", expanded=False):
        st.caption("Input")
        st.code(result.input, language=None, wrap_lines=True)
        st.caption("Task, panel and policy")
        st.json(result.spec.to_json(), expanded=False)


def status_counts_frame(counts: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"status": k, "runs": int(v)} for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    )


# -- charts ------------------------------------------------------------------------------------


def agreement_heatmap(cells: Iterable[tuple[str, str, float, str]], title: str) -> go.Figure:
    """How often models agree, pair by pair: one (model a, model b, rate, cell text) per pair,
    drawn on both sides of the diagonal, model names made safe for the chart. Every agreement
    heatmap of the dashboard is drawn by this one, the same way: models in the same order on
    both axes (top to bottom as left to right), the colour scale fitted to the rates shown (so
    91% and 97% do not look alike) and labelled in percent."""
    cells = list(cells)
    models = sorted({c[0] for c in cells} | {c[1] for c in cells})
    index = {m: i for i, m in enumerate(models)}
    z: list[list[float | None]] = [[None] * len(models) for _ in models]
    text: list[list[str]] = [[""] * len(models) for _ in models]
    for model_a, model_b, rate, label in cells:
        i, j = index[model_a], index[model_b]
        for a, b in ((i, j), (j, i)):
            z[a][b] = rate
            text[a][b] = label
    low, high = heatmap_range([c[2] for c in cells])
    labels = [chart_text(m) for m in models]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=labels,
            text=text,
            texttemplate="%{text}",
            zmin=low,
            zmax=high,
            colorscale="Blues",
            colorbar={"tickformat": ".0%"},
            hovertemplate="%{y} vs %{x}: %{z:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=max(300, 110 + 50 * len(models)),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        yaxis={"autorange": "reversed"},
    )
    return fig


def heatmap_range(rates: Sequence[float]) -> tuple[float, float]:
    """The colour range for ``rates``: their span widened to whole 5% steps, at least 10%
    wide, inside 0 to 100%."""
    if not rates:
        return 0.0, 1.0
    low = math.floor(min(rates) * 20) / 20
    high = math.ceil(max(rates) * 20) / 20
    if high - low < 0.1:
        middle = (high + low) / 2
        low, high = middle - 0.05, middle + 0.05
    low, high = max(0.0, low), min(1.0, high)
    if high - low < 0.1:  # pressed against 0 or 100%
        low, high = (0.0, 0.1) if low == 0.0 else (0.9, 1.0)
    return low, high


# -- the fan-out timeline ----------------------------------------------------------------------

LANE_STATES = {
    "queued": "#d9d9d9",
    CallStatus.RUNNING.value: "#9ecae1",
    CallStatus.OK.value: STATUS_COLOURS["vote"],
    CallStatus.INVALID.value: STATUS_COLOURS["invalid"],
    CallStatus.ERROR.value: STATUS_COLOURS["error"],
    CallStatus.TIMEOUT.value: STATUS_COLOURS["timeout"],
    CallStatus.CANCELLED.value: STATUS_COLOURS["cancelled"],
}


QUEUED_SHOWN_S = 0.005
"""A wait behind the ceilings shorter than this is not drawn (it would be a sliver)."""


def lane_label(lane: Lane) -> str:
    label = f"{lane.name} · {chart_text(lane.model, 30)}"
    return label + (f" ×{lane.samples}" if lane.samples > 1 else "")


def lane_hover(lane: Lane) -> str:
    parts = [f"{chart_text(lane.model)}: {lane.status.value}"]
    if lane.samples > 1:
        parts.append(f"one request, {lane.samples} samples, the prompt billed once")
    if lane.tokens_in is not None or lane.tokens_out is not None:
        parts.append(f"tokens {lane.tokens_in or 0} in / {lane.tokens_out or 0} out")
    if lane.retries:
        parts.append(f"{len(lane.retries)} retr{'y' if len(lane.retries) == 1 else 'ies'}")
    if lane.cached:
        parts.append("answered from the cache")
    if lane.answers:
        parts.append("answer: " + ", ".join(chart_text(a, 20) for a in lane.answers[:8]))
    return "<br>".join(parts)


def timeline_figure(line: Timeline) -> go.Figure:
    """One lane per request: grey while queued behind the ceilings, coloured by how it ended
    once it went out (light blue while still running), a diamond at the first token, a cross
    at each retry; dashed lines where an early stop or a fastest answer cut the rest and where
    the run decided."""
    lanes = line.lanes
    labels = [lane_label(lane) for lane in lanes]
    end = line.now if line.now is not None else line.decided
    segments: dict[str, tuple[list[str], list[float], list[float], list[str]]] = {}

    def add(state: str, label: str, start: float, stop: float, hover: str) -> None:
        ys, bases, widths, hovers = segments.setdefault(state, ([], [], [], []))
        ys.append(label)
        bases.append(start)
        widths.append(max(stop - start, 0.002))
        hovers.append(hover)

    top = max([end or 0.0] + [t for lane in lanes for t in (lane.ended, lane.started) if t])
    pairs = list(zip(lanes, labels, strict=True))
    for lane, label in pairs:
        hover = lane_hover(lane)
        stop = lane.ended if lane.ended is not None else (line.now or top)
        if lane.queued is not None:
            went = lane.started if lane.started is not None else stop
            if went - lane.queued >= QUEUED_SHOWN_S:
                add("queued", label, lane.queued, went, f"queued behind the ceilings<br>{hover}")
        if lane.started is not None:
            state = lane.status.value if lane.status.final else CallStatus.RUNNING.value
            add(state, label, lane.started, stop, hover)
    fig = go.Figure()
    for state, (ys, bases, widths, hovers) in segments.items():
        fig.add_trace(
            go.Bar(
                y=ys,
                x=widths,
                base=bases,
                orientation="h",
                name=state,
                marker_color=LANE_STATES.get(state, "#8c8c8c"),
                customdata=hovers,
                hovertemplate="%{customdata}<br>%{base:.2f}–%{x:.2f} s<extra></extra>",
            )
        )
    marks = [
        ("first token", "diamond", [(lane.first_token, lb) for lane, lb in pairs]),
        ("retry", "x", [(t, lb) for lane, lb in pairs for t in lane.retries]),
    ]
    for name, symbol, points in marks:
        points = [(t, lb) for t, lb in points if t is not None]
        if points:
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in points],
                    y=[p[1] for p in points],
                    mode="markers",
                    name=name,
                    marker={"symbol": symbol, "size": 9, "color": "#222222"},
                    hovertemplate=f"{name} at %{{x:.2f}} s<extra></extra>",
                )
            )
    for at, words, colour in (
        (line.stopped, "rest cut", "#e17c05"),
        (line.decided, "decided", "#2e8540"),
    ):
        if at is not None:
            fig.add_vline(
                x=at,
                line_dash="dash",
                line_color=colour,
                annotation_text=f"{words} {at:.2f} s",
                annotation_position="top",
            )
    fig.update_layout(
        barmode="overlay",
        height=max(200, 34 * len(lanes) + 130),
        margin={"l": 10, "r": 10, "t": 50, "b": 50},
        xaxis={"rangemode": "tozero", "ticksuffix": " s"},
        yaxis={"autorange": "reversed", "type": "category"},
        legend={"orientation": "h", "y": -0.12, "yanchor": "top"},
        title={
            "text": "Fan-out timeline: one lane per request, seconds from the start",
            "font": {"size": 14},
        },
    )
    return fig


def render_timeline(line: Timeline, *, key: str) -> None:
    """The fan-out timeline, or a line saying there is nothing to draw yet."""
    if line.empty:
        st.caption("No call has gone out yet: the timeline starts with the first one.")
        return
    st.plotly_chart(timeline_figure(line), key=key, width="stretch", config=CHART_CONFIG)


# -- what if: a re-vote under another policy ---------------------------------------------------

OFFLINE_TIE_BREAKS = {k: v for k, v in TIE_BREAKS.items() if k not in ("escalate", "expand")}
REVOTE_AGGREGATIONS = [a.value for a in Aggregation]


def policy_form(key: str, current: Policy) -> Policy | None:
    """Another policy, starting from ``current``: aggregation, k, quorum, and an ordered chain
    of offline tie-breaks. None (with the reason shown) when it cannot be built."""
    c1, c2, c3 = st.columns(3)
    aggregate = c1.selectbox(
        "Decide by",
        REVOTE_AGGREGATIONS,
        index=REVOTE_AGGREGATIONS.index(current.aggregation.value),
        key=f"{key}.aggregate",
    )
    k = None
    if aggregate == Aggregation.AT_LEAST.value:
        k = c2.number_input(
            "k: votes the winner needs", min_value=1, value=current.k or 3, key=f"{key}.k"
        )
    min_valid = c3.number_input(
        "Quorum: minimum valid votes",
        min_value=0,
        value=current.quorum.min_valid,
        placeholder="default",
        key=f"{key}.min_valid",
    )
    chain = st.multiselect(
        "Tie-break chain (in the order chosen; offline branches only: no new calls)",
        list(OFFLINE_TIE_BREAKS),
        default=[b.kind for b in current.tie_breaks if b.kind in OFFLINE_TIE_BREAKS],
        format_func=OFFLINE_TIE_BREAKS.__getitem__,
        key=f"{key}.chain",
        select_all=False,
    )
    try:
        policy = build_policy(
            aggregate=f"at-least:{int(k)}" if k is not None else aggregate,
            tie_break=chain,
            min_valid=None if min_valid is None else int(min_valid),
            count_invalid=current.quorum.count_invalid,
            count_errors=current.quorum.count_errors,
        )
        return policy.model_copy(update={"accept": current.accept})
    except TallyError as err:
        st.error(md_text(err, 300))
        return None


def revote_panel(result: RunResult, *, key: str) -> None:
    """Decide this run under another policy with no new calls, the two decisions side by side."""
    with st.expander("What if: decide this run under another policy (no new calls)"):
        policy = policy_form(key, result.spec.policy)
        who = identity()
        runner = who.has(Role.RUNNER)
        if st.button("Decide again", key=f"{key}.go", disabled=policy is None or not runner):
            assert policy is not None
            try:
                (again,) = get_runner().revote([result.run_id], policy, actor=who)
                st.session_state[f"{key}.result"] = again
            except TallyError as err:
                st.error(md_text(err, 300))
        again = st.session_state.get(f"{key}.result")
        if again is None or again.input != result.input:
            return
        left, right = st.columns(2)
        with left:
            st.markdown(f"**As it ran**: {md_text(result.spec.policy.describe())}")
            decision_banner(result.decision, result.votes)
        with right:
            st.markdown(f"**Under** {md_text(again.spec.policy.describe())}")
            decision_banner(again.decision, again.votes)
            if again.missing:
                slots = ", ".join(f"slot {m.slot}" for m in again.missing)
                st.caption(
                    f"Calls cut before they answered ({md_text(slots)}) had no vote, and their "
                    "votes could have changed this decision."
                )
        st.caption(f"No new calls: cost {money(again.cost_usd)}. Stored as run {again.run_id}.")
