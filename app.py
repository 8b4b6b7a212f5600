"""The Tally dashboard: one navigation over the pages. Each page is a file in ``pages/``."""

from __future__ import annotations

import streamlit as st

from pages import ui

st.set_page_config(page_title="Tally", page_icon="🗳️", layout="wide")
refusal = ui.binding_problem()
if refusal is not None:
    st.error(refusal)
    st.stop()
pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/run.py", title="Run", icon=":material/how_to_vote:"),
    st.Page("pages/history.py", title="History", icon=":material/history:"),
    st.Page("pages/review.py", title="Review", icon=":material/rate_review:"),
    st.Page("pages/batch.py", title="Batch", icon=":material/table_rows:"),
    st.Page("pages/experiments.py", title="Experiments", icon=":material/science:"),
    st.Page("pages/models.py", title="Models", icon=":material/dns:"),
]

st.navigation(pages).run()
