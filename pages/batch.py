"""Batch: many inputs, each a run, in the background, with live progress, results and downloads.

A file's columns are offered for mapping as soon as it is uploaded (``core.inputs.read_columns``),
and the file is checked whole before anything is stored (``core.inputs.read_items``): a missing
column, a broken JSONL line, an empty or non-UTF-8 file is a message beside the widget it
concerns, and no batch row is written. The batch runs as a job of the in-process executor, so
it keeps going when the page is left; a fragment polls its progress. The address carries the
batch (``?batch=ID``): a reload or a link opens it, live while it runs, whoever runs it. A
batch cut off (the server stopped, or cancelled) can be resumed: finished runs are skipped,
finished calls reused. Pressing Run batch twice for the same batch starts one job.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pandas as pd
import streamlit as st

from core import datasets
from core.api import build_policy, build_task, tie_break_chain
from core.auth import Role
from core.batch import batch_summary, judged_runs
from core.cost import batch_cost_text, describe_cost
from core.errors import InputError, TallyError
from core.experiments import load_labelled
from core.inputs import read_columns, read_items
from core.jobs.inprocess import BatchProgress, InProcessExecutor
from core.panel import MAX_N, ModelSpec
from core.policy import Aggregation
from core.result import DecisionStatus
from core.spec import RunSpec
from core.store import BatchInfo, BatchItem, RunFilter, Store
from core.store.export import export_calls, export_runs
from core.task import Task
from core.whatif import BatchComparison, Side, compare_batch
from pages import ui

ui.leave_folder_mode()

S = st.session_state
UPLOAD, BUNDLED = "Upload CSV or JSONL", "A bundled labelled set"
NONE = "(none)"
FORMATS = {
    "label": "labels (a closed set)",
    "yesno": "yes / no",
    "number": "number",
    **{f"set:{name}": f"the {name} set's format" for name in datasets.list_sets()},
}
AGGREGATIONS = [a.value for a in Aggregation]
DEFAULT_PANEL = ["sim:sim-strong", "sim:sim-fast", "sim:sim-mid", "sim:sim-biased", "sim:sim-flaky"]
TEXT_GUESSES = ("text", "input", "question", "prompt", "message")
GOLD_GUESSES = ("gold", "label", "answer", "expected")
ID_GUESSES = ("id", "item_id", "key")
# A batch marked running that started a run this recently is taken to be running in another
# process (the CLI, another dashboard), and is not offered for resume: both would pay.
BUSY_ELSEWHERE_S = 120
DEFAULTS: dict[str, Any] = {
    "batch.source": UPLOAD,
    "batch.set": datasets.list_sets()[0],
    "batch.first": 50,
    "batch.format": "label",
    "batch.labels": "yes, no",
    "batch.template": "{input}",
    "batch.n": 5,
    "batch.other_models": "",
    "batch.aggregate": Aggregation.MAJORITY.value,
    "batch.k": 3,
    "batch.tie_breaks": [],
    "batch.expand_k": 2,
    "batch.escalate_below": 0.0,  # 0: only ties and thresholds open the chain
    "batch.early_stop": False,
    "batch.name": "",
    "batch.errors": {},
}


def val(key: str) -> Any:
    return S.get(key, DEFAULTS.get(key))


def error_here(field: str) -> None:
    message = S.get("batch.errors", {}).get(field)
    if message:
        st.error(message)


# -- the uploaded file ---------------------------------------------------------------------------


def guess(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[n] for n in names if n in lowered), None)


def mapping_widgets(columns: list[str], file_name: str) -> None:
    """Selectboxes for the text, gold and id columns, filled from the file's columns."""
    if S.get("batch.columns_of") != (file_name, tuple(columns)):
        S["batch.columns_of"] = (file_name, tuple(columns))
        S["batch.errors"] = {}  # a new file: messages about the last one no longer apply
        S["batch.text_col"] = guess(columns, TEXT_GUESSES)
        S["batch.gold_col"] = guess(columns, GOLD_GUESSES) or NONE
        S["batch.id_col"] = guess(columns, ID_GUESSES) or NONE
    c1, c2, c3 = st.columns(3)
    c1.selectbox(
        "Text column", columns, key="batch.text_col", index=None, placeholder="Choose a column"
    )
    c2.selectbox("Gold column (optional)", [NONE, *columns], key="batch.gold_col")
    c3.selectbox("Id column (optional)", [NONE, *columns], key="batch.id_col")
    if S.get("batch.text_col") is None:
        st.warning(
            f"{file_name} has no column named text or input: choose the column that holds the "
            f"inputs (columns: {', '.join(columns)})."
        )
    error_here("columns")


