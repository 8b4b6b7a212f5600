"""What the engine saves on every call, kept correct: the limiter hold (a free token taken at
once, waiters served in order and never passed, a token given back when its holder is
cancelled), the collector's tuning, and a run's memory of replies already read."""

from __future__ import annotations

import gc

import anyio
import anyio.lowlevel
import pytest

from core.engine import GC_YOUNG_THRESHOLD, Hold, read_reply, tune_gc
from core.formats import parse_format
from core.result import CallResult, CallStatus

pytestmark = pytest.mark.anyio


async def test_a_free_token_is_taken_and_given_back() -> None:
    limiter = anyio.CapacityLimiter(1)
    async with Hold(limiter):
        assert limiter.borrowed_tokens == 1
    assert limiter.borrowed_tokens == 0


async def test_waiters_are_served_in_order_and_never_passed() -> None:
    limiter = anyio.CapacityLimiter(1)
    order: list[int] = []
    release = anyio.Event()

    async def holder() -> None:
        async with Hold(limiter):
            await release.wait()

    async def waiter(i: int) -> None:
        async with Hold(limiter):
            order.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await anyio.wait_all_tasks_blocked()
        for i in range(3):
            tg.start_soon(waiter, i)
            await anyio.wait_all_tasks_blocked()
        release.set()
        # a newcomer arriving while the three wait for the token queues behind them
        await anyio.lowlevel.checkpoint()
        tg.start_soon(waiter, 3)
    assert order == [0, 1, 2, 3]


async def test_a_cancelled_holder_gives_its_token_back() -> None:
    limiter = anyio.CapacityLimiter(1)
    with anyio.move_on_after(0.05):
        async with Hold(limiter):
            await anyio.sleep(10)
    assert limiter.borrowed_tokens == 0
    entered: list[bool] = []

    async def waits() -> None:
        with anyio.move_on_after(0.05):  # cancelled while waiting: no token kept either
            async with Hold(limiter):
                entered.append(True)

    async with Hold(limiter), anyio.create_task_group() as tg:
        tg.start_soon(waits)
    assert entered == []
    assert limiter.borrowed_tokens == 0


def test_gc_tuned_once_and_never_over_a_chosen_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, *before[1:])
        tune_gc()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        gc.set_threshold(1234, *before[1:])
        tune_gc()
        assert gc.get_threshold()[0] == 1234
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def call(slot: int) -> CallResult:
    return CallResult(slot=slot, model="sim:sim-strong", sample=0, phase="panel")


def test_a_run_reads_a_repeated_reply_once_and_each_call_gets_its_own_verdict() -> None:
    fmt = parse_format({"kind": "label", "labels": ["regression", "no regression"]})
    read: dict[str, object] = {}
    first, second, third = call(0), call(1), call(2)
    read_reply(first, "Regression.", fmt, read)  # type: ignore[arg-type]
    read_reply(second, "Regression.", fmt, read)  # type: ignore[arg-type]
    read_reply(third, "maybe", fmt, read)  # type: ignore[arg-type]
    assert (first.status, first.answer) == (second.status, second.answer)
    assert first.answer == "regression" and first.status == CallStatus.OK
    assert third.status == CallStatus.INVALID and third.error
    assert set(read) == {"Regression.", "maybe"}
    assert first.raw == second.raw == "Regression."
