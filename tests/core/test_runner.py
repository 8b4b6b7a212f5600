"""The background runner against the in-process sim: runs, batches, cancel, resume, errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select

from core.api import build_policy, build_task
from core.auth import ANONYMOUS, LOCAL, Identity, Role
from core.batch import batch_summary
from core.errors import (
    ConfigError,
    ForbiddenError,
    InputError,
    NotSignedInError,
    PolicyError,
    TallyError,
)
from core.panel import Panel
from core.result import CallStatus, DecisionStatus
from core.runner import BatchProgress, Runner, RunProgress
from core.spec import RunSpec
from core.store import BatchItem, RunFilter
from core.store.tables import batch_t, run_t

T = TypeVar("T")
LABELS = ["yes", "no"]


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.01")
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return f"sqlite:///{tmp_path / 'runner.db'}"


@pytest.fixture
def runner(db_url: str) -> Iterator[Runner]:
    with Runner(database_url=db_url) as r:
        yield r


def wait_for(get: Callable[[], T | None], done: Callable[[T], bool], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value is not None and done(value):
            return value
        assert time.monotonic() < deadline, f"not reached: {value!r}"
        time.sleep(0.02)


def finished_run(runner: Runner, run_id: str) -> RunProgress:
    return wait_for(lambda: runner.run_progress(run_id), lambda p: p.done)


def finished_batch(runner: Runner, batch_id: str) -> BatchProgress:
    return wait_for(lambda: runner.batch_progress(batch_id), lambda p: p.finished)


def items(n: int) -> list[BatchItem]:
    return [BatchItem(i, f"id-{i}", f"Is item number {i} fine?", "yes") for i in range(n)]


def test_a_run_lands_and_is_stored(runner: Runner) -> None:
    task = build_task(labels=LABELS)
    panel = runner.tally.panel(["sim:sim-strong", "sim:sim-mid"], 5)
    run_id = runner.submit_run(
        "Is the sky blue on a clear day?",
        actor=LOCAL,
        spec=RunSpec(task=task, panel=panel, policy=build_policy()),
    )
    first = runner.run_progress(run_id)
    assert first is not None and len(first.calls) == 5  # every slot shown from the start

    progress = finished_run(runner, run_id)
    assert progress.error is None and not progress.cancelled
    assert progress.result is not None and progress.decision is not None
    assert [c.slot for c in progress.sorted_calls()] == [0, 1, 2, 3, 4]
    assert all(c.status == CallStatus.OK for c in progress.sorted_calls())
    assert any("call_finished" in line for line in progress.events)

    stored = runner.store.get_run(run_id)
    assert stored.decision == progress.result.decision
    assert stored.votes == progress.result.votes and sum(stored.votes.values()) == 5
    rows, total = runner.store.list_runs(RunFilter(sources=["ui"]))
    assert total == 1 and rows[0].run_id == run_id
    assert [j.job_id for j in runner.jobs()] == [run_id]


def test_progress_is_a_copy(runner: Runner) -> None:
    panel = runner.tally.panel(["sim:sim-fast"], 3)
    run_id = runner.submit_run(
        "A question?",
        actor=LOCAL,
        spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
    )
    progress = finished_run(runner, run_id)
    progress.calls.clear()
    progress.events.clear()
    again = runner.run_progress(run_id)
    assert again is not None and len(again.calls) == 3 and again.events


def test_bad_input_is_refused_before_anything_is_stored(runner: Runner) -> None:
    task = build_task(labels=LABELS)
    panel = runner.tally.panel(["sim:sim-mid"], 3)
    with pytest.raises(InputError, match="empty"):
        runner.submit_run(
            "   ", actor=LOCAL, spec=RunSpec(task=task, panel=panel, policy=build_policy())
        )
    with pytest.raises(ConfigError):
        runner.submit_run(
            "text",
            actor=LOCAL,
            spec=RunSpec(task=task, panel=Panel.build(["nowhere:model"], 3), policy=build_policy()),
        )
    with pytest.raises(PolicyError):  # a majority vote over free prose
        runner.submit_run(
            "text",
            actor=LOCAL,
            spec=RunSpec(task=build_task(answer_format="text"), panel=panel, policy=build_policy()),
        )
    with pytest.raises(InputError, match="no rows"):
        runner.submit_batch(
            [],
            actor=LOCAL,
            spec=RunSpec(task=task, panel=panel, policy=build_policy()),
            name="b",
            columns={},
        )
    with pytest.raises(InputError, match="row 2: input text is empty"):
        runner.submit_batch(
            [BatchItem(0, None, "fine", None), BatchItem(1, None, " ", None)],
            actor=LOCAL,
            spec=RunSpec(task=task, panel=panel, policy=build_policy()),
            name="b",
            columns={},
        )
    assert runner.store.list_runs()[1] == 0
    assert runner.store.list_batches() == []
    assert runner.jobs() == []


def test_cancel_a_slow_run_keeps_what_was_recorded(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "20")  # each call takes many seconds
    with Runner(database_url=db_url) as runner:
        panel = runner.tally.panel(["sim:sim-strong"], 5)
        run_id = runner.submit_run(
            "Slow question?",
            actor=LOCAL,
            spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
        )
        wait_for(
            lambda: runner.run_progress(run_id),
            lambda p: any(c.status == CallStatus.RUNNING for c in p.calls.values()),
        )
        assert runner.cancel(run_id, actor=LOCAL) is True
        progress = finished_run(runner, run_id)
        assert progress.cancelled and progress.error is None
        assert progress.decision is not None
        assert progress.decision.status == DecisionStatus.FAILED
        assert all(c.status == CallStatus.CANCELLED for c in progress.calls.values())
        assert runner.cancel(run_id, actor=LOCAL) is False  # already over

        stored = runner.store.get_run(run_id)  # not left "running"
        assert stored.decision.status == DecisionStatus.FAILED
        assert stored.decision.reason == progress.decision.reason == "run cancelled"
        assert len(stored.calls) == 5
        assert {c.status for c in stored.calls} == {CallStatus.CANCELLED}
        job = runner.jobs()[0]
        assert job.finished and job.cancelled


def test_a_batch_reports_progress_and_finishes(runner: Runner) -> None:
    panel = runner.tally.panel(["sim:sim-mid"], 3)
    batch_id = runner.submit_batch(
        items(8),
        actor=LOCAL,
        spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
        name="eight",
        columns={"text": "text", "gold": "gold", "id": "id"},
    )
    assert runner.store.get_batch(batch_id).name == "eight"  # listed at once
    progress = finished_batch(runner, batch_id)
    assert progress.error is None and not progress.cancelled
    assert progress.total == progress.done == 8
    assert sum(progress.counts.values()) == 8
    assert progress.eta_s == 0.0
    assert progress.rate is not None and progress.rate > 0
    assert progress.cost_usd > 0
    counts = batch_summary(runner.store, batch_id)
    assert counts["done"] == 8 and counts["with_gold"] == 8
    assert runner.store.get_batch(batch_id).status == "done"


def test_cancel_then_resume_a_batch(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.3")
    with Runner(database_url=db_url) as runner:
        panel = runner.tally.panel(["sim:sim-fast"], 3)
        batch_id = runner.submit_batch(
            items(40),
            actor=LOCAL,
            spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
            name="forty",
            columns={},
        )
        wait_for(lambda: runner.batch_progress(batch_id), lambda p: p.done >= 1)
        assert runner.cancel(batch_id, actor=LOCAL)
        cut = finished_batch(runner, batch_id)
        assert cut.cancelled and cut.done < 40
        assert runner.store.get_batch(batch_id).status == "interrupted"
        done_before = runner.store.batch_counts(batch_id)["done"]

    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.01")
    with Runner(database_url=db_url) as runner:
        assert runner.resume_batch(batch_id, actor=LOCAL) == batch_id
        resumed = finished_batch(runner, batch_id)
        assert resumed.error is None and resumed.done == 40
        assert resumed.done_at_start == done_before
        assert runner.store.get_batch(batch_id).status == "done"
        with pytest.raises(InputError, match="already done"):
            runner.resume_batch(batch_id, actor=LOCAL)


def test_a_failing_job_reports_one_line_and_the_runner_goes_on(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, policy = build_task(labels=LABELS), build_policy()
    panel = runner.tally.panel(["sim:sim-fast"], 3)
    real_vote = runner.tally.vote

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(runner.tally, "vote", broken)
    bad = finished_run(
        runner,
        runner.submit_run("one", actor=LOCAL, spec=RunSpec(task=task, panel=panel, policy=policy)),
    )
    assert bad.error == "RuntimeError: disk on fire"
    assert bad.events[-1] == "error: RuntimeError: disk on fire"

    monkeypatch.setattr(runner.tally, "vote", real_vote)
    good = finished_run(
        runner,
        runner.submit_run("two", actor=LOCAL, spec=RunSpec(task=task, panel=panel, policy=policy)),
    )
    assert good.error is None and good.result is not None


def test_close_cancels_what_is_running(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "20")
    runner = Runner(database_url=db_url)
    panel = runner.tally.panel(["sim:sim-strong"], 3)
    run_id = runner.submit_run(
        "Slow?",
        actor=LOCAL,
        spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
    )
    runner.close()
    runner.close()  # twice is fine
    with pytest.raises(TallyError, match="closed"):
        runner.submit_run(
            "again",
            actor=LOCAL,
            spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
        )
    progress = runner.run_progress(run_id)
    assert progress is not None and progress.done and progress.cancelled


RUNNER = Identity(
    "https://idp.test", "s-run", "ru@example.com", "Ru", frozenset({Role.RUNNER}), True
)
VIEWER = Identity(
    "https://idp.test", "s-vi", "vi@example.com", "Vi", frozenset({Role.VIEWER}), True
)
REVIEWER = Identity(
    "https://idp.test", "s-rv", "rv@example.com", "Rv", frozenset({Role.REVIEWER}), True
)


def test_only_a_runner_may_spend_and_nothing_is_stored_otherwise(runner: Runner) -> None:
    """Anonymous sessions, viewers and reviewers start no vote, batch or resume and cancel
    nothing: refused before a row is written or a call made."""
    panel = runner.tally.panel(["sim:sim-mid"], 3)
    spec = RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy())
    for who, error in (
        (ANONYMOUS, NotSignedInError),
        (VIEWER, ForbiddenError),
        (REVIEWER, ForbiddenError),
    ):
        with pytest.raises(error):
            runner.submit_run("Is it fine?", spec, actor=who)
        with pytest.raises(error):
            runner.submit_batch(items(2), spec, name="b", columns={}, actor=who)
        with pytest.raises(error):
            runner.resume_batch("any", actor=who)
        with pytest.raises(error):
            runner.cancel("any", actor=who)
    assert runner.store.list_runs()[1] == 0 and runner.store.list_batches() == []
    assert runner.jobs() == []


def test_runs_and_batches_record_who_started_them(runner: Runner) -> None:
    panel = runner.tally.panel(["sim:sim-mid"], 3)
    spec = RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy())
    run_id = runner.submit_run("Is it fine?", spec, actor=RUNNER)
    assert finished_run(runner, run_id).error is None
    batch_id = runner.submit_batch(items(2), spec, name="b", columns={}, actor=RUNNER)
    assert finished_batch(runner, batch_id).error is None
    with runner.store.engine.connect() as conn:
        run_by = conn.execute(select(run_t.c.submitted_by).where(run_t.c.id == run_id)).scalar()
        batch_by = conn.execute(
            select(batch_t.c.submitted_by).where(batch_t.c.id == batch_id)
        ).scalar()
    who = {"iss": "https://idp.test", "sub": "s-run", "email": "ru@example.com", "name": "Ru"}
    assert json.loads(run_by) == who  # kept through the run's finish
    assert json.loads(batch_by) == who