def upload_section() -> None:
    upload = st.file_uploader(
        "CSV or JSONL file (one run per row; UTF-8)",
        type=["csv", "jsonl", "ndjson"],
        key="batch.file",
    )
    if upload is None:
        error_here("file")
        return
    try:
        columns = read_columns(upload.getvalue(), name=upload.name)
    except InputError as err:
        st.error(str(err))  # shown at once, before any press of Run
        return
    if not columns:
        st.error(f"{upload.name}: the first line has no column names")
        return
    st.caption(f"{upload.name}: {len(upload.getvalue()):,} bytes, columns {', '.join(columns)}")
    mapping_widgets(columns, upload.name)


def set_title(name: str) -> str:
    labelled = datasets.load_set(name)
    return f"{name}: {labelled.title} ({len(labelled.items)} items)"


def bundled_section() -> None:
    sets = datasets.list_sets()
    c1, c2 = st.columns([2, 1])
    c1.selectbox(
        "Bundled set",
        sets,
        key="batch.set",
        format_func=set_title,
    )
    size = len(datasets.load_set(val("batch.set")).items)
    c2.number_input("First N items", key="batch.first", min_value=1, max_value=size, step=1)
    st.caption(
        "The set's own answer format, prompt template and gold labels are used, so the result "
        "shows accuracy against gold."
    )


# -- task, panel and policy ----------------------------------------------------------------------


def task_section() -> None:
    st.markdown("**Task**")
    st.selectbox("Answer format", list(FORMATS), key="batch.format", format_func=FORMATS.get)
    kind = val("batch.format")
    if kind == "label":
        st.text_input("Labels (comma-separated)", key="batch.labels")
    elif kind.startswith("set:"):
        labelled = datasets.load_set(kind.removeprefix("set:"))
        labels = ", ".join(labelled.labels) or "a JSON object per schema (voted per field)"
        st.caption(f"Answers: {ui.md_text(labels, 300)}")
    st.text_area("Prompt template ({input} is replaced by each row's text)", key="batch.template")
    error_here("task")


def panel_policy_section(models: list[str]) -> None:
    st.markdown("**Panel and policy**")
    if "batch.models" not in S:
        S["batch.models"] = [m for m in DEFAULT_PANEL if m in models]
    st.multiselect("Models (slots go round-robin over them)", models, key="batch.models")
    st.text_input(
        "Other models (provider:model, comma-separated)",
        key="batch.other_models",
        placeholder="openai:gpt-4.1-mini, ollama:llama3.2",
    )
    error_here("models")
    c1, c2 = st.columns(2)
    c1.number_input("N: votes per run", key="batch.n", step=1)
    c2.selectbox("Aggregation", AGGREGATIONS, key="batch.aggregate")
    error_here("n")
    if val("batch.aggregate") == Aggregation.AT_LEAST.value:
        st.number_input("k: votes the winner needs", key="batch.k", min_value=1, step=1)
    st.multiselect(
        "Tie-break chain (in the order chosen)",
        list(ui.TIE_BREAKS),
        key="batch.tie_breaks",
        select_all=False,  # an ordered chain is picked one branch at a time
        format_func=ui.TIE_BREAKS.__getitem__,
    )
    chain = val("batch.tie_breaks")
    if "escalate" in chain:
        ui.keep_choice("batch.escalate_model", models, "sim:sim-oracle")
        st.selectbox("Escalate to", models, key="batch.escalate_model")
    if "expand" in chain:
        st.number_input("Expand by k votes", key="batch.expand_k", min_value=1, step=1)
    if chain:
        st.number_input(**ui.ESCALATE_BELOW, key="batch.escalate_below")
    st.checkbox(
        "Early stop",
        key="batch.early_stop",
        help="Cancel the remaining calls of a run once they cannot change its outcome.",
    )
    error_here("policy")


