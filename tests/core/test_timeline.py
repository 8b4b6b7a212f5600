"""The fan-out timeline: the engine stamps each call's moments (queued, started, first token,
retries, ended) and the run's (rest cut, decided); the store keeps them; the timeline reads them
as one lane per request, samples drawn together as one lane with the prompt billed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ProviderError
from core.policy import Aggregation
from core.result import CallResult, CallStatus
from core.store import Store
from core.timeline import run_timeline, timeline
from tests.core.test_engine import FakeProvider, make_engine, request


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_samples_drawn_in_one_request_are_one_lane_billed_once() -> None:
    p = FakeProvider("f", {"a": [["regression"] * 4]}, supports_n=True)
    result = await make_engine(p).run(request(["f:a"], n=4))
    assert len(p.requests) == 1
    assert {c.request_slot for c in result.calls} == {0}
    (lane,) = run_timeline(result).lanes
    assert lane.slots == (0, 1, 2, 3) and lane.samples == 4
    assert lane.name == "slots 0-3"
    assert lane.tokens_in == 10  # the prompt once, not 4 × 10 nor 10 + 0 + 0 + 0 slots
    assert lane.tokens_out == 8


@pytest.mark.anyio
async def test_a_call_keeps_when_it_was_queued_started_retried_and_ended() -> None:
    p = FakeProvider(
        "f", {"a": [ProviderError("HTTP 503", status=503, retryable=True), "regression"]}
    )
    result = await make_engine(p).run(request(["f:a"], n=1))
    (call,) = result.calls
    assert call.queued_at is not None and call.started_at is not None
    assert call.queued_at <= call.started_at <= call.retry_at[0] <= call.ended_at  # type: ignore[operator]
    assert len(call.retry_at) == call.retries == 1
    assert result.decided_at is not None and result.decided_at >= call.ended_at  # type: ignore[operator]
    assert result.stopped_at is None
    line = run_timeline(result)
    (lane,) = line.lanes
    assert lane.queued == 0.0 and len(lane.retries) == 1
    assert line.decided is not None and line.decided >= lane.ended  # type: ignore[operator]


@pytest.mark.anyio
async def test_an_early_stop_marks_when_it_cut_the_rest() -> None:
    p = FakeProvider(
        "f",
        {"fast": ["regression"], "slow": [(5.0, "no regression")]},
    )
    result = await make_engine(p).run(
        request(["f:fast", "f:fast", "f:fast", "f:slow", "f:slow"], n=5, early_stop=True)
    )
    assert result.decision.label == "regression"
    assert result.stopped_at is not None
    line = run_timeline(result)
    cut = [lane for lane in line.lanes if lane.status == CallStatus.CANCELLED]
    assert cut and line.stopped is not None
    assert all(lane.ended is not None and lane.ended >= line.stopped for lane in cut)


@pytest.mark.anyio
async def test_the_fastest_answer_marks_the_cut_too() -> None:
    p = FakeProvider("f", {"fast": ["regression"], "slow": [(5.0, "regression")]})
    result = await make_engine(p).run(
        request(["f:fast", "f:slow", "f:slow"], n=3, aggregation=Aggregation.FASTEST)
    )
    assert result.stopped_at is not None and run_timeline(result).stopped is not None


def test_a_run_still_going_runs_its_open_lanes_to_now() -> None:
    calls = [
        CallResult(slot=0, model="m", queued_at=100.0, started_at=100.5, status=CallStatus.RUNNING),
        CallResult(slot=1, model="m", queued_at=100.0, status=CallStatus.PENDING),
    ]
    line = timeline(calls, started_at=100.0, now=102.0)
    assert line.now == 2.0
    running, waiting = line.lanes
    assert running.started == 0.5 and running.ended is None
    assert waiting.queued == 0.0 and waiting.started is None
    assert not line.empty
    assert timeline([CallResult(slot=0, model="m")]).empty


def test_the_store_keeps_the_moments(tmp_path: Path) -> None:
    import anyio

    p = FakeProvider(
        "f", {"a": [ProviderError("HTTP 503", status=503, retryable=True), ["x", "x"]]}
    )
    p.supports_n = True
    result = anyio.run(lambda: make_engine(p).run(request(["f:a"], n=2, early_stop=False)))
    with Store(f"sqlite:///{tmp_path / 't.db'}") as store:
        store.ensure_schema()
        store.save_run(result, source="test")
        back = store.get_run(result.run_id)
    assert back.decided_at == result.decided_at and back.stopped_at == result.stopped_at
    for before, after in zip(result.calls, back.calls, strict=True):
        assert after.queued_at == before.queued_at
        assert after.retry_at == before.retry_at and len(after.retry_at) == 1
        assert after.request_slot == before.request_slot == 0


@pytest.mark.anyio
async def test_the_call_table_says_where_a_shared_prompt_was_billed() -> None:
    from core.calls import call_rows

    p = FakeProvider("f", {"a": [["regression"] * 3]}, supports_n=True)
    result = await make_engine(p).run(request(["f:a"], n=3))
    first, *rest = call_rows(result.calls)
    assert first.tokens == "10 / 2"
    assert [r.tokens for r in rest] == ["prompt on slot 0 / 2"] * 2  # not "0 / 2"
