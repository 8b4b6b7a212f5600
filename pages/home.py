"""Home: the pattern in three sentences, and what has happened lately."""

from __future__ import annotations

import streamlit as st

from core.errors import TallyError
from core.store import RunFilter
from pages import ui

ui.leave_folder_mode()

HANDBOOK = (
    "**Fan out** the same input to N models, or N samples of one model. "
    "**Normalise and count** the answers: a reply is a vote only once it reads as one of the "
    "task's answers. "
    "**Decide** by majority, or by the fastest acceptable answer, and handle every tie with an "
    "explicit, recorded tie-break: escalate, draw more votes, take the conservative answer, or "
    "send it to a person."
)
NUMBERS = (
    "The handbook's numbers: at N=5 a vote roughly halves the error of a single call on "
    "classification, with little gain per call beyond that, so **five is the default**; and "
    "throughput stops rising around **8 concurrent calls**, the ceiling to find by experiment."
)


def main() -> None:
    ui.page_identity()
    st.title("Tally")
    st.caption("The parallelisation pattern for LLMs: fan out, vote, break ties.")
    st.markdown(HANDBOOK)
    st.markdown(NUMBERS)
    try:
        runner = ui.get_runner()
        store = runner.store
        counts = store.status_counts()
        rows, total = store.list_runs(limit=10)
        waiting = store.review_stats()["waiting"]
    except TallyError as err:
        st.error(f"The store cannot be read: {err}")
        return

    st.subheader("Recent activity")
    cols = st.columns(4)
    cols[0].metric("Runs stored", f"{total:,}")
    ties = sum(store.status_counts(RunFilter(ties_only=True)).values())
    cols[1].metric("Runs that tied", f"{ties:,}", help="Whatever the tie-break then did.")
    cols[2].metric("Waiting for review", f"{waiting:,}")
    active = runner.active()
    cols[3].metric("Running now", len(active))

    left, right = st.columns([3, 1])
    with left:
        if rows:
            st.dataframe(
                [
                    {
                        "when": ui.when(r.created_at),
                        "status": r.status,
                        "label": r.label or "",
                        "input": " ".join(r.input.split())[:70],
                        "cost": ui.run_cost(r),
                        "source": r.source,
                    }
                    for r in rows
                ],
                hide_index=True,
                width="stretch",
            )
        else:
            st.info("No runs yet: start one on the Run page.")
    with right:
        if counts:
            st.dataframe(ui.status_counts_frame(counts), hide_index=True, width="stretch")
    for job in active:
        st.caption(ui.md_text(job.describe()))


main()