# -- building the batch --------------------------------------------------------------------------


def form_task() -> Task:
    kind = val("batch.format")
    template = val("batch.template")
    if kind.startswith("set:"):
        name = kind.removeprefix("set:")
        return build_task(
            answer_format=datasets.load_set(name).format, template=template, name=name
        )
    if kind == "label":
        labels = ui.split_list(val("batch.labels"))
        if not labels:
            raise InputError("Give the labels to vote on, separated by commas (e.g. yes, no).")
        return build_task(labels=labels, template=template)
    return build_task(answer_format=kind, template=template)


def bundled_items() -> tuple[list[BatchItem], dict[str, str | None], str]:
    name = val("batch.set")
    items = load_labelled(name).items[: int(val("batch.first"))]
    return items, {"set": name}, f"{name}: first {len(items)}"


def uploaded_items(
    errors: dict[str, str],
) -> tuple[list[BatchItem], dict[str, str | None], str]:
    """The rows of the upload under the chosen mapping; a problem goes into ``errors`` under
    the widget it concerns (the uploader, or the column mapping)."""
    upload = S.get("batch.file")
    if upload is None:
        errors["file"] = "Upload a CSV or JSONL file first."
        return [], {}, ""
    data, name = upload.getvalue(), upload.name
    try:
        read_columns(data, name=name)
    except InputError as err:
        errors["file"] = str(err)
        return [], {}, ""
    text_col = S.get("batch.text_col")
    if not text_col:
        errors["columns"] = "Choose the text column."
        return [], {}, ""
    gold, item_id = S.get("batch.gold_col"), S.get("batch.id_col")
    columns = {
        "text": text_col,
        "gold": None if gold in (None, NONE) else gold,
        "id": None if item_id in (None, NONE) else item_id,
    }
    try:
        items = read_items(
            data,
            text_column=text_col,
            gold_column=columns["gold"],
            id_column=columns["id"],
            name=name,
        )
    except InputError as err:
        errors["columns"] = str(err)
        return [], {}, ""
    return items, columns, name


class Planned(NamedTuple):
    """The batch the form describes: its rows, spec, column mapping and default name."""

    items: list[BatchItem]
    spec: RunSpec
    columns: dict[str, str | None]
    name: str


