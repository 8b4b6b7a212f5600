"""Run: one input through one panel under one policy, watched live.

The form keeps its values in session state; pressing Run builds the task, panel and policy with
``core.api`` and submits a vote job to the in-process executor, which validates before anything
is stored. Any problem is shown next to the widget it concerns. The run lives in the executor's
loop, so switching page does not stop it; a fragment polls its progress. The address carries
the run (``?run=ID``): a reload, a second tab or a link from History opens the same view, live
while it runs, whoever runs it. Pressing Run twice for the same vote starts one job.
"""

from __future__ import annotations

import json
import time
from typing import Any

import streamlit as st

from core import datasets
from core.api import build_policy, build_task, tie_break_chain
from core.auth import Identity, Role
from core.errors import InputError, TallyError
from core.jobs import Job
from core.jobs.inprocess import RunProgress
from core.panel import MAX_N, ModelSpec, Panel
from core.policy import Aggregation
from core.result import CallStatus
from core.spec import RunSpec
from core.task import Task
from core.timeline import timeline
from pages import ui

ui.leave_folder_mode()

S = st.session_state
PASTE, BUNDLED = "Paste an input", "Pick from a bundled set"
ONE, MIXED = "One model, sampled N times", "A mixed panel"
FORMATS = {
    "label": "label: a closed set of labels",
    "yesno": "yes / no",
    "number": "number (with a tolerance)",
    "json": "json: vote per field of a schema",
    "text": "text: free prose, never voted",
}
AGGREGATIONS = {
    Aggregation.MAJORITY.value: "majority: the most votes wins",
    Aggregation.STRICT.value: "strict: more than half of the counted votes",
    Aggregation.AT_LEAST.value: "at least k votes for the winner",
    Aggregation.WEIGHTED.value: "weighted: votes weighted per model",
    Aggregation.UNANIMOUS.value: "unanimous: every counted vote agrees",
    Aggregation.FASTEST.value: "fastest acceptable answer (the rest are cancelled)",
}
# Number inputs get their default as ``value``, never through session state: a number input
# the browser draws late would otherwise start from its own default, 0.
NUMBERS: dict[str, Any] = {
    "run.n": 5,
    "run.tolerance": 0.0,
    "run.k": 3,
    "run.hedge": 0.0,
    "run.min_valid": None,  # the aggregation's default quorum
    "run.expand_k": 2,
    "run.escalate_below": 0.0,  # 0: only ties and thresholds open the chain
}
DEFAULTS: dict[str, Any] = {
    "run.source": PASTE,
    "run.input": "",
    "run.format": "label",
    "run.labels": "yes, no",
    "run.synonyms": "",
    "run.conservative": [],
    "run.yesno_conservative": "none",
    "run.schema": "",
    "run.template": "{input}",
    "run.system": "",
    "run.mode": ONE,
    "run.other_models": "",
    "run.aggregate": Aggregation.MAJORITY.value,
    "run.accept_regex": "",
    "run.accept_labels": [],
    "run.count_invalid": False,
    "run.count_errors": False,
    "run.early_stop": False,
    "run.tie_breaks": [],
    "run.errors": {},
}


