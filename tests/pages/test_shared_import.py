"""``pages.ui`` is imported by every page of every session, concurrently. An import that a
Streamlit control-flow exception (``st.rerun``) aborts half-way leaves, for a moment, a dead
module object another session's import can pick up: that session then fails with
``cannot import name 'ui' from 'pages'``. So importing the shared module must never rerun."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _import_shared_in_folder_mode() -> None:
    import importlib
    import sys

    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager

    if "outcome" not in st.session_state:
        st.session_state["outcome"] = "pending"
        saved = sys.modules.pop("pages.ui", None)
        PagesManager.uses_pages_directory = True  # what the first visit of a process sees
        try:
            importlib.import_module("pages.ui")
            st.session_state["outcome"] = "imported"
        except BaseException as exc:  # a rerun is a BaseException, not an error
            st.session_state["outcome"] = f"aborted by {type(exc).__name__}"
            raise
        finally:
            if saved is not None:  # the rest of the test run keeps the module it imported
                sys.modules["pages.ui"] = saved
            PagesManager.uses_pages_directory = False


def test_importing_the_shared_module_completes_in_folder_mode() -> None:
    at = AppTest.from_function(_import_shared_in_folder_mode, default_timeout=30).run()
    assert at.session_state["outcome"] == "imported"