def form_batch() -> tuple[Planned | None, dict[str, str]]:
    """The batch the form describes, or the problems that refuse it by the widget they concern.
    Every check the batch would make is made here, before any call or row: gold values the task
    cannot read, a quorum or k above N, an input the template cannot take."""
    runner = ui.get_runner()
    errors: dict[str, str] = {}
    bundled = val("batch.source") == BUNDLED
    if bundled:
        items, columns, default_name = bundled_items()
    else:
        items, columns, default_name = uploaded_items(errors)
    task = panel = policy = None
    try:
        task = load_labelled(val("batch.set")).task if bundled else form_task()
    except InputError as err:
        errors["task"] = str(err)
    models = list(val("batch.models") or []) + ui.split_list(val("batch.other_models"))
    n = int(val("batch.n"))
    if not models:
        errors["models"] = "Choose at least one model."
    elif not 1 <= n <= MAX_N:
        errors["n"] = f"N must be between 1 and {MAX_N}; the handbook's default is 5."
    else:
        try:
            panel = runner.tally.panel([ModelSpec.parse(m) for m in models], n)
        except InputError as err:
            errors["models"] = str(err)
    aggregate = val("batch.aggregate")
    if aggregate == Aggregation.AT_LEAST.value:
        aggregate = f"at-least:{int(val('batch.k'))}"
    try:
        chain = tie_break_chain(
            val("batch.tie_breaks"),
            escalate_to=S.get("batch.escalate_model"),
            expand_by=int(val("batch.expand_k")),
            escalate_below=val("batch.escalate_below"),
        )
        policy = build_policy(
            aggregate=aggregate, tie_break=chain, early_stop=bool(val("batch.early_stop"))
        )
    except InputError as err:
        errors["policy"] = str(err)
    if errors or task is None or panel is None or policy is None:
        return None, errors
    spec = RunSpec(task=task, panel=panel, policy=policy)
    try:
        runner.tally.check_batch(items, spec)
    except TallyError as err:
        errors["columns" if "gold" in str(err) else "policy"] = str(err)
        return None, errors
    return Planned(items, spec, columns, val("batch.name").strip() or default_name), errors


def submit() -> None:
    """Run pressed: check every part, put each problem by its widget, or start the batch."""
    planned, errors = form_batch()
    if planned is not None:
        estimate = ui.spend_estimate(planned.spec, [i.text for i in planned.items])
        if estimate is not None and not ui.spend_confirmed("batch", estimate):
            errors["submit"] = ui.CONFIRM_FIRST
    if not errors and planned is not None:
        try:
            rows = [(i.index, i.item_id, i.text, i.gold) for i in planned.items]
            content = {"name": planned.name, "rows": rows, "spec": planned.spec.to_json()}
            job = ui.get_runner().submit_batch(
                planned.items,
                planned.spec,
                name=planned.name,
                columns=planned.columns,
                actor=ui.identity(),
                active_key=ui.form_key("batch", content),
            )
            S["batch.current"] = job.result_ref
        except TallyError as err:
            errors["submit"] = str(err)
    S["batch.errors"] = errors


def preflight() -> None:
    """Before Run batch: the planned spend, or what would refuse the batch."""
    planned, errors = form_batch()
    if planned is not None:
        estimate = ui.spend_estimate(planned.spec, [i.text for i in planned.items])
        ui.spend_box("batch", estimate)
    elif set(errors) - {"file"}:
        st.warning(
            "The batch would be refused, before any call or row: "
            + " · ".join(ui.md_text(m, 300) for k, m in errors.items() if k != "file")
        )


# -- progress, results, resume -------------------------------------------------------------------


def eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def counts_line(counts: dict[str, Any]) -> str:
    order = [s.value for s in DecisionStatus]
    parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
    return ", ".join(parts) or "no run finished yet"


def progress_view(progress: BatchProgress) -> None:
    st.progress(
        progress.done / max(1, progress.total),
        text=f"{progress.done} of {progress.total} runs finished",
    )
    cols = st.columns(4)
    rate = progress.rate
    cols[0].metric("Rate", "-" if rate is None else f"{rate:.2f} runs/s")
    cols[1].metric("ETA", eta(progress.eta_s))
    cols[2].metric(
        "Cost so far",
        describe_cost(
            progress.cost_usd,
            progress.cost_known_usd,
            progress.unknown_cost_runs,
            money=ui.money,
            simulated=progress.simulated,
        ),
    )
    cols[3].metric("Finished", f"{progress.done}/{progress.total}")
    st.caption(f"Outcomes so far: {counts_line(progress.counts)}")


