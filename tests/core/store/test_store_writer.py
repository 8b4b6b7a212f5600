"""The batched writer: order, batching, flush, nothing lost on cancellation, failures raised,
on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from core.errors import StoreError
from core.result import CallResult, CallStatus, DecisionStatus, RunResult
from core.store import Store, StoreWriter
from tests.specs import spec

pytestmark = pytest.mark.anyio

MakeCall = Callable[..., CallResult]
MakeResult = Callable[..., RunResult]


async def test_runs_calls_and_decisions_land_in_order(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    """Many runs interleaved the way a fan-out interleaves them, through small batches."""
    runs = [f"run{i}" for i in range(40)]
    async with StoreWriter(store, max_batch=7, max_delay=0.001) as writer:
        for rid in runs:
            await writer.start_run(
                rid,
                f"text {rid}",
                spec(["sim:a"], 3, name="t"),
                source="batch",
                batch_id="B",
                item_index=int(rid[3:]),
            )
        for slot in range(3):
            for rid in runs:
                await writer.record_call(rid, make_call(slot, answer=f"{rid}/{slot}"))
                if slot == 2:
                    calls = [make_call(s, answer=f"{rid}/{s}") for s in range(3)]
                    await writer.finish_run(make_result(rid, calls, batch_id="B"), source="batch")
            await anyio.lowlevel.checkpoint()
    assert writer.pending == 0 and writer.committed == 40 * 5
    assert writer.batches >= 200 // 7
    for rid in runs:
        got = store.get_run(rid)
        assert [c.answer for c in got.calls] == [f"{rid}/{s}" for s in range(3)]
        assert got.decision.status == DecisionStatus.DECIDED
        assert store.get_run_row(rid).item_index == int(rid[3:])


async def test_ops_queued_together_are_written_together(store: Store, make_call: MakeCall) -> None:
    async with StoreWriter(store, max_batch=500) as writer:
        await writer.start_run("r", "x", spec(), source="library")
        for slot in range(999):  # queued without yielding: no commit can start in between
            await writer.record_call("r", make_call(slot))
        await writer.flush()
        assert writer.committed == 1000 and writer.batches == 2
        assert len(store.run_calls("r")) == 999


async def test_flush_waits_for_the_commit(store: Store, make_call: MakeCall) -> None:
    async with StoreWriter(store, max_delay=10.0) as writer:  # would linger 10 s unflushed
        await writer.start_run("r", "x", spec(), source="library")
        await writer.record_call("r", make_call(0))
        with anyio.fail_after(5):
            await writer.flush()
        assert [c.slot for c in store.run_calls("r")] == [0]
        await writer.flush()  # nothing queued: returns at once


async def test_cancelling_mid_way_still_writes_everything_queued(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    with anyio.CancelScope() as scope:
        async with StoreWriter(store, max_batch=50, max_delay=0.5) as writer:
            for i in range(30):
                await writer.start_run(f"r{i}", "x", spec(["sim:a"], 10), source="library")
                for slot in range(10):
                    await writer.record_call(f"r{i}", make_call(slot))
                if i % 2:
                    await writer.finish_run(make_result(f"r{i}", [make_call(s) for s in range(10)]))
                if i == 20:
                    await anyio.sleep(0.01)  # let some batches commit before the cut
            assert writer.pending > 0
            scope.cancel()
            await anyio.sleep(5)  # cancelled here, with batches in hand and queued
            pytest.fail("not cancelled")
    assert scope.cancelled_caught
    rows, total = store.list_runs(limit=100)
    assert total == 30
    assert sum(r.status == "decided" for r in rows) == 15
    assert all(len(store.run_calls(f"r{i}")) == 10 for i in range(30))


async def test_a_run_cancelled_from_outside_keeps_its_calls(
    store: Store, make_call: MakeCall
) -> None:
    """The engine's own shape: slot tasks write through the writer, the run is cancelled
    while half of them wait, and they record their cancellation in a shielded scope."""
    finished = 0
    async with StoreWriter(store, max_delay=0.2) as writer:
        await writer.start_run("r", "x", spec(["sim:a"], 8), source="library")
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def slot(i: int) -> None:
                    nonlocal finished
                    try:
                        if i >= 4:
                            await anyio.sleep_forever()
                        await writer.record_call("r", make_call(i))
                        finished += 1
                        if finished == 4:
                            scope.cancel()
                    except anyio.get_cancelled_exc_class():
                        cut = make_call(i, status=CallStatus.CANCELLED, answer=None)
                        with anyio.CancelScope(shield=True):
                            await writer.record_call("r", cut)
                        raise

                for i in range(8):
                    tg.start_soon(slot, i)
    statuses = [c.status for c in store.run_calls("r")]
    assert statuses == [CallStatus.OK] * 4 + [CallStatus.CANCELLED] * 4


async def test_a_failed_write_is_raised_from_flush_and_spares_the_rest(
    store: Store, make_call: MakeCall
) -> None:
    async with StoreWriter(store) as writer:
        await writer.start_run("r", "x", spec(), source="library")
        await writer.record_call("r", make_call(0))
        await writer.record_call("ghost", make_call(0))  # no such run: a foreign key error
        await writer.record_call("r", make_call(1))
        with pytest.raises(StoreError, match="1 store write"):
            await writer.flush()
        await writer.flush()  # reported once
    assert [c.slot for c in store.run_calls("r")] == [0, 1]


async def test_a_failed_write_is_raised_on_exit(store: Store, make_call: MakeCall) -> None:
    with pytest.raises(StoreError, match="store write"):
        async with StoreWriter(store) as writer:
            await writer.record_call("ghost", make_call(0))


async def test_the_body_error_wins_and_carries_the_write_failure(
    store: Store, make_call: MakeCall
) -> None:
    with pytest.raises(KeyError) as err:
        async with StoreWriter(store) as writer:
            await writer.record_call("ghost", make_call(0))
            raise KeyError("body")
    assert any("store write" in note for note in getattr(err.value, "__notes__", []))


async def test_a_broken_database_is_reported(tmp_path: object, make_call: MakeCall) -> None:
    store = Store(f"sqlite:///{tmp_path}/never-migrated.db")
    with pytest.raises(StoreError, match="no such table"):
        async with StoreWriter(store) as writer:
            await writer.start_run("r", "x", spec(), source="library")
            await writer.record_call("r", make_call(0))
    store.close()


async def test_what_is_stored_is_the_call_as_it_was_recorded(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    async with StoreWriter(store, max_delay=1.0) as writer:
        await writer.start_run("r", "x", spec(), source="library")
        c = make_call(0, status=CallStatus.ERROR, answer=None, error="503")
        await writer.record_call("r", c, cache_key="key")
        c.status, c.error = CallStatus.OK, None  # mutated after recording, before the commit
        await writer.flush()
        assert store.run_calls("r")[0].status == CallStatus.ERROR
        # the finished result carries the new state, so the call is written again
        await writer.finish_run(make_result("r", [c]))
    stored = store.run_calls("r")[0]
    assert stored.status == CallStatus.OK and stored.error is None
    assert store.cache_lookup(["key"])["key"] == stored  # the cache key survived


async def test_a_full_queue_waits_for_room(store: Store, make_call: MakeCall) -> None:
    async with StoreWriter(store, buffer=3, max_batch=2, max_delay=0) as writer:
        await writer.start_run("r", "x", spec(), source="library")
        for slot in range(50):
            await writer.record_call("r", make_call(slot))
    assert len(store.run_calls("r")) == 50 and writer.committed == 51


async def test_a_closed_writer_refuses_writes(store: Store, make_call: MakeCall) -> None:
    writer = StoreWriter(store)
    with pytest.raises(StoreError, match="not open"):
        await writer.record_call("r", make_call(0))
    async with writer:
        pass
    with pytest.raises(StoreError, match="not open"):
        await writer.record_call("r", make_call(0))
    with pytest.raises(RuntimeError):
        async with writer:
            pass


async def test_runs_left_unfinished_are_not_remembered_forever(
    store: Store, make_call: MakeCall, make_result: MakeResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.store.writer as writer_module

    monkeypatch.setattr(writer_module, "_TRACKED_RUNS", 2)
    async with StoreWriter(store) as writer:
        for i in range(5):
            await writer.start_run(f"r{i}", "x", spec(), source="library")
            await writer.record_call(f"r{i}", make_call(0, answer=f"first {i}"))
        assert len(writer._recorded) == 2
        for i in range(5):  # forgotten runs write their calls again: same result
            await writer.finish_run(make_result(f"r{i}", [make_call(0, answer=f"final {i}")]))
    assert [store.get_run(f"r{i}").calls[0].answer for i in range(5)] == [
        f"final {i}" for i in range(5)
    ]


async def test_cache_lookup_sees_recorded_calls_before_their_commit(
    store: Store, make_call: MakeCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.store.writer as writer_module

    store.start_run("old", "x", spec(), source="library")
    store.record_call("old", make_call(0, answer="stored"), cache_key="k-old")
    monkeypatch.setattr(writer_module, "_RECENT_KEYS", 2)
    async with StoreWriter(store, max_delay=10.0) as writer:  # nothing commits on its own
        await writer.start_run("r", "x", spec(), source="library")
        await writer.record_call("r", make_call(0, answer="first"), cache_key="k1")
        await writer.record_call("r", make_call(1, answer="second"), cache_key="k1")
        await writer.record_call("r", make_call(2, status=CallStatus.ERROR), cache_key="k2")
        got = await writer.cache_lookup(["k1", "k2", "k-old", "nope"])
        assert writer.pending > 0  # answered without a commit
        assert got["k1"] == make_call(1, answer="second") and got["k-old"].answer == "stored"
        assert set(got) == {"k1", "k-old"}
        for i in range(3):  # the memory is bounded; older keys fall back to the store
            await writer.record_call("r", make_call(10 + i, answer=str(i)), cache_key=f"m{i}")
        assert list(writer._recent) == ["m1", "m2"]
        await writer.flush()
        assert (await writer.cache_lookup(["k1"]))["k1"].answer == "second"


async def test_the_writers_memory_adds_nothing_to_garbage_collection(
    store: Store, make_call: MakeCall
) -> None:
    """A batch keeps tens of thousands of recorded calls in memory; held as rows of plain values,
    the collector does not track them, so they add nothing to every collection's work."""
    async with StoreWriter(store, max_delay=10.0) as writer:
        await writer.start_run("r", "x", spec(), source="library")
        for slot in range(3):
            await writer.record_call("r", make_call(slot), cache_key=f"k{slot}")
        held = [*writer._recent.values(), *writer._recorded["r"].values()]
        assert len(held) == 6 and not any(gc.is_tracked(row) for row in held)
