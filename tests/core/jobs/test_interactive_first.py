"""Interactive work goes first: a vote submitted while a batch holds every slot it may starts
a call before any of the batch's calls end, because bulk work never takes the reserve."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.api import build_policy, build_task
from core.auth import LOCAL
from core.engine import interactive_reserve
from core.jobs.inprocess import InProcessExecutor
from core.result import CallStatus
from core.spec import RunSpec
from core.store import BatchItem


@pytest.fixture
def slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessExecutor]:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "30")  # a call takes many seconds
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with InProcessExecutor(database_url=f"sqlite:///{tmp_path / 'first.db'}") as ex:
        yield ex


def running(calls: object) -> int:
    return sum(1 for c in calls if c.status == CallStatus.RUNNING)  # type: ignore[attr-defined]


def test_the_reserve() -> None:
    assert [interactive_reserve(c) for c in (1, 2, 7, 8, 16, 64)] == [0, 1, 1, 1, 2, 8]


def test_a_vote_starts_while_a_batch_fills_the_ceiling(slow: InProcessExecutor) -> None:
    ceiling = slow.tally.engine.concurrency
    spec = RunSpec(
        task=build_task(labels=["yes", "no"]),
        panel=slow.tally.panel(["sim:sim-fast"], 1),
        policy=build_policy(),
    )
    items = [BatchItem(i, None, f"Is item {i} fine?", None) for i in range(4 * ceiling)]
    batch = slow.submit_batch(items, spec, name="big", columns={}, actor=LOCAL)
    batch_id = str(batch.result_ref)
    bulk_share = ceiling - interactive_reserve(ceiling)
    deadline = time.monotonic() + 60
    while True:  # the batch holds every slot bulk work may have
        in_flight = slow.tally.engine._global.borrowed_tokens
        if in_flight >= bulk_share:
            break
        assert time.monotonic() < deadline, in_flight
        time.sleep(0.05)
    vote = slow.submit_run(
        "Is the sky blue?",
        RunSpec(task=spec.task, panel=slow.tally.panel(["sim:sim-fast"], 3), policy=build_policy()),
        actor=LOCAL,
    )
    run_id = str(vote.result_ref)
    while True:
        progress = slow.run_progress(run_id)
        assert progress is not None
        if running(progress.calls.values()) or any(c.status.final for c in progress.calls.values()):
            break
        assert time.monotonic() < deadline, "the vote never started a call"
        time.sleep(0.02)
    batch_view, _ = slow.batch_view(batch_id)
    assert batch_view.done == 0  # the vote did not wait for a batch call to end
    slow.cancel(vote.id, actor=LOCAL)
    slow.cancel(batch.id, actor=LOCAL)