@st.fragment(run_every=1)
def live(batch_id: str) -> None:
    """Polls the batch while it goes on; a full rerun shows the results at the end."""
    runner = ui.get_runner()
    progress, job = runner.batch_view(batch_id)
    if progress.finished or job is None:
        st.rerun(scope="app")
        return
    if not runner.runs_here(job.id) and job.owner is not None:
        st.caption(f"Running in pid {job.owner.pid} on {ui.md_text(job.owner.host)}.")
    if job.note:  # e.g. resumed after the dashboard running it stopped
        st.caption(ui.md_text(job.note, 300))
    progress_view(progress)
    who = ui.identity()
    cancel = st.button(
        "Cancel batch", key=f"batch.cancel.{batch_id}", disabled=not who.has(Role.RUNNER)
    )
    if cancel:
        runner.cancel(job.id, actor=who)
        st.rerun(scope="app")


def result_rows(store: Store, batch_id: str) -> pd.DataFrame:
    rows = []
    for r, right in judged_runs(store, batch_id):
        correct = "" if right is None else "yes" if right else "no"
        rows.append(
            {
                "item": r.item_id or "",
                "input": " ".join(r.input.split()),
                "label": r.label or "",
                "gold": r.gold or "",
                "correct": correct,
                "status": r.status,
                "margin": "" if r.margin is None else f"{r.margin:g}",
                "degraded": ui.degraded_mark(r),
                "confidence": "" if r.confidence is None else f"{r.confidence:.2f}",
                "cost": ui.run_cost(r),
                "latency": ui.latency(r.latency_ms),
                "run": r.run_id,
            }
        )
    return pd.DataFrame(rows)


def exporter(store: Store, batch_id: str, fmt: str, what: str) -> Callable[[], bytes]:
    """The file is written only when the button is pressed (a large batch is not exported on
    every rerun). CSV cells a spreadsheet would run as formulas are escaped by the exporter."""

    def make() -> bytes:
        buffer = io.BytesIO()
        export = export_runs if what == "runs" else export_calls
        export(store, buffer, fmt, RunFilter(batch_id=batch_id))
        return buffer.getvalue()

    return make


def inspect_run(store: Store, batch_id: str, frame: pd.DataFrame) -> None:
    """One run of the batch as the Run page shows it: its calls, votes and raw replies."""
    finished = frame[frame["status"] != "running"]
    if finished.empty:
        return
    items = dict(zip(finished["run"], finished["item"], strict=True))
    with st.expander("Look inside a run: its calls, votes and raw replies"):
        run_id = st.selectbox(
            "Run",
            list(items),
            index=None,
            placeholder="Choose an item",
            format_func=lambda rid: f"{items[rid]} · {rid}",
            key=f"batch.inspect.{batch_id}",
        )
        if run_id is not None:
            ui.render_result(store.get_run(run_id), key=f"batch.run.{run_id}")


def results_view(store: Store, info: BatchInfo) -> None:
    counts = batch_summary(store, info.batch_id)
    cols = st.columns(5)
    cols[0].metric("Runs", f"{counts['done']}/{counts['total']}")
    cols[1].metric("Decided", counts["decided"] + counts["escalated"] + counts["resolved"])
    ties = counts["tie"] + counts["needs_review"]
    cols[2].metric("Ties left", ties, help="tie, or waiting in the Review queue")
    accuracy = counts["accuracy"]
    cols[3].metric(
        "Accuracy vs gold",
        "no gold" if accuracy is None else f"{accuracy:.1%}",
        help=None if accuracy is None else f"{counts['correct']} of {counts['with_gold']} rows",
    )
    cols[4].metric("Cost", batch_cost_text(counts, ui.money))
    degraded = f" · {counts['degraded']} degraded" if counts["degraded"] else ""
    st.caption(f"Outcomes: {counts_line(counts)} · {counts['calls']} calls{degraded}")
    voters = counts.get("effective_voters") or {}
    if voters.get("sentence"):
        st.caption(ui.md_text(voters["sentence"], 200))
    frame = result_rows(store, info.batch_id)
    if frame.empty:
        st.info("No run of this batch has been stored yet.")
        return
    st.dataframe(frame, hide_index=True, width="stretch", key=f"batch.table.{info.batch_id}")
    stem = f"tally-batch-{info.batch_id}"
    downloads = [
        ("Runs as CSV", "csv", "runs", "text/csv"),
        ("Runs as JSONL", "jsonl", "runs", "application/jsonl"),
        ("Calls as CSV", "csv", "calls", "text/csv"),
    ]
    for column, (title, fmt, what, mime) in zip(st.columns(3), downloads, strict=True):
        column.download_button(
            title,
            exporter(store, info.batch_id, fmt, what),
            file_name=f"{stem}-{what}.{fmt}",
            mime=mime,
            key=f"batch.dl.{what}.{fmt}.{info.batch_id}",
        )
    inspect_run(store, info.batch_id, frame)
    whatif_batch(store, info)


