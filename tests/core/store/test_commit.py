"""The committer's upserts (staged through COPY on PostgreSQL) against ``Store.write``'s: the same
batches must leave the same rows, whichever way they went."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from core.result import CallResult, CallStatus, RunResult
from core.store import Store
from core.store.commit import Call, Committer, Finish, Outcome, Start, Write, write_batch
from core.store.tables import call_row, call_t, finish_row, run_t, start_row
from tests.specs import spec

MakeCall = Callable[..., CallResult]
MakeResult = Callable[..., RunResult]


def start(run_id: str, input: str = "the input", **kw: Any) -> Start:
    fields: dict[str, Any] = {
        "source": "batch",
        "batch_id": None,
        "item_id": None,
        "item_index": 3,
        "gold": None,
        "created_at": 1.0,
    }
    fields.update(kw)
    return Start(start_row(run_id, input, spec(["sim:a"], name="t"), **fields))


def history(run_id: str, make_call: MakeCall, make_result: MakeResult) -> list[list[Write]]:
    """Commits that overlap the way a batch's do: a start met again, a call recorded twice, a
    finish that repeats a call and leaves the batch and the cache key out."""
    ok = make_call(0)
    failed = make_call(1, status=CallStatus.ERROR, answer=None, error="timeout")
    retried = make_call(1, retries=1)
    done = make_result(run_id, [ok, retried], batch_id=None, input="the input")
    return [
        [start(run_id, batch_id="b1", gold="yes")],
        [
            start(run_id, input="a start met again is ignored"),
            Call({**call_row(run_id, ok), "cache_key": "k0"}),
            Call({**call_row(run_id, failed), "cache_key": None}),
            Call({**call_row(run_id, retried), "cache_key": "k1"}),  # the last one wins
        ],
        [Finish(finish_row(done, source="batch", finished_at=2.0), [call_row(run_id, ok)])],
    ]


def stored(store: Store, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with store.engine.connect() as conn:
        run = conn.execute(select(run_t).where(run_t.c.id == run_id)).mappings().one()
        calls = conn.execute(
            select(call_t).where(call_t.c.run_id == run_id).order_by(call_t.c.slot)
        ).mappings()
        return (
            {k: v for k, v in run.items() if k != "id"},
            [{k: v for k, v in c.items() if k not in ("id", "run_id")} for c in calls],
        )


def test_the_committer_and_store_write_leave_the_same_rows(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    committer = Committer(store.target())
    try:
        for ops in history("by-committer", make_call, make_result):
            assert committer.commit(ops).failed == 0
    finally:
        committer.close()
    for ops in history("by-store", make_call, make_result):
        store.write(write_batch(ops))

    run, calls = stored(store, "by-committer")
    assert (run, calls) == stored(store, "by-store")
    assert run["input"] == "the input" and run["status"] == "decided"
    assert run["batch_id"] == "b1" and run["gold"] == "yes"  # kept from the start
    assert [(c["status"], c["retries"], c["cache_key"]) for c in calls] == [
        ("ok", 0, "k0"),  # the finish's copy left the cache key alone
        ("ok", 1, "k1"),
    ]


def test_a_committer_that_reconnects_stages_again(store: Store, make_call: MakeCall) -> None:
    """The staging tables live as long as a connection: a new one must get its own."""
    committer = Committer(store.target())
    try:
        assert committer.commit([start("r")]).failed == 0
        committer.close(lost=True)
        assert committer.commit([Call({**call_row("r", make_call(0)), "cache_key": None})]) == (
            Outcome()
        )
    finally:
        committer.close()
    assert len(stored(store, "r")[1]) == 1
