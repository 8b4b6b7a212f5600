"""Check before spending, on every form that spends: the planned calls, cost and time are shown
before anything runs, a large spend waits for a confirmation, and what the engine would refuse
is refused in the form, before any call."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from core.estimate import LARGE_CALLS
from core.store import Store
from pages import ui

PageTest = Callable[[str], AppTest]


def unescaped(text: str) -> str:
    """Markdown text as read on screen (the pages escape every markdown character)."""
    return text.replace("\\", "")


def spend_lines(at: AppTest) -> list[str]:
    return [unescaped(i.value) for i in at.info if "Before it runs" in i.value]


def warnings(at: AppTest) -> list[str]:
    return [unescaped(w.value) for w in at.warning]


def test_the_run_form_shows_calls_cost_and_time_before_running(
    page_test: PageTest, store: Store
) -> None:
    at = page_test("pages/run.py").run()
    assert not spend_lines(at)  # no input yet: nothing to plan
    at.text_area(key="run.input").set_value("Is the sky blue?").run()
    (line,) = spend_lines(at)
    assert "5 calls in 1 request" in line  # five samples of one sim model, drawn together
    assert "about $0.00" in line and "at 8 at a time" in line
    assert store.list_runs()[1] == 0  # showing the plan spends nothing
    at.radio(key="run.mode").set_value("A mixed panel").run()
    at.text_input(key="run.other_models").set_value("ollama:llama3.2").run()
    (line,) = spend_lines(at)
    assert "unknown" in line and "ollama:llama3.2" in line  # no price: unknown, never $0


def test_a_quorum_above_n_is_refused_in_the_form_before_any_call(
    page_test: PageTest, store: Store
) -> None:
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("Is it?")
    at.number_input(key="run.min_valid").set_value(9).run()
    assert any("quorum of 9 valid votes" in w and "panel of 5" in w for w in warnings(at))
    assert not spend_lines(at)
    at.button(key="run.submit").click().run()
    assert any("quorum of 9" in e.value for e in at.error)
    assert "--" not in " ".join(e.value for e in at.error)  # no CLI syntax in the UI
    assert store.list_runs()[1] == 0


def test_k_above_n_and_an_unknown_placeholder_are_refused_in_the_form(page_test: PageTest) -> None:
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("Is it?")
    at.selectbox(key="run.aggregate").set_value("at-least").run()
    at.number_input(key="run.k").set_value(7).run()
    assert any("at least 7 votes" in w for w in warnings(at))
    at.number_input(key="run.k").set_value(3)
    at.text_area(key="run.template").set_value("{input} in {language}").run()
    assert any("unknown placeholder {language}" in w for w in warnings(at)), warnings(at)


def confirm_box(at: AppTest, prefix: str) -> str | None:
    return next((k for k in at.session_state if k.startswith(f"{prefix}.confirm.")), None)


def test_a_large_spend_waits_for_its_confirmation(page_test: PageTest, store: Store) -> None:
    at = page_test("pages/run.py").run()
    # fastest-acceptable sends every sample on its own: 64 long prompts to the priciest model
    at.text_area(key="run.input").set_value("x " * 40_000)
    at.selectbox(key="run.model").set_value("sim:sim-strong")
    at.selectbox(key="run.aggregate").set_value("fastest")
    at.number_input(key="run.n").set_value(64).run()
    key = confirm_box(at, "run")
    assert key is not None, "a large spend offers a confirmation"
    at.button(key="run.submit").click().run()
    assert ui.CONFIRM_FIRST in [e.value for e in at.error]
    assert "run.run_id" not in at.session_state and store.list_runs()[1] == 0
    at.checkbox(key=key).check().run()
    at.button(key="run.submit").click().run()
    assert "run.run_id" in at.session_state
    # a changed spend asks again
    at.number_input(key="run.n").set_value(63).run()
    (fresh,) = [k for k in at.session_state if k.startswith("run.confirm.") and k != key]
    assert at.checkbox(key=fresh).value is False


def test_the_batch_form_plans_the_whole_batch(page_test: PageTest, store: Store) -> None:
    at = page_test("pages/batch.py").run()
    at.radio(key="batch.source").set_value("A bundled labelled set").run()
    at.number_input(key="batch.first").set_value(20)
    at.multiselect(key="batch.models").set_value(["sim:sim-fast", "sim:sim-mid"])
    at.number_input(key="batch.n").set_value(4).run()
    (line,) = spend_lines(at)
    assert "80 calls over 20 runs in 40 requests" in line
    assert store.list_batches() == []


def test_a_batch_whose_gold_no_label_reads_is_refused_before_it_runs(
    page_test: PageTest, store: Store
) -> None:
    at = page_test("pages/batch.py").run()
    data = b"id,text,label\na1,first,yes\na2,second,maybe\n"
    at.file_uploader(key="batch.file").set_value(("g.csv", data, "text/plain")).run()
    assert any("gold 'maybe'" in w for w in warnings(at)), warnings(at)
    assert store.list_batches() == []


def test_a_large_batch_asks_first(page_test: PageTest, store: Store) -> None:
    at = page_test("pages/batch.py").run()
    at.radio(key="batch.source").set_value("A bundled labelled set").run()
    at.number_input(key="batch.first").set_value(20)
    at.number_input(key="batch.n").set_value(LARGE_CALLS // 20).run()
    assert confirm_box(at, "batch") is not None
    at.button(key="batch.submit").click().run()
    assert ui.CONFIRM_FIRST in [e.value for e in at.error]
    assert store.list_batches() == []


def test_a_curve_draw_and_a_sweep_show_their_cost_before_they_start(
    page_test: PageTest, store: Store
) -> None:
    at = page_test("pages/experiments.py").run()
    assert not at.exception
    lines = spend_lines(at)
    assert any("calls over 60 runs" in line for line in lines), lines
    assert any("calls" in line and "at a time" in line for line in lines[1:]), lines
    assert store.list_batches() == [] and store.list_sweeps() == []