def whatif_batch(store: Store, info: BatchInfo) -> None:
    """The whole batch decided under another policy with no new calls, beside its own."""
    if info.status == "running":
        return
    key = f"batch.whatif.{info.batch_id}"
    with st.expander("What if: decide the whole batch under another policy (no new calls)"):
        policy = ui.policy_form(key, info.spec.policy)
        who = ui.identity()
        off = policy is None or not who.has(Role.RUNNER)
        if st.button("Decide every run again", key=f"{key}.go", disabled=off):
            assert policy is not None
            before = store.batch_results(info.batch_id)
            try:
                with st.spinner(f"Counting the stored answers of {len(before)} runs again…"):
                    after = ui.get_runner().revote([r.run_id for r in before], policy, actor=who)
                S[f"{key}.result"] = (
                    policy.describe(),
                    compare_batch(before, after, info.spec.task.format),
                )
            except TallyError as err:
                st.error(ui.md_text(err, 300))
        done = S.get(f"{key}.result")
        if done is not None:
            described, comparison = done
            comparison_view(info.spec.policy.describe(), described, comparison)


def comparison_view(own: str, other: str, c: BatchComparison) -> None:
    statuses = [s.value for s in DecisionStatus]
    before, after = f"as it ran ({own})", f"under {other}"
    rows = [
        {
            "": status,
            before: c.before.statuses.get(status, 0),
            after: c.after.statuses.get(status, 0),
        }
        for status in statuses
        if c.before.statuses.get(status) or c.after.statuses.get(status)
    ]

    def acc(side: Side) -> str:
        return "no gold" if side.accuracy is None else f"{side.accuracy:.1%}"

    rows.append(
        {
            "": "accuracy vs gold",
            f"as it ran ({own})": acc(c.before),
            f"under {other}": acc(c.after),
        }
    )
    frame = pd.DataFrame(rows).astype(str)
    st.dataframe(frame, hide_index=True, width="stretch")
    line = f"{c.changed} of {c.runs} runs changed their decision. No new calls were made."
    if c.missing_votes:
        line += (
            f" In {c.missing_votes} runs a call cut before it answered had no vote, and its vote "
            "could have changed the decision."
        )
    st.caption(line)


def resume(batch_id: str) -> None:
    try:
        job = ui.get_runner().resume_batch(batch_id, actor=ui.identity())
        S["batch.current"] = job.result_ref
        S["batch.resume_error"] = None
    except TallyError as err:
        S["batch.resume_error"] = str(err)


def batch_label(info: BatchInfo) -> str:
    """What identifies a batch in the picker; its state is shown below it, not here, so the
    label stays the same while the batch moves on."""
    return f"{info.name} · {info.total} rows · {ui.when(info.created_at)} · {info.batch_id}"


def quiet_for(store: Store, info: BatchInfo) -> float:
    """Seconds since the batch last started a run (or was created)."""
    rows, _ = store.list_runs(RunFilter(batch_id=info.batch_id), limit=1)
    last = max([info.created_at, *(r.created_at for r in rows)])
    return max(0.0, time.time() - last)