def parse_synonyms(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        word, sep, label = line.partition("=")
        if not sep or not word.strip() or not label.strip():
            raise InputError(f"synonym line {n} must read 'synonym = label', got {line.strip()!r}")
        out[word.strip()] = label.strip()
    return out


def val(key: str) -> Any:
    """A form value; a widget not on screen this time (its section hidden) reads its default."""
    return S.get(key, DEFAULTS.get(key, NUMBERS.get(key)))


def number(key: str) -> dict[str, Any]:
    """Key and default of a number input."""
    return {"key": key, "value": NUMBERS[key]}


def error_here(field: str) -> None:
    """The message for ``field`` from the last Run press, right under its widget."""
    message = S.get("run.errors", {}).get(field)
    if message:
        st.error(message)


# -- building the run from the form --------------------------------------------------------------


def chosen_models() -> list[str]:
    picked = [S.get("run.model")] if val("run.mode") == ONE else list(S.get("run.models", []))
    return [m for m in picked if m] + ui.split_list(val("run.other_models"))


def form_task() -> Task:
    kind = val("run.format")
    common = {"template": val("run.template"), "system": val("run.system").strip() or None}
    if kind == "label":
        return build_task(
            labels=ui.split_list(val("run.labels")),
            synonyms=parse_synonyms(val("run.synonyms")),
            conservative=list(val("run.conservative")),
            **common,
        )
    fmt: dict[str, Any] = {"kind": kind}
    if kind == "yesno":
        choice = val("run.yesno_conservative")
        fmt.update(
            conservative=None if choice == "none" else choice,
            synonyms=parse_synonyms(val("run.synonyms")),
        )
    elif kind == "number":
        fmt["tolerance"] = float(val("run.tolerance"))
    elif kind == "json":
        try:
            fmt["schema"] = json.loads(val("run.schema") or "")
        except json.JSONDecodeError as err:
            raise InputError(
                f"the schema is not valid JSON: {err.msg} (line {err.lineno})"
            ) from None
    return build_task(answer_format=fmt, **common)


def form_panel(models: list[str]) -> Panel:
    weighted = val("run.aggregate") == Aggregation.WEIGHTED.value
    specs = []
    for name in models:
        spec = ModelSpec.parse(name)
        if weighted:
            spec = spec.model_copy(update={"weight": float(S.get(f"run.weight.{name}", 1.0))})
        specs.append(spec)
    return ui.get_runner().tally.panel(specs, int(val("run.n")))


def form_policy() -> Any:
    aggregate = val("run.aggregate")
    if aggregate == Aggregation.AT_LEAST.value:
        aggregate = f"at-least:{int(val('run.k'))}"
    fastest = aggregate == Aggregation.FASTEST.value  # no vote: no confidence to trigger on
    chain = tie_break_chain(
        val("run.tie_breaks"),
        escalate_to=S.get("run.escalate_model"),
        expand_by=int(val("run.expand_k")),
        escalate_below=None if fastest else val("run.escalate_below"),
    )
    accept = []
    if aggregate == Aggregation.FASTEST.value:
        if val("run.accept_regex").strip():
            accept.append(f"regex:{val('run.accept_regex').strip()}")
        if val("run.accept_labels"):
            accept.append("labels:" + ",".join(val("run.accept_labels")))
    return build_policy(
        aggregate=aggregate,
        tie_break=chain,
        early_stop=bool(val("run.early_stop")),
        accept=accept,
        min_valid=None if val("run.min_valid") is None else int(val("run.min_valid")),
        count_invalid=bool(val("run.count_invalid")),
        count_errors=bool(val("run.count_errors")),
        hedge_delay_s=float(val("run.hedge")),
    )


def form_spec() -> tuple[RunSpec | None, dict[str, str]]:
    """The run the form describes, or the problems that refuse it, by the field they concern.
    Every check a run would make is made here, before any call: the same ones as the engine's
    (an unknown placeholder, a quorum or k above N, a branch the format cannot take)."""
    errors: dict[str, str] = {}
    text = val("run.input")
    if not text.strip():
        errors["input"] = "The input is empty: paste an input or pick one from a bundled set."
    task = panel = policy = None
    if val("run.format") == "label" and not ui.split_list(val("run.labels")):
        errors["labels"] = "Give the labels to vote on, separated by commas (e.g. yes, no)."
    else:
        try:
            task = form_task()
        except InputError as err:
            errors["task"] = str(err)
    models = chosen_models()
    n = int(val("run.n"))
    if not models:
        errors["models"] = "Choose at least one model."
    if not 1 <= n <= MAX_N:
        errors["n"] = f"N must be between 1 and {MAX_N}; the handbook's default is 5."
    if "models" not in errors and "n" not in errors:
        try:
            panel = form_panel(models)
        except InputError as err:
            errors["models"] = str(err)
    try:
        policy = form_policy()
    except InputError as err:
        errors["policy"] = str(err)
    if errors or task is None or panel is None or policy is None:
        return None, errors
    try:
        spec = RunSpec(task=task, panel=panel, policy=policy)
        ui.get_runner().tally.check_run(text, spec)
    except TallyError as err:
        errors["policy"] = str(err)
        return None, errors
    return spec, errors


def submit() -> None:
    """Run pressed: check every part, show each problem by its widget, or start the run."""
    spec, errors = form_spec()
    if spec is not None:
        estimate = ui.spend_estimate(spec, [val("run.input")])
        if estimate is not None and not ui.spend_confirmed("run", estimate):
            errors["submit"] = ui.CONFIRM_FIRST
    if not errors and spec is not None:
        try:
            text = val("run.input")
            key = ui.form_key("vote", {"input": text, "spec": spec.to_json()})
            job = ui.get_runner().submit_run(text, spec, actor=ui.identity(), active_key=key)
            S["run.run_id"] = job.result_ref
            S["run.ran_input"] = text
            ui.follow("run", job.result_ref)
        except TallyError as err:
            errors["submit"] = str(err)
    S["run.errors"] = errors


# -- picking a bundled item ----------------------------------------------------------------------


def apply_item() -> None:
    """A picked bundled item fills the input and the task (format, labels, template)."""
    ui.keep_choice("run.set", datasets.list_sets())
    labelled = datasets.load_set(S["run.set"])
    item_id = S.get("run.item")
    item = next((i for i in labelled.items if i.id == item_id), labelled.items[0])
    S["run.item"] = item.id
    S["run.input"] = item.text
    S["run.template"] = labelled.template
    fmt = labelled.format
    S["run.format"] = fmt["kind"]
    if fmt["kind"] == "label":
        S["run.labels"] = ", ".join(fmt["labels"])
        S["run.synonyms"] = "\n".join(f"{k} = {v}" for k, v in fmt.get("synonyms", {}).items())
        S["run.conservative"] = list(fmt.get("conservative_order", []))
    elif fmt["kind"] == "json":
        S["run.schema"] = json.dumps(fmt["schema"], indent=2)
    S["run.gold"] = item.gold


def pick_set() -> None:
    S.pop("run.item", None)
    apply_item()


TASK_KEYS = ("run.input", "run.format", "run.labels", "run.synonyms", "run.conservative")
TASK_KEYS += ("run.schema", "run.template")


def pick_source() -> None:
    """A bundled item fills the input and its task; going back to pasting starts from a blank
    input and the default task, not the last item's."""
    if S["run.source"] == BUNDLED:
        apply_item()
        return
    for key in TASK_KEYS:
        default = DEFAULTS[key]
        S[key] = type(default)(default) if isinstance(default, list) else default
    S.pop("run.gold", None)


# -- the form ------------------------------------------------------------------------------------


def input_section() -> None:
    st.radio("Input", [PASTE, BUNDLED], key="run.source", horizontal=True, on_change=pick_source)
    if S["run.source"] == BUNDLED:
        sets = datasets.list_sets()
        ui.keep_choice("run.set", sets)
        labelled = datasets.load_set(S["run.set"])
        c1, c2 = st.columns([2, 3])
        c1.selectbox(
            "Bundled set",
            sets,
            key="run.set",
            help=" · ".join(f"{n}: {datasets.load_set(n).title}" for n in sets),
            on_change=pick_set,
        )
        items = {i.id: i for i in labelled.items}
        ui.keep_choice("run.item", items)
        c2.selectbox(
            "Item",
            list(items),
            key="run.item",
            format_func=lambda i: f"{i} · {items[i].difficulty} · {items[i].text[:70]}",
            on_change=apply_item,
        )
    st.text_area("Input text", key="run.input", height=110, placeholder="The text to classify")
    if S["run.source"] == BUNDLED and S.get("run.gold"):
        st.caption(f"Gold answer of this item: {ui.md_text(S['run.gold'])}")
    error_here("input")


def task_section() -> None:
    st.markdown("**Task**")
    st.selectbox("Answer format", list(FORMATS), key="run.format", format_func=FORMATS.__getitem__)
    kind = S["run.format"]
    if kind == "label":
        st.text_input("Labels (comma-separated)", key="run.labels")
        error_here("labels")
        labels = ui.split_list(S["run.labels"])
        S["run.conservative"] = [c for c in S.get("run.conservative", []) if c in labels]
        st.multiselect(
            "Conservative order (most conservative first; used by the conservative tie-break)",
            labels,
            key="run.conservative",
        )
        st.text_area("Synonyms, one per line: synonym = label", key="run.synonyms", height=80)
    elif kind == "yesno":
        st.selectbox("Conservative answer", ["none", "yes", "no"], key="run.yesno_conservative")
        st.text_area("Synonyms, one per line: synonym = yes|no", key="run.synonyms", height=80)
    elif kind == "number":
        st.number_input(
            "Tolerance (answers this close count as one)", **number("run.tolerance"), min_value=0.0
        )
    elif kind == "json":
        st.text_area("JSON schema (each field is voted)", key="run.schema", height=160)
    else:
        st.warning(ui.PROSE_WARNING)
    st.text_area(
        "Prompt template ({input} is replaced by the input)", key="run.template", height=80
    )
    st.text_input("System prompt (optional)", key="run.system")
    error_here("task")


def panel_section(models: list[str]) -> None:
    st.markdown("**Panel**")
    st.radio("Models", [ONE, MIXED], key="run.mode", horizontal=True)
    if S["run.mode"] == ONE:
        ui.keep_choice("run.model", models, "sim:sim-mid")
        st.selectbox("Model", models, key="run.model")
    else:
        if "run.models" not in S:
            S["run.models"] = [
                m for m in ("sim:sim-strong", "sim:sim-mid", "sim:sim-fast") if m in models
            ]
        st.multiselect("Models (slots go round-robin over them)", models, key="run.models")
    st.text_input(
        "Other models (provider:model, comma-separated)",
        key="run.other_models",
        placeholder="ollama:llama3.2, local:my-model",
    )
    error_here("models")
    st.number_input("N: votes per run", **number("run.n"), step=1)
    st.caption("Five is the handbook's default: at N=5 error roughly halves, little gain after.")
    error_here("n")
    if S["run.aggregate"] == Aggregation.WEIGHTED.value:
        chosen = chosen_models()
        cols = st.columns(max(1, min(4, len(chosen))))
        for i, name in enumerate(chosen):
            cols[i % len(cols)].number_input(
                f"weight of {name}", key=f"run.weight.{name}", value=1.0, min_value=0.01
            )


def policy_section(models: list[str]) -> None:
    st.markdown("**Policy**")
    st.selectbox(
        "Aggregation", list(AGGREGATIONS), key="run.aggregate", format_func=AGGREGATIONS.__getitem__
    )
    aggregate = S["run.aggregate"]
    if aggregate == Aggregation.AT_LEAST.value:
        st.number_input("k: votes the winner needs", **number("run.k"), step=1, min_value=1)
    if aggregate == Aggregation.FASTEST.value:
        c1, c2, c3 = st.columns(3)
        c1.text_input("Accept answers matching (regex)", key="run.accept_regex")
        if S["run.format"] == "label":
            labels = ui.split_list(S["run.labels"])
            S["run.accept_labels"] = [a for a in val("run.accept_labels") if a in labels]
            c2.multiselect("Accept only these labels", labels, key="run.accept_labels")
        c3.number_input("Hedge delay per slot (s)", **number("run.hedge"), min_value=0.0, step=0.1)
    c1, c2 = st.columns(2)
    c1.number_input(
        "Quorum: minimum valid votes",
        **number("run.min_valid"),
        min_value=0,
        step=1,
        placeholder="default",
        help="Empty: half the panel, rounded up, for strict and unanimous; 1 otherwise.",
    )
    c2.checkbox(
        "Count invalid replies",
        key="run.count_invalid",
        help="In strict majority and unanimity, an invalid reply counts as a vote against.",
    )
    c2.checkbox(
        "Count failed calls",
        key="run.count_errors",
        help="In strict majority and unanimity, a failed call counts as a vote against.",
    )
    c2.checkbox(
        "Early stop",
        key="run.early_stop",
        help="Cancel the remaining calls once they cannot change the outcome.",
    )
    st.multiselect(
        "Tie-break chain (in the order chosen)",
        list(ui.TIE_BREAKS),
        key="run.tie_breaks",
        select_all=False,  # an ordered chain is picked one branch at a time
        format_func=ui.TIE_BREAKS.__getitem__,
    )
    chain = S["run.tie_breaks"]
    extra = [kind for kind in chain if kind in ("escalate", "expand")]
    for kind, col in zip(extra, st.columns(2) if extra else [], strict=False):
        if kind == "escalate":
            ui.keep_choice("run.escalate_model", models, "sim:sim-oracle")
            col.selectbox("Escalate to", models, key="run.escalate_model")
        else:
            col.number_input("Expand by k votes", **number("run.expand_k"), min_value=1, step=1)
    if chain and aggregate != Aggregation.FASTEST.value:
        st.number_input(**ui.ESCALATE_BELOW, **number("run.escalate_below"))
    if not chain and aggregate != Aggregation.FASTEST.value:
        st.caption("No tie-break declared: a tie stays a tie. Pick one before you ship.")
    error_here("policy")


# -- the run -------------------------------------------------------------------------------------


def progress_view(progress: RunProgress, job: Job | None) -> None:
    calls = progress.sorted_calls()
    landed = sum(1 for c in calls if c.status.final)
    running = sum(1 for c in calls if c.status == CallStatus.RUNNING)
    st.progress(
        landed / max(1, len(calls)),
        text=f"{landed} of {len(calls)} calls landed, {running} running",
    )
    if job is not None and not landed and not running:
        waiting = ui.get_runner().waiting(job)
        if waiting:
            st.caption(f"Not started yet: {waiting}.")
    line = timeline(calls, started_at=progress.started_at, now=time.time())
    ui.render_timeline(line, key="run.live-timeline")
    ui.render_calls(calls, key="run.live-calls")


@st.fragment(run_every=0.5)
def live(run_id: str) -> None:
    """Polls the run while it goes on; a full rerun shows the result once it is done."""
    runner = ui.get_runner()
    view = runner.run_view(run_id)
    if view is None or view[0].done:
        st.rerun(scope="app")
        return
    progress, job = view
    st.subheader("Running")
    progress_view(progress, job)
    who = ui.identity()
    if job is not None and st.button(
        "Cancel run", key="run.cancel", type="secondary", disabled=not who.has(Role.RUNNER)
    ):
        runner.cancel(job.id, actor=who)
    with st.expander("Events", expanded=False):
        st.code("\n".join(progress.events[-40:]) or "(none yet)", language=None)


def result_view(progress: RunProgress) -> None:
    if progress.error:
        st.error(f"The run failed: {progress.error}")
    if progress.result is not None:
        st.subheader("Result")
        ui.render_result(progress.result, key="run")
    else:
        ui.render_calls(progress.sorted_calls(), key="run.calls")
    with st.expander("Events", expanded=False):
        st.code("\n".join(progress.events) or "(none)", language=None)


def run_view(run_id: str) -> None:
    try:
        view = ui.get_runner().run_view(run_id)
    except TallyError as err:
        st.info(f"Run {run_id}: {err}")
        return
    if view is None:
        st.info(f"Run {run_id}: no such run in the store.")
    elif not view[0].done:
        live(run_id)
    else:
        result_view(view[0])


def preflight() -> None:
    """Before Run: the planned spend of what the form describes, or what would refuse it."""
    spec, errors = form_spec()
    if spec is not None:
        ui.spend_box("run", ui.spend_estimate(spec, [val("run.input")]))
        return
    shown = {k: v for k, v in errors.items() if k != "input"}
    if shown:
        st.warning(
            "Run would be refused, before any call: "
            + " · ".join(ui.md_text(m, 300) for m in shown.values())
        )
    else:
        st.caption("Give an input to see the planned calls, cost and time before running.")


def main() -> None:
    for key, value in DEFAULTS.items():
        if key not in S:
            S[key] = value if not isinstance(value, (list, dict)) else type(value)(value)
    who = ui.page_identity()
    st.title("Run a vote")
    try:
        models = ui.available_models(ui.get_runner())
    except TallyError as err:
        st.error(f"The runner could not start: {err}")
        return
    linked = st.query_params.get("run")
    if linked:  # a reload, a link: the address names the run
        S["run.run_id"] = linked
    run_id = S.get("run.run_id")
    if run_id:  # the run first: it stays in view while it lands, the form below it
        st.caption(f"Run {run_id}")
        ran = S.get("run.ran_input")
        if ran is not None and ran != val("run.input"):
            st.warning(
                "The input has changed since this run: the result below is for the input it "
                "ran on. Press Run for the new one."
            )
        run_view(run_id)
        st.divider()
        st.subheader("Change the input, task, panel or policy")
    form_view(models, who)


def form_view(models: list[str], who: Identity) -> None:
    left, right = st.columns(2, gap="large")
    with left:
        with st.container(border=True):
            input_section()
        with st.container(border=True):
            task_section()
    with right:
        with st.container(border=True):
            panel_section(models)
        with st.container(border=True):
            policy_section(models)
    preflight()
    st.button(
        "Run", type="primary", on_click=submit, key="run.submit", disabled=not who.has(Role.RUNNER)
    )
    if not who.has(Role.RUNNER):
        st.caption("Browsing only: running a vote spends, which needs the runner role.")
    error_here("submit")
    if S.get("run.errors"):
        st.caption("Nothing was run or stored: fix the fields marked above.")


main()
