"""Pages as views over jobs, under AppTest: the address carries the run or batch, so a reload or
a second tab opens the same view, live while it runs; a form pressed twice, or in two tabs,
starts one job."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core.api import build_policy, build_task
from core.auth import LOCAL
from core.jobs import JobStore
from core.spec import RunSpec
from core.store import BatchItem, Store
from pages import ui

PageTest = Callable[[str], AppTest]
RerunUntil = Callable[[AppTest, Callable[[AppTest], bool]], AppTest]


def slow_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls that take many seconds, so a vote is still running while the test looks."""
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "30")


def spec(n: int = 3) -> RunSpec:
    panel = ui.get_runner().tally.panel(["sim:sim-fast"], n)
    return RunSpec(task=build_task(labels=["yes", "no"]), panel=panel, policy=build_policy())


def fill_vote(at: AppTest) -> AppTest:
    at.text_area(key="run.input").set_value("Is the sky blue on a clear day?")
    at.number_input(key="run.n").set_value(3)
    return at


def test_a_reload_of_a_running_vote_shows_it_live_again(
    page_test: PageTest, monkeypatch: pytest.MonkeyPatch, rerun_until: RerunUntil
) -> None:
    slow_sim(monkeypatch)
    at = fill_vote(page_test("pages/run.py").run())
    at.button(key="run.submit").click().run()
    assert not at.exception
    run_id = at.session_state["run.run_id"]
    assert at.query_params["run"] == run_id  # the address names the run
    # a reload is a new session with the same address
    again = page_test("pages/run.py")
    again.query_params["run"] = run_id
    again.run()
    assert not again.exception
    assert again.session_state["run.run_id"] == run_id
    assert any(s.value == "Running" for s in again.subheader)
    assert any("calls landed" in (p.proto.text or "") for p in again.get("progress"))
    (job,) = ui.get_runner().jobs.list_jobs()
    ui.get_runner().cancel(job.id, actor=LOCAL)
    rerun_until(again, lambda a: not any(s.value == "Running" for s in a.subheader))
    assert any("Cancelled" in i.value for i in again.info)  # a cancel is one neutral message


def test_a_link_to_a_finished_run_opens_its_result(
    page_test: PageTest, store: Store, rerun_until: RerunUntil
) -> None:
    job = ui.get_runner().submit_run("Is it fine?", spec(), actor=LOCAL)
    run_id = str(job.result_ref)
    deadline = time.monotonic() + 30
    while not JobStore(store).get(job.id).finished:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    at = page_test("pages/run.py")
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception
    assert any(s.value == "Result" for s in at.subheader)
    assert at.dataframe[0].value["slot"].tolist() == [0, 1, 2]
    at.query_params["run"] = "no-such-run"
    at.run()
    assert any("no such run" in i.value for i in at.info)


def test_run_pressed_twice_or_in_two_tabs_starts_one_vote(
    page_test: PageTest, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_sim(monkeypatch)
    first = fill_vote(page_test("pages/run.py").run())
    first.button(key="run.submit").click().run()
    first.button(key="run.submit").click().run()  # a double click
    second = fill_vote(page_test("pages/run.py").run())  # another tab, the same form
    second.button(key="run.submit").click().run()
    assert not first.exception and not second.exception
    jobs = JobStore(store).list_jobs()
    assert len(jobs) == 1 and jobs[0].kind == "vote"
    assert first.session_state["run.run_id"] == second.session_state["run.run_id"]
    assert store.list_runs()[1] == 1
    # another question is another job
    other = page_test("pages/run.py").run()
    other.text_area(key="run.input").set_value("Is water wet?")
    other.number_input(key="run.n").set_value(3)
    other.button(key="run.submit").click().run()
    assert len(JobStore(store).list_jobs()) == 2
    for job in JobStore(store).list_jobs():
        ui.get_runner().cancel(job.id, actor=LOCAL)


def test_a_link_to_a_batch_opens_it_live(
    page_test: PageTest, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_sim(monkeypatch)
    items = [BatchItem(i, None, f"Is item {i} fine?", None) for i in range(20)]
    older = ui.get_runner().submit_batch(items[:1], spec(1), name="older", columns={}, actor=LOCAL)
    job = ui.get_runner().submit_batch(items, spec(1), name="linked", columns={}, actor=LOCAL)
    at = page_test("pages/batch.py")
    at.query_params["batch"] = str(job.result_ref)
    at.run()
    assert not at.exception
    assert at.selectbox(key="batch.view").value == job.result_ref
    assert any("runs finished" in (p.proto.text or "") for p in at.get("progress"))
    # picking another batch puts it in the address
    at.selectbox(key="batch.view").set_value(older.result_ref).run()
    assert at.query_params["batch"] == older.result_ref
    for j in (older, job):
        ui.get_runner().cancel(j.id, actor=LOCAL)


def test_the_address_the_page_writes_itself_is_not_read_back_as_a_link(
    page_test: PageTest, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new visit with batches in the store shows the newest in the address; the next rerun
    (any widget touched) must not take that for a link and fold the New batch form away."""
    slow_sim(monkeypatch)
    items = [BatchItem(0, None, "Is item 0 fine?", None)]
    job = ui.get_runner().submit_batch(items, spec(1), name="earlier", columns={}, actor=LOCAL)
    ui.get_runner().cancel(job.id, actor=LOCAL)
    at = page_test("pages/batch.py").run()
    assert at.query_params["batch"] == job.result_ref  # the batch shown, in the address
    at.text_input(key="batch.name").set_value("mine").run()
    assert not at.exception
    (form,) = [e for e in at.expander if e.label == "New batch"]
    assert form.proto.expanded
