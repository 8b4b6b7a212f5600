"""Re-vote in the dashboard: a run, or a whole batch, decided under another policy with no new
calls, the two decisions side by side; a chain that would call models is refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core.api import build_policy
from core.auth import LOCAL, Identity, Role
from core.errors import ForbiddenError, InputError
from core.store import Store
from pages import ui

PageTest = Callable[[str], AppTest]
RerunUntil = Callable[[AppTest, Callable[[AppTest], bool]], AppTest]


def landed(at: AppTest) -> bool:
    return any(e.label.startswith("What if") for e in at.expander)


def test_a_run_decided_again_under_another_policy_makes_no_new_calls(
    page_test: PageTest, store: Store, rerun_until: RerunUntil
) -> None:
    at = page_test("pages/run.py").run()
    at.text_area(key="run.input").set_value("Is the sky blue on a clear day?")
    at.radio(key="run.mode").set_value("A mixed panel").run()
    at.multiselect(key="run.models").set_value(["sim:sim-strong", "sim:sim-fast", "sim:sim-mid"])
    at.button(key="run.submit").click()
    rerun_until(at, landed)
    first = at.session_state["run.run_id"]
    runs_before = store.list_runs()[1]
    at.selectbox(key="run.whatif.aggregate").set_value("unanimous").run()
    at.multiselect(key="run.whatif.chain").set_value(["human"]).run()
    at.button(key="run.whatif.go").click().run()
    assert not at.exception
    marks = [m.value for m in at.markdown]
    assert any(m.startswith("**As it ran**: majority") for m in marks), marks
    assert any(m.startswith("**Under** unanimous") for m in marks), marks
    assert store.list_runs()[1] == runs_before + 1  # the what-if is recorded as a run
    again = at.session_state["run.whatif.result"]
    original = store.get_run(first)
    assert [c.raw for c in again.calls] == [c.raw for c in original.calls]  # the same answers
    assert again.cost_usd == 0  # nothing paid again
    assert again.spec.policy.aggregation.value == "unanimous"


def test_no_tie_break_chain_offers_select_all(page_test: PageTest) -> None:
    at = page_test("pages/run.py").run()
    assert at.multiselect(key="run.tie_breaks").proto.select_all == 0
    at = page_test("pages/batch.py").run()
    assert at.multiselect(key="batch.tie_breaks").proto.select_all == 0


def test_a_re_vote_that_would_call_models_is_refused(store: Store) -> None:
    policy = build_policy(tie_break=["escalate:sim:sim-strong"])
    with pytest.raises(InputError, match="no new calls"):
        ui.get_runner().revote(["anything"], policy, actor=LOCAL)


def test_only_a_runner_decides_again(store: Store) -> None:
    """A re-vote stores new runs (a human tie-break would queue them for review): a viewer's
    is refused before anything is counted."""
    viewer = Identity("https://idp.test", "s-vi", None, "Vi", frozenset({Role.VIEWER}), True)
    with pytest.raises(ForbiddenError, match="Vi may not spend"):
        ui.get_runner().revote(["anything"], build_policy(), actor=viewer)
    assert store.list_runs()[1] == 0


def test_a_whole_batch_decided_again_side_by_side(
    page_test: PageTest, store: Store, rerun_until: RerunUntil
) -> None:
    at = page_test("pages/batch.py").run()
    at.radio(key="batch.source").set_value("A bundled labelled set").run()
    at.number_input(key="batch.first").set_value(6)
    at.multiselect(key="batch.models").set_value(["sim:sim-fast", "sim:sim-mid"])
    at.number_input(key="batch.n").set_value(3).run()
    at.button(key="batch.submit").click()
    batch_id = None

    def finished(at: AppTest) -> bool:
        nonlocal batch_id
        batch_id = at.session_state["batch.current"]
        return store.get_batch(batch_id).status == "done" and any(
            e.label.startswith("What if") for e in at.expander
        )

    rerun_until(at, finished)
    key = f"batch.whatif.{batch_id}"
    at.selectbox(key=f"{key}.aggregate").set_value("strict").run()
    at.button(key=f"{key}.go").click().run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table.columns)[1].startswith("as it ran (majority")
    assert list(table.columns)[2].startswith("under strict")
    assert "accuracy vs gold" in list(table[""])
    assert any("runs changed their decision. No new calls" in c.value for c in at.caption)
