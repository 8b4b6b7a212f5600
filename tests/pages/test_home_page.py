"""The home page and the app's navigation under AppTest."""

from __future__ import annotations

import time
from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import Store

PageTest = Callable[[str], AppTest]


def stored_run(run_id: str, status: DecisionStatus, branches: tuple[str, ...] = ()) -> RunResult:
    call = CallResult(slot=0, model="sim:sim-mid", status=CallStatus.OK, answer="yes", raw="yes")
    return RunResult(
        run_id=run_id,
        input=f"input of {run_id}",
        spec=RunSpec.from_json(
            {
                "task": {"name": "classify", "format": {"kind": "yesno"}},
                "panel": ["sim:sim-mid"],
                "policy": {},
            }
        ),
        decision=Decision(
            status=status, label="yes" if status == "decided" else None, branches=list(branches)
        ),
        votes={"yes": 1},
        calls=[call],
        cost_usd=None,
        latency_ms=10.0,
        created_at=time.time(),
    )


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_home_explains_the_pattern_on_an_empty_store(page_test: PageTest) -> None:
    at = page_test("pages/home.py").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    for words in ("Fan out", "Normalise and count", "Decide", "five is the default", "8"):
        assert words in text
    assert metric(at, "Runs stored") == "0"
    assert any("No runs yet" in i.value for i in at.info)


def test_home_shows_recent_activity(page_test: PageTest, store: Store) -> None:
    store.save_run(stored_run("a", DecisionStatus.DECIDED), source="cli")
    store.save_run(stored_run("b", DecisionStatus.NEEDS_REVIEW), source="ui")
    store.save_run(stored_run("c", DecisionStatus.TIE), source="library")
    store.save_run(stored_run("d", DecisionStatus.DECIDED, ("expand:2",)), source="batch")
    at = page_test("pages/home.py").run()
    assert not at.exception
    assert metric(at, "Runs stored") == "4"
    assert metric(at, "Runs that tied") == "3"  # the expanded one too
    assert metric(at, "Waiting for review") == "1"
    recent = at.dataframe[0].value
    assert sorted(recent["source"]) == ["batch", "cli", "library", "ui"]
    assert list(recent["cost"]) == ["unknown"] * 4  # no price is never shown as $0
    counts = at.dataframe[1].value
    assert dict(zip(counts["status"], counts["runs"], strict=True)) == {
        "decided": 2,
        "needs_review": 1,
        "tie": 1,
    }


def test_the_app_navigates_to_each_page(page_test: PageTest) -> None:
    at = page_test("app.py").run()
    assert not at.exception
    assert at.title[0].value == "Tally"
    at.switch_page("pages/run.py").run()
    assert not at.exception
    assert at.title[0].value == "Run a vote"
    at.switch_page("pages/history.py").run()
    assert not at.exception
    assert at.title[0].value == "History"
