"""The Run page under AppTest: the form, a vote landing, refusals next to their widgets, cancel,
and the bundled sets filling the task."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core import datasets
from core.store import Store
from pages import ui

PageTest = Callable[[str], AppTest]
RerunUntil = Callable[[AppTest, Callable[[AppTest], bool]], AppTest]


def banners(at: AppTest) -> list[str]:
    return [e.value for e in (*at.success, *at.warning, *at.error)]


def has_decision(at: AppTest) -> bool:
    return any(b.startswith("**") for b in banners(at))


def errors_in(at: AppTest, column: int) -> list[str]:
    """Error messages shown inside one of the form's two columns."""
    return [e.value for e in at.columns[column].error]


def nothing_stored(store: Store) -> bool:
    return store.list_runs()[1] == 0 and ui.get_runner().jobs.list_jobs() == []


def test_the_form_renders_with_the_handbook_default(page_test: PageTest) -> None:
    at = page_test("pages/run.py").run()
    assert not at.exception
    assert at.number_input(key="run.n").value == 5
    assert at.selectbox(key="run.model").value.startswith("sim:")
    assert "sim:sim-strong" in at.selectbox(key="run.model").options
    assert at.selectbox(key="run.aggregate").value == "majority"
    assert any("No tie-break declared" in c.value for c in at.caption)


def test_a_vote_lands_and_shows_its_decision(
    page_test: PageTest, store: Store, rerun_until: RerunUntil
) -> None:
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("Is the sky blue on a clear day?")
    at.radio(key="run.mode").set_value("A mixed panel").run()
    at.multiselect(key="run.models").set_value(["sim:sim-strong", "sim:sim-fast"])
    at.multiselect(key="run.tie_breaks").set_value(["expand", "human"])
    at.button(key="run.submit").click()
    rerun_until(at, has_decision)

    run_id = at.session_state["run.run_id"]
    stored = store.get_run(run_id)
    assert stored.spec.panel.n == 5
    assert [str(t) for t in stored.spec.policy.tie_breaks] == ["expand:2", "human"]
    calls = at.dataframe[0].value
    assert list(calls["slot"])[:5] == [0, 1, 2, 3, 4]
    assert list(calls["model"])[:2] == ["sim:sim-strong", "sim:sim-fast"]
    assert all(state.startswith(("ok", "invalid", "error", "timeout")) for state in calls["state"])
    charts = [c.key for c in at.get("plotly_chart")]
    assert charts == ["run-votes", "run-timeline"]  # the vote, then the fan-out timeline
    raws = [c.value for c in at.code]
    assert all(c.raw in raws for c in stored.calls if c.raw)
    status = stored.decision.status.value
    if status == "decided":
        assert any(f"DECIDED: {stored.decision.label}" in b for b in banners(at))
    elif status == "needs_review":
        assert any("Review queue" in b for b in banners(at))


def test_the_chain_can_also_take_low_confidence_decisions(
    page_test: PageTest, store: Store, rerun_until: RerunUntil
) -> None:
    """Five votes never reach 0.99 (5-0 is 0.98): the trigger sends every vote to a human."""
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("Is the sky blue on a clear day?")
    at.multiselect(key="run.tie_breaks").set_value(["human"]).run()
    at.number_input(key="run.escalate_below").set_value(0.99)
    at.button(key="run.submit").click()
    rerun_until(at, has_decision)
    stored = store.get_run(at.session_state["run.run_id"])
    assert stored.spec.policy.escalate_below == 0.99
    assert stored.decision.status.value == "needs_review"
    assert stored.decision.reason.startswith("low confidence: ")


@pytest.mark.parametrize(
    ("arrange", "column", "message"),
    [
        (lambda at: at.text_area(key="run.input").set_value("   "), 0, "The input is empty"),
        (lambda at: at.text_input(key="run.labels").set_value(" , "), 0, "Give the labels"),
        (lambda at: at.number_input(key="run.n").set_value(0), 1, "N must be between 1 and 64"),
        (lambda at: at.number_input(key="run.n").set_value(65), 1, "N must be between 1 and 64"),
        (lambda at: at.text_area(key="run.template").set_value("no placeholder"), 0, "{input}"),
        (lambda at: at.text_area(key="run.synonyms").set_value("oops"), 0, "synonym = label"),
        (lambda at: at.text_input(key="run.other_models").set_value("nowhere:x"), 1, "nowhere"),
    ],
)
def test_bad_input_shows_next_to_its_widget_and_stores_nothing(
    page_test: PageTest,
    store: Store,
    arrange: Callable[[AppTest], object],
    column: int,
    message: str,
) -> None:
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("A fine input")
    arrange(at)
    at.button(key="run.submit").click().run()
    assert not at.exception
    assert any(message in e for e in errors_in(at, column)), [e.value for e in at.error]
    assert "run.run_id" not in at.session_state
    assert nothing_stored(store)


