"""AppTest fixtures: every page test gets its own SQLite store, a fast in-process sim, and a
fresh runner (the cached one is released, which closes it, before and after each test)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.store import Store

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30.0


@pytest.fixture(autouse=True)
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The database URL the pages (through the runner) write to."""
    url = f"sqlite:///{tmp_path / 'pages.db'}"
    monkeypatch.setenv("TALLY_DATABASE_URL", url)
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.01")
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    st.cache_resource.clear()
    try:
        yield url
    finally:
        st.cache_resource.clear()


@pytest.fixture
def store(app_env: str) -> Iterator[Store]:
    """The same database the pages use, for arranging runs and checking what was stored."""
    with Store(app_env) as s:
        s.ensure_schema()
        yield s


@pytest.fixture
def page_test() -> Callable[[str], AppTest]:
    """``page_test("pages/run.py")``: an AppTest of a page (or ``app.py``)."""

    def make(path: str) -> AppTest:
        return AppTest.from_file(str(ROOT / path), default_timeout=TIMEOUT_S)

    return make


@pytest.fixture
def rerun_until() -> Callable[[AppTest, Callable[[AppTest], bool]], AppTest]:
    """Re-run a page until ``done(at)`` holds, as the page's polling fragment would."""

    def wait(at: AppTest, done: Callable[[AppTest], bool]) -> AppTest:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            at.run()
            assert not at.exception, [e.message for e in at.exception]
            if done(at):
                return at
            if time.monotonic() > deadline:
                raise AssertionError("the page never reached the expected state")
            time.sleep(0.05)

    return wait