def batches_section(runner: InProcessExecutor) -> None:
    store = runner.store
    batches = store.list_batches(limit=50)
    st.subheader("Batches")
    if not batches:
        st.caption("No batch yet.")
        return
    by_id = {b.batch_id: b for b in batches}
    current = S.get("batch.current")
    if current in by_id and S.get("batch.shown_current") != current:
        S["batch.view"] = current  # a batch just started (or resumed) is the one shown
        S["batch.shown_current"] = current
    ui.keep_choice("batch.view", by_id)
    batch_id = st.selectbox(
        "Batch",
        list(by_id),
        key="batch.view",
        format_func=lambda b: batch_label(by_id[b]),
    )
    ui.follow("batch", batch_id)
    info = by_id[batch_id]
    progress, job = runner.batch_view(batch_id)
    if job is not None and not job.finished:
        live(batch_id)
        return
    if progress.error:
        st.error(f"The batch stopped: {progress.error}")
    orphan = info.status == "running"  # marked running, but by no job in flight
    if orphan and (quiet := quiet_for(store, info)) < BUSY_ELSEWHERE_S:
        st.info(
            f"This batch is marked running and started a run {quiet:.0f} s ago, but not in this "
            "dashboard: another process (a CLI batch?) seems to be running it. Resume is "
            f"offered once it has been quiet for {BUSY_ELSEWHERE_S} s."
        )
    elif orphan or info.status in ("interrupted", "cancelled", "failed"):
        done = store.batch_counts(batch_id)["done"]
        why = "the process running it stopped" if orphan else info.status
        st.warning(
            f"This batch stopped after {done} of {info.total} runs ({why}). Resuming "
            "skips finished runs and reuses finished calls, so nothing is paid twice."
        )
        st.button(
            "Resume batch",
            key=f"batch.resume.{batch_id}",
            on_click=resume,
            args=(batch_id,),
            type="primary",
            disabled=not ui.identity().has(Role.RUNNER),
        )
        if S.get("batch.resume_error"):
            st.error(S["batch.resume_error"])
    elif info.status == "done":
        st.success(f"Done: {info.total} runs.")
    else:
        st.info(f"Status: {info.status}.")
    results_view(store, info)


def main() -> None:
    for key, value in DEFAULTS.items():
        if key not in S:
            S[key] = value if not isinstance(value, (list, dict)) else type(value)(value)
    who = ui.page_identity()
    st.title("Batch")
    st.caption(
        "Many inputs, each a run through the same panel and policy: the throughput case. "
        "It runs in the background; leaving the page does not stop it."
    )
    try:
        runner = ui.get_runner()
        models = ui.available_models(runner)
    except TallyError as err:
        st.error(f"The runner could not start: {err}")
        return
    linked = st.query_params.get("batch")
    if linked and S.get("batch.linked") != linked:  # a reload, a link: the address names it
        S["batch.current"] = S["batch.linked"] = linked
    with st.expander("New batch", expanded=S.get("batch.current") is None):
        st.radio("Inputs", [UPLOAD, BUNDLED], key="batch.source", horizontal=True)
        upload = val("batch.source") == UPLOAD
        if upload:
            upload_section()
        else:
            bundled_section()
            error_here("file")
        left, right = st.columns(2, gap="large")
        with left:
            if upload:
                task_section()
            st.text_input("Batch name (optional)", key="batch.name")
        with right:
            panel_policy_section(models)
        preflight()
        st.button(
            "Run batch",
            type="primary",
            on_click=submit,
            key="batch.submit",
            disabled=not who.has(Role.RUNNER),
        )
        error_here("submit")
        if S.get("batch.errors"):
            st.caption("Nothing was stored: fix the fields marked above.")
    try:
        batches_section(runner)
    except TallyError as err:
        st.error(str(err))


main()