def test_no_model_chosen(page_test: PageTest, store: Store) -> None:
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("A fine input")
    at.radio(key="run.mode").set_value("A mixed panel").run()
    at.multiselect(key="run.models").set_value([])
    at.button(key="run.submit").click().run()
    assert errors_in(at, 1) == ["Choose at least one model."]
    assert nothing_stored(store)
    # fixing it clears the message and runs
    at.multiselect(key="run.models").set_value(["sim:sim-fast"])
    at.button(key="run.submit").click().run()
    assert at.error.len == 0
    assert "run.run_id" in at.session_state


def test_a_policy_that_does_not_fit_the_format_is_refused(
    page_test: PageTest, store: Store
) -> None:
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("Write a haiku about rain")
    at.selectbox(key="run.format").set_value("text").run()
    assert any("Votes on prose are vibes" in w.value for w in at.warning)
    at.button(key="run.submit").click().run()
    assert at.error.len == 1 and "text" in at.error[0].value
    assert nothing_stored(store)


def test_a_bundled_item_sets_the_task(page_test: PageTest) -> None:
    at = page_test("pages/run.py").run()
    at.radio(key="run.source").set_value("Pick from a bundled set").run()
    regression = datasets.load_set("regression")
    assert at.text_area(key="run.input").value == regression.items[0].text
    assert at.text_input(key="run.labels").value == "regression, no regression"
    assert at.multiselect(key="run.conservative").value == ["regression", "no regression"]
    assert at.text_area(key="run.template").value == regression.template

    at.selectbox(key="run.set").set_value("extraction").run()
    extraction = datasets.load_set("extraction")
    assert at.selectbox(key="run.format").value == "json"
    assert '"quantity"' in at.text_area(key="run.schema").value
    assert at.text_area(key="run.input").value == extraction.items[0].text

    tickets = datasets.load_set("tickets")
    at.selectbox(key="run.set").set_value("tickets").run()
    at.selectbox(key="run.item").set_value(tickets.items[3].id).run()
    assert at.text_area(key="run.input").value == tickets.items[3].text
    assert at.text_input(key="run.labels").value.startswith("outage, bug")
    assert any(tickets.items[3].gold in c.value for c in at.caption)


def test_cancel_a_running_vote(
    page_test: PageTest,
    store: Store,
    rerun_until: RerunUntil,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "20")  # calls that take many seconds
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("A slow question?")
    at.button(key="run.submit").click()
    rerun_until(at, lambda a: any("running" in s for s in a.dataframe[0].value["state"]))
    assert at.button(key="run.cancel")
    at.button(key="run.cancel").click()
    rerun_until(at, lambda a: any("Cancelled" in i.value for i in a.info))
    # a user's cancel is one neutral message: no red FAILED, no second warning
    assert [i.value for i in at.info if "Cancelled" in i.value] == [
        "Cancelled: you stopped this run. The calls already made stay recorded, with what "
        "they cost so far."
    ]
    assert not any("FAILED" in e.value for e in at.error)
    assert not any("Cancelled" in w.value for w in at.warning)
    stored = store.get_run(at.session_state["run.run_id"])
    assert stored.decision.status.value == "failed"
    assert {c.status.value for c in stored.calls} == {"cancelled"}


def test_weighted_panel_asks_for_weights(
    page_test: PageTest, store: Store, rerun_until: RerunUntil
) -> None:
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("Is this weighted?")
    at.selectbox(key="run.aggregate").set_value("weighted").run()
    at.radio(key="run.mode").set_value("A mixed panel").run()
    at.multiselect(key="run.models").set_value(["sim:sim-strong", "sim:sim-fast"]).run()
    at.number_input(key="run.weight.sim:sim-strong").set_value(3.0)
    at.number_input(key="run.n").set_value(3)
    at.button(key="run.submit").click()
    rerun_until(at, has_decision)
    stored = store.get_run(at.session_state["run.run_id"])
    assert stored.spec.policy.aggregation == "weighted"
    assert stored.spec.slot_names == ["sim:sim-strong", "sim:sim-fast", "sim:sim-strong"]
