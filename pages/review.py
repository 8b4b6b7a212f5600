"""Review: the ties a policy sent to a person, shared by several reviewers: a claim the others
see, a decision with a reason, blind double review, and an exportable audit trail."""

from __future__ import annotations

import io

import streamlit as st

from core.auth import Identity
from core.errors import ConflictError, TallyError
from core.result import CallResult, RunResult
from core.review import (
    ReviewCase,
    audit_rows,
    claim_words,
    decision_problems,
    gave_blind_decision,
    review_case,
    stage_words,
    waiting_for,
)
from core.store import ReviewStage, RunFilter, Store
from core.store.export import export_reviews
from pages import ui

ui.leave_folder_mode()

QUEUE_LIMIT = 200
RESOLVED_LIMIT = 50
REVIEWER_KEY = "tally_reviewer"  # kept outside any widget key, so it survives page switches
FLASH_KEY = "tally_review_flash"
CONFLICT_KEY = "tally_review_conflict"
LAST_PICK_KEY = "tally_review_last_pick"


def preview(text: str, limit: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def counters(store: Store) -> None:
    stats = store.review_stats()
    agreement = stats["agreement_with_plurality"]
    blind = stats["blind_agreement"]
    cols = st.columns(4)
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
    cols[3].metric(
        "Blind reviewers agree",
        "n/a" if blind is None else f"{blind:.0%} of {stats['blind_pairs']}",
        help="Of the blind double reviews (human:2) where both reviewers decided, how often "
        "they chose the same label without seeing each other's.",
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


def decision_form(store: Store, case: ReviewCase, who: Identity, signed_in: bool) -> None:
    """Reviewer, final label and reason; each problem shows under its own field. With sign-in
    on, the decision is the signed-in identity's and no name is typed."""
    st.subheader("Decision")
    if signed_in:
        st.caption(f"Deciding as {ui.md_text(who.display, 80)}")
        reviewer = who.display
    else:
        reviewer = st.text_input(
            "Your name",
            value=st.session_state.get(REVIEWER_KEY, ""),
            key="review_name",
            help="Recorded with the decision. Kept for this browser session.",
        )
        st.session_state[REVIEWER_KEY] = reviewer
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
    assert label is not None
    actor = who if signed_in else ui.identity(typed_name=reviewer)
    try:
        outcome = store.decide_review(case.run_id, actor, label=label, reason=reason)
    except ConflictError as err:
        st.session_state[CONFLICT_KEY] = str(err)
        st.rerun()
    except TallyError as err:
        st.error(str(err))
        return
    st.session_state[FLASH_KEY] = {
        "run_id": case.run_id,
        "label": label,
        "status": outcome.status,
    }
    st.rerun()


def claim_controls(store: Store, run_id: str, stage: ReviewStage, who: Identity) -> None:
    """Who holds the run, and a claim (or release) for a reviewer who may decide it."""
    claims = store.review_claims([run_id])[run_id]
    mine = any(c.held_by(who) for c in claims)
    left, right = st.columns([3, 1])
    left.caption(f"{ui.md_text(stage_words(stage))} · {ui.md_text(claim_words(claims, who.key))}")
    if not who.has(stage.role):
        return
    if mine:
        if right.button("Release", key=f"review_release_{run_id}"):
            store.release_review(run_id, who)
            st.rerun()
    elif len(claims) < stage.owed and right.button("Claim", key=f"review_claim_{run_id}"):
        try:
            store.claim_review(run_id, who)
        except TallyError as err:
            st.session_state[CONFLICT_KEY] = str(err)
        st.rerun()


def blind_decisions(stage: ReviewStage) -> None:
    """The two blind decisions that disagreed, shown to the admin who settles them only."""
    st.markdown("**The two blind decisions**")
    for review in stage.blind:
        with st.container(border=True):
            st.markdown(f"**{ui.md_text(review.label, 80)}** · {ui.md_text(review.reviewer, 80)}")
            st.text(review.reason)


def left_queue(store: Store, run_id: str) -> str:
    """Who took a run out of the queue while this reviewer had it open."""
    trail = store.reviews(run_id)
    if not trail:
        return "another reviewer resolved it"
    last = trail[-1]
    return f"{last.reviewer} resolved it as {last.label!r}; your decision was not written"


def queue_section(
    store: Store,
    queue: list[RunResult],
    just_resolved: str | None,
    who: Identity,
    signed_in: bool,
) -> None:
    by_id = {r.run_id: r for r in queue}
    last = st.session_state.get(LAST_PICK_KEY)
    if last and last not in by_id and last != just_resolved:
        st.info(
            f"Run {ui.md_text(last)} is no longer waiting: {ui.md_text(left_queue(store, last))}."
        )
    st.session_state[LAST_PICK_KEY] = None
    if not queue:
        st.success("Nothing is waiting for review.")
        return
    more = "+" if len(queue) == QUEUE_LIMIT else ""
    stages = store.review_stages(queue)
    claims = store.review_claims(list(by_id))
    run_id = st.selectbox(
        f"Waiting for review ({len(queue)}{more}, oldest first)",
        list(by_id),
        format_func=lambda rid: (
            f"{rid} · waiting {waiting_for(by_id[rid].created_at)} · "
            f"{claim_words(claims[rid], who.key)} · {preview(by_id[rid].input)}"
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
    stage = stages[run_id]
    claim_controls(store, run_id, stage, who)
    if stage.name == "admin" and who.has(stage.role):
        blind_decisions(stage)
    if gave_blind_decision(stage, ui.identity(st.session_state.get(REVIEWER_KEY))):
        st.info("Your blind decision is recorded: a second reviewer decides without seeing it.")
    elif who.has(stage.role):
        decision_form(store, case, who, signed_in)
    else:
        st.caption(f"Browsing only: deciding this run needs the {stage.role} role.")


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


def export_section(store: Store) -> None:
    """The whole audit trail as a CSV file (cells escaped against spreadsheet formulas)."""
    out = io.StringIO()
    export_reviews(store, out, "csv")
    st.download_button(
        "Download the audit trail (CSV)",
        out.getvalue(),
        file_name="tally-reviews.csv",
        mime="text/csv",
        key="review_export",
    )


def flash_words(flash: dict[str, str]) -> str:
    run, label = ui.md_text(flash["run_id"]), ui.md_text(flash["label"], 80)
    if flash["status"] == "recorded":
        return (
            f"Your blind decision on run {run} (**{label}**) is recorded: a second reviewer "
            "decides without seeing it."
        )
    if flash["status"] == "escalated":
        return (
            f"Your blind decision on run {run} (**{label}**) differs from the first reviewer's: "
            "an admin decides."
        )
    return f"Resolved run {run} as **{label}**."


def main() -> None:
    who = ui.page_identity()
    signed_in = who.signed_in  # then no name is typed: the decision is the identity's
    st.title("Review")
    st.caption(
        "Ties the policy sent to a person. Pick the final label and say why: the decision is "
        "written to the run as resolved, with who, when, what and why."
    )
    try:
        store = ui.get_runner().store
        flash = st.session_state.pop(FLASH_KEY, None)
        if flash:
            st.success(flash_words(flash))
        conflict = st.session_state.pop(CONFLICT_KEY, None)
        if conflict:
            st.error(ui.md_text(conflict, 300))
        counters(store)
        just_resolved = flash["run_id"] if flash and flash["status"] == "resolved" else None
        queue = store.review_queue(limit=QUEUE_LIMIT)
        queue_section(store, queue, flash["run_id"] if flash else None, who, signed_in)
        resolved_section(store, just_resolved)
        export_section(store)
    except TallyError as err:
        st.error(str(err))


main()
