"""Review: the ties a policy sent to a person, each decided with a reason and an audit trail."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.errors import TallyError
from core.result import CallResult, RunResult
from core.review import (
    ReviewCase,
    audit_rows,
    decision_problems,
    review_case,
    reviewer_from_user,
    waiting_for,
)
from core.store import RunFilter, Store
from pages import ui

ui.leave_folder_mode()

QUEUE_LIMIT = 200
RESOLVED_LIMIT = 50
REVIEWER_KEY = "tally_reviewer"  # kept outside any widget key, so it survives page switches
FLASH_KEY = "tally_review_flash"
LAST_PICK_KEY = "tally_review_last_pick"


def logged_in_reviewer() -> str | None:
    """The name from ``st.user`` when login is configured and someone is logged in."""
    try:
        info: dict[str, Any] = dict(st.user.to_dict())
    except Exception:  # login not configured on this host: there is no user to read
        return None
    return reviewer_from_user(info)


def preview(text: str, limit: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def counters(store: Store) -> None:
    stats = store.review_stats()
    agreement = stats["agreement_with_plurality"]
    cols = st.columns(3)
    cols[0].metric("Waiting", stats["waiting"])
    cols[1].metric("Resolved today", stats["resolved_today"])
    cols[2].metric(
        "Reviewers agree with the panel",
        "n/a" if agreement is None else f"{agreement:.0%}",
        help=(
            "How often the reviewer's label was the panel's plurality (the single most-voted "
            "label). Reviews of exact ties have no plurality and are not counted."
        ),
    )


def reply_heading(call: CallResult, number: int, reveal: bool) -> str:
    if reveal:
        return f"{ui.md_text(call.model, 60)} · slot {call.slot} · {ui.md_text(call.phase)}"
    return f"voter {number}"


def candidates(case: ReviewCase, reveal: bool) -> None:
    """The candidate answers side by side, each with its count and its raw replies."""
    numbers: dict[tuple[str, int], int] = {}
    for group in case.groups:
        for call in group.calls:
            numbers.setdefault((call.phase, call.slot), len(numbers) + 1)
    for call in case.not_counted:
        numbers.setdefault((call.phase, call.slot), len(numbers) + 1)
    per_row = 3
    for start in range(0, len(case.groups), per_row):
        row = case.groups[start : start + per_row]
        for col, group in zip(st.columns(per_row), row, strict=False):
            with col.container(border=True):
                votes = "vote" if group.count == 1 else "votes"
                st.markdown(f"**{ui.md_text(group.label, 80)}** · {group.count} {votes}")
                if group.tied:
                    st.caption("tied")
                for call in group.calls:
                    st.caption(reply_heading(call, numbers[(call.phase, call.slot)], reveal))
                    st.code(call.raw or "(no reply)", language=None, wrap_lines=True)
    if not case.groups:
        st.info("No call gave a valid answer: pick a label from the format.")
    if case.not_counted:
        with st.expander(f"Calls not counted ({len(case.not_counted)})"):
            for call in case.not_counted:
                heading = reply_heading(call, numbers[(call.phase, call.slot)], reveal)
                st.caption(f"{heading} · {ui.md_text(call.status.value)}")
                if call.error:
                    st.text(call.error)
                st.code(call.raw or "(no reply)", language=None, wrap_lines=True)


def decision_form(store: Store, case: ReviewCase) -> None:
    """Reviewer, final label and reason; each problem shows under its own field."""
    st.subheader("Decision")
    reviewer = logged_in_reviewer()
    if reviewer is not None:
        st.caption(f"Reviewing as {ui.md_text(reviewer, 80)}")
        reviewer_error = st.empty()
    else:
        typed = st.text_input(
            "Your name",
            value=st.session_state.get(REVIEWER_KEY, ""),
            key="review_name",
            help="Recorded with the decision. Kept for this browser session.",
        )
        st.session_state[REVIEWER_KEY] = typed
        reviewer = typed
        reviewer_error = st.empty()
    label = st.selectbox(
        "Final label",
        case.choices,
        index=None,
        placeholder="Choose the final label",
        key=f"review_label_{case.run_id}",
        help="One of the candidates, or any other label the task's format allows.",
    )
    label_error = st.empty()
    reason = st.text_area(
        "Reason",
        key=f"review_reason_{case.run_id}",
        placeholder="Why this label: what the panel missed or what settles it.",
    )
    reason_error = st.empty()
    if not st.button("Resolve", type="primary", key=f"review_resolve_{case.run_id}"):
        return
    problems = decision_problems(reviewer, label, reason, case.choices)
    slots = {"reviewer": reviewer_error, "label": label_error, "reason": reason_error}
    for field, message in problems.items():
        slots[field].error(message)
    if problems:
        return
    assert label is not None and reviewer is not None
    try:
        store.resolve(case.run_id, reviewer=reviewer, label=label, reason=reason)
    except TallyError as err:
        st.error(str(err))
        return
    st.session_state[FLASH_KEY] = {"run_id": case.run_id, "label": label}
    st.rerun()


def queue_section(store: Store, queue: list[RunResult], just_resolved: str | None) -> None:
    by_id = {r.run_id: r for r in queue}
    last = st.session_state.get(LAST_PICK_KEY)
    if last and last not in by_id and last != just_resolved:
        st.info(f"Run {ui.md_text(last)} is no longer waiting: another reviewer resolved it.")
    st.session_state[LAST_PICK_KEY] = None
    if not queue:
        st.success("Nothing is waiting for review.")
        return
    more = "+" if len(queue) == QUEUE_LIMIT else ""
    run_id = st.selectbox(
        f"Waiting for review ({len(queue)}{more}, oldest first)",
        list(by_id),
        format_func=lambda rid: (
            f"{rid} · waiting {waiting_for(by_id[rid].created_at)} · {preview(by_id[rid].input)}"
        ),
        key="review_pick",
    )
    st.session_state[LAST_PICK_KEY] = run_id
    result = by_id[run_id]
    case = review_case(result)
    st.caption(
        f"run {ui.md_text(case.run_id)} · {len(result.calls)} calls · cost "
        f"{ui.md_text(ui.run_cost(result))} · branches "
        f"{ui.md_text(' → '.join(case.branches) or 'none')}"
    )
    st.markdown("**Input**")
    st.code(case.input, language=None, wrap_lines=True)
    head, toggle = st.columns([3, 1])
    head.markdown("**Candidate answers**")
    reveal = toggle.toggle("Show model names", key="review_reveal")
    candidates(case, reveal)
    if case.reason:
        st.caption(ui.md_text(case.reason, 300))
    decision_form(store, case)


def resolved_section(store: Store, just_resolved: str | None) -> None:
    st.subheader("Resolved")
    rows, total = store.list_runs(RunFilter(statuses=["resolved"]), limit=RESOLVED_LIMIT)
    if not rows:
        st.caption("No run has been resolved yet.")
        return
    ids = [r.run_id for r in rows]
    by_id = {r.run_id: r for r in rows}
    if just_resolved in by_id:
        st.session_state["review_resolved_pick"] = just_resolved
    run_id = st.selectbox(
        f"Audit trail of a resolved run ({total} in all, newest first)",
        ids,
        format_func=lambda rid: f"{rid} · {by_id[rid].label} · {preview(by_id[rid].input)}",
        key="review_resolved_pick",
    )
    row = by_id[run_id]
    st.code(row.input, language=None, wrap_lines=True)
    st.dataframe(audit_rows(store.reviews(run_id)), hide_index=True, width="stretch")


def main() -> None:
    st.title("Review")
    st.caption(
        "Ties the policy sent to a person. Pick the final label and say why: the decision is "
        "written to the run as resolved, with who, when, what and why."
    )
    try:
        store = ui.get_runner().store
        flash = st.session_state.pop(FLASH_KEY, None)
        if flash:
            st.success(
                f"Resolved run {ui.md_text(flash['run_id'])} as "
                f"**{ui.md_text(flash['label'], 80)}**."
            )
        counters(store)
        just_resolved = flash["run_id"] if flash else None
        queue_section(store, store.review_queue(limit=QUEUE_LIMIT), just_resolved)
        resolved_section(store, just_resolved)
    except TallyError as err:
        st.error(str(err))


main()
