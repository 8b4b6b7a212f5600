"""The in-process executor against the in-process sim: votes and batches as jobs, cancel,
resume, errors, and the job rows they leave."""

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
from core.jobs import JobStatus
from core.jobs.inprocess import BatchProgress, InProcessExecutor, RunProgress
from core.panel import Panel
from core.result import CallStatus, DecisionStatus
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
def runner(db_url: str) -> Iterator[InProcessExecutor]:
    with InProcessExecutor(database_url=db_url) as r:
        yield r


def wait_for(get: Callable[[], T | None], done: Callable[[T], bool], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value is not None and done(value):
            return value
        assert time.monotonic() < deadline, f"not reached: {value!r}"
        time.sleep(0.02)


def finished_run(runner: InProcessExecutor, run_id: str) -> RunProgress:
    return wait_for(lambda: runner.run_progress(run_id), lambda p: p.done)


def finished_batch(runner: InProcessExecutor, batch_id: str) -> BatchProgress:
    return wait_for(lambda: runner.batch_progress(batch_id), lambda p: p.finished)


def items(n: int) -> list[BatchItem]:
    return [BatchItem(i, f"id-{i}", f"Is item number {i} fine?", "yes") for i in range(n)]


def test_a_run_lands_and_is_stored(runner: InProcessExecutor) -> None:
    task = build_task(labels=LABELS)
    panel = runner.tally.panel(["sim:sim-strong", "sim:sim-mid"], 5)
    job = runner.submit_run(
        "Is the sky blue on a clear day?",
        actor=LOCAL,
        spec=RunSpec(task=task, panel=panel, policy=build_policy()),
    )
    run_id = job.result_ref
    assert run_id is not None and job.kind == "vote" and job.status == JobStatus.RUNNING
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
    ended = wait_for(lambda: runner.jobs.get(job.id), lambda j: j.finished)
    assert (ended.status, ended.submitted_by, ended.result_ref) == (
        "done",
        LOCAL.to_json(),
        run_id,
    )
    assert ended.result is not None and ended.result["status"] == stored.decision.status.value
    assert ended.owner is None and runner.active() == []


def test_progress_is_a_copy(runner: InProcessExecutor) -> None:
    panel = runner.tally.panel(["sim:sim-fast"], 3)
    run_id = runner.submit_run(
        "A question?",
        actor=LOCAL,
        spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
    ).result_ref
    assert run_id is not None
    progress = finished_run(runner, run_id)
    progress.calls.clear()
    progress.events.clear()
    again = runner.run_progress(run_id)
    assert again is not None and len(again.calls) == 3 and again.events


def test_bad_input_is_refused_before_anything_is_stored(runner: InProcessExecutor) -> None:
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
            spec=RunSpec(task=task, panel=panel, policy=build_policy()),
            name="b",
            columns={},
            actor=LOCAL,
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
    assert runner.jobs.list_jobs() == []


def test_cancel_a_slow_run_keeps_what_was_recorded(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "20")  # each call takes many seconds
    with InProcessExecutor(database_url=db_url) as runner:
        panel = runner.tally.panel(["sim:sim-strong"], 5)
        job = runner.submit_run(
            "Slow question?",
            actor=LOCAL,
            spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
        )
        run_id = job.result_ref
        assert run_id is not None
        wait_for(
            lambda: runner.run_progress(run_id),
            lambda p: any(c.status == CallStatus.RUNNING for c in p.calls.values()),
        )
        assert runner.cancel(job.id, actor=LOCAL).cancel_requested
        progress = finished_run(runner, run_id)
        assert progress.cancelled and progress.error is None
        assert progress.decision is not None
        assert progress.decision.status == DecisionStatus.FAILED
        assert all(c.status == CallStatus.CANCELLED for c in progress.calls.values())
        assert (
            runner.cancel(job.id, actor=LOCAL).status == JobStatus.CANCELLED
        )  # already over: unchanged

        stored = runner.store.get_run(run_id)  # not left "running"
        assert stored.decision.status == DecisionStatus.FAILED
        assert stored.decision.reason == progress.decision.reason == "run cancelled"
        assert len(stored.calls) == 5
        assert {c.status for c in stored.calls} == {CallStatus.CANCELLED}
        ended = runner.jobs.get(job.id)
        assert ended.status == JobStatus.CANCELLED and ended.error == "cancelled by request"


def test_a_batch_reports_progress_and_finishes(runner: InProcessExecutor) -> None:
    panel = runner.tally.panel(["sim:sim-mid"], 3)
    job = runner.submit_batch(
        items(8),
        actor=LOCAL,
        spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
        name="eight",
        columns={"text": "text", "gold": "gold", "id": "id"},
    )
    batch_id = job.result_ref
    assert batch_id is not None and job.total == 8
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
    ended = wait_for(lambda: runner.jobs.get(job.id), lambda j: j.finished)
    assert (ended.status, ended.done, ended.total) == ("done", 8, 8)


def test_cancel_then_resume_a_batch(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.3")
    with InProcessExecutor(database_url=db_url) as runner:
        panel = runner.tally.panel(["sim:sim-fast"], 3)
        job = runner.submit_batch(
            items(40),
            actor=LOCAL,
            spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
            name="forty",
            columns={},
        )
        batch_id = job.result_ref
        assert batch_id is not None
        wait_for(lambda: runner.batch_progress(batch_id), lambda p: p.done >= 1)
        assert runner.cancel(job.id, actor=LOCAL).cancel_requested
        cut = finished_batch(runner, batch_id)
        assert cut.cancelled and cut.done < 40
        assert runner.store.get_batch(batch_id).status == "interrupted"
        done_before = runner.store.batch_counts(batch_id)["done"]

    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.01")
    with InProcessExecutor(database_url=db_url) as runner:
        again = runner.resume_batch(batch_id, actor=LOCAL)
        assert again.result_ref == batch_id and again.id != job.id
        assert runner.resume_batch(batch_id, actor=LOCAL).id == again.id  # in flight: the same job
        resumed = finished_batch(runner, batch_id)
        assert resumed.error is None and resumed.done == 40
        assert resumed.done_at_start == done_before
        assert runner.store.get_batch(batch_id).status == "done"
        with pytest.raises(InputError, match="already done"):
            runner.resume_batch(batch_id, actor=LOCAL)


def test_a_failing_job_reports_one_line_and_the_runner_goes_on(
    runner: InProcessExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, policy = build_task(labels=LABELS), build_policy()
    panel = runner.tally.panel(["sim:sim-fast"], 3)
    real_vote = runner.tally.vote

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(runner.tally, "vote", broken)
    job = runner.submit_run("one", actor=LOCAL, spec=RunSpec(task=task, panel=panel, policy=policy))
    bad = finished_run(runner, str(job.result_ref))
    assert bad.error == "RuntimeError: disk on fire"
    assert bad.events[-1] == "error: RuntimeError: disk on fire"
    failed = runner.jobs.get(job.id)
    assert (failed.status, failed.error) == ("failed", "RuntimeError: disk on fire")

    monkeypatch.setattr(runner.tally, "vote", real_vote)
    good = finished_run(
        runner,
        str(
            runner.submit_run(
                "two", actor=LOCAL, spec=RunSpec(task=task, panel=panel, policy=policy)
            ).result_ref
        ),
    )
    assert good.error is None and good.result is not None


def test_close_interrupts_what_is_running(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "20")
    runner = InProcessExecutor(database_url=db_url)
    panel = runner.tally.panel(["sim:sim-strong"], 3)
    job = runner.submit_run(
        "Slow?",
        spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
        actor=LOCAL,
    )
    run_id = str(job.result_ref)
    runner.close()
    runner.close()  # twice is fine
    with pytest.raises(TallyError, match="closed"):
        runner.submit_run(
            "again",
            actor=LOCAL,
            spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
        )
    progress = runner.run_progress(run_id)
    assert progress is not None and progress.done and not progress.cancelled
    assert progress.error == "stopped: its executor shut down"
    ended = runner.jobs.get(job.id)
    assert (ended.status, ended.error) == ("interrupted", "stopped: its executor shut down")
    assert runner.store.get_run(run_id).decision.status == DecisionStatus.FAILED


def test_one_submission_pressed_twice_is_one_job_and_one_run(runner: InProcessExecutor) -> None:
    spec = RunSpec(
        task=build_task(labels=LABELS),
        panel=runner.tally.panel(["sim:sim-fast"], 3),
        policy=build_policy(),
    )
    first = runner.submit_run("Twice?", spec, actor=LOCAL, active_key="ana:vote:1")
    second = runner.submit_run("Twice?", spec, actor=LOCAL, active_key="ana:vote:1")
    assert second.id == first.id and second.result_ref == first.result_ref
    finished_run(runner, str(first.result_ref))
    assert runner.store.list_runs()[1] == 1
    b1 = runner.submit_batch(
        items(3), spec, name="b", columns={}, actor=LOCAL, active_key="ana:batch:1"
    )
    b2 = runner.submit_batch(
        items(3), spec, name="b", columns={}, actor=LOCAL, active_key="ana:batch:1"
    )
    assert b1.id == b2.id and len(runner.store.list_batches()) == 1  # one batch row too
    finished_batch(runner, str(b1.result_ref))


DIE_MID_BATCH = """
import os, sys, time
from core.api import build_policy, build_task
from core.auth import LOCAL
from core.jobs.inprocess import InProcessExecutor
from core.spec import RunSpec
from core.store import BatchItem

ex = InProcessExecutor(database_url=sys.argv[1], look_after=False)
spec = RunSpec(
    task=build_task(labels=["yes", "no"]),
    panel=ex.tally.panel(["sim:sim-fast"], 3),
    policy=build_policy(),
)
items = [BatchItem(i, None, f"Is item {i} fine?", "yes") for i in range(30)]
job = ex.submit_batch(items, spec, name="killed", columns={}, actor=LOCAL)
while ex.store.batch_counts(job.result_ref)["done"] < 3:
    time.sleep(0.02)
print(job.id, job.result_ref, flush=True)
time.sleep(600)
"""


def test_a_killed_dashboard_batch_is_reaped_and_resumed_by_the_next(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SIGKILL mid-batch: the next executor on this host sees the dead pid, queues the job
    again and finishes the batch from the store, each item run once."""
    import os
    import signal
    import subprocess
    import sys

    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.3")
    script = tmp_path / "die.py"
    script.write_text(DIE_MID_BATCH, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(script), db_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    try:
        assert proc.stdout is not None
        job_id, batch_id = proc.stdout.readline().split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.01")
    with InProcessExecutor(database_url=db_url) as runner:
        ended = wait_for(lambda: runner.jobs.get(job_id), lambda j: j.finished, timeout=60)
        assert ended.status == JobStatus.DONE and ended.attempts == 2
        assert (ended.done, ended.total) == (30, 30)
        counts = runner.store.batch_counts(batch_id)
        assert counts["done"] == 30 and counts["calls"] == 90  # three calls per item, once
        assert runner.store.get_batch(batch_id).status == "done"


def test_a_killed_vote_is_marked_with_the_reason(db_url: str) -> None:
    """A vote does not resume (its person has left): it ends interrupted, saying why."""
    from core.jobs import JobKind, JobStore
    from core.store import Store
    from core.store.lease import Owner

    with Store(db_url) as store:
        store.upgrade()
        dead = Owner("another-host.invalid", 1, "t-dead", 0.0)
        job = JobStore(store).submit(JobKind.VOTE, {}, owner=dead, lease_s=1.0, now=0.0)
    with InProcessExecutor(database_url=db_url) as runner:
        ended = wait_for(lambda: runner.jobs.get(job.id), lambda j: j.finished)
        assert ended.status == JobStatus.INTERRUPTED
        assert ended.error is not None and "stopped renewing its lease" in ended.error


RUNNER = Identity(
    "https://idp.test", "s-run", "ru@example.com", "Ru", frozenset({Role.RUNNER}), True
)
VIEWER = Identity(
    "https://idp.test", "s-vi", "vi@example.com", "Vi", frozenset({Role.VIEWER}), True
)
REVIEWER = Identity(
    "https://idp.test", "s-rv", "rv@example.com", "Rv", frozenset({Role.REVIEWER}), True
)


def test_only_a_runner_may_spend_and_nothing_is_stored_otherwise(
    runner: InProcessExecutor,
) -> None:
    """Anonymous sessions, viewers and reviewers start no vote, batch, draw, sweep, re-vote
    or resume and cancel nothing: refused before a row is written or a call made."""
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
            runner.submit_sweep(model="sim:sim-fast", levels=[1, 2], calls_per_level=1, actor=who)
        with pytest.raises(error):
            runner.submit_revote(["any"], actor=who)
        with pytest.raises(error):
            runner.cancel("any", actor=who)
    assert runner.store.list_runs()[1] == 0 and runner.store.list_batches() == []
    assert runner.jobs.list_jobs() == []


def test_runs_batches_and_jobs_record_who_started_them(runner: InProcessExecutor) -> None:
    panel = runner.tally.panel(["sim:sim-mid"], 3)
    spec = RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy())
    vote = runner.submit_run("Is it fine?", spec, actor=RUNNER)
    run_id = str(vote.result_ref)
    assert finished_run(runner, run_id).error is None
    batch = runner.submit_batch(items(2), spec, name="b", columns={}, actor=RUNNER)
    batch_id = str(batch.result_ref)
    assert finished_batch(runner, batch_id).error is None
    with runner.store.engine.connect() as conn:
        run_by = conn.execute(select(run_t.c.submitted_by).where(run_t.c.id == run_id)).scalar()
        batch_by = conn.execute(
            select(batch_t.c.submitted_by).where(batch_t.c.id == batch_id)
        ).scalar()
    who = {"iss": "https://idp.test", "sub": "s-run", "email": "ru@example.com", "name": "Ru"}
    assert json.loads(run_by) == who  # kept through the run's finish
    assert json.loads(batch_by) == who
    assert json.loads(str(runner.jobs.get(vote.id).submitted_by)) == who
    assert json.loads(str(runner.jobs.get(batch.id).submitted_by)) == who
