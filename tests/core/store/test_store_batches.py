"""Batches: their inputs kept for resume, status, counts and accuracy against gold, the runs
already done; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.batch import batch_summary
from core.errors import InputError, NotFoundError
from core.panel import Panel
from core.policy import Policy, TieBreak
from core.result import CallResult, CallStatus, DecisionStatus, RunResult
from core.store import Store
from tests.specs import spec

MakeCall = Callable[..., CallResult]
MakeResult = Callable[..., RunResult]

ITEMS = [
    (0, "a", "first text", "yes"),
    (1, "b", "second text", "No"),
    (2, None, "third text", None),
    (3, "d", "fourth text", "yes"),
    (4, "e", "fifth text", "yes"),
]


def new_batch(store: Store) -> str:
    return store.create_batch(
        name="cases.csv",
        source="cli",
        spec=spec(["sim:a", "sim:b"], 3, policy=Policy(tie_breaks=(TieBreak(kind="human"),))),
        columns={"text": "text", "gold": "label", "id": None},
        concurrency=16,
        items=ITEMS,
    )


def test_create_and_read_a_batch(store: Store) -> None:
    bid = new_batch(store)
    info = store.get_batch(bid)
    assert (info.name, info.source, info.total, info.status) == ("cases.csv", "cli", 5, "running")
    assert info.finished_at is None and info.concurrency == 16
    assert info.spec.panel == Panel.build(["sim:a", "sim:b"], 3)
    assert info.spec.policy.tie_breaks == (TieBreak(kind="human"),)
    assert info.columns == {"text": "text", "gold": "label", "id": None}
    items = store.batch_items(bid)
    assert [(i.index, i.item_id, i.text, i.gold) for i in items] == ITEMS
    assert [b.batch_id for b in store.list_batches()] == [bid]

    store.set_batch_status(bid, "interrupted")
    assert store.get_batch(bid).status == "interrupted"
    assert store.get_batch(bid).finished_at is not None
    store.set_batch_status(bid, "running")
    assert store.get_batch(bid).finished_at is None
    with pytest.raises(InputError, match="unknown batch status 'paused'"):
        store.set_batch_status(bid, "paused")
    with pytest.raises(NotFoundError, match="no batch 'nope'"):
        store.set_batch_status("nope", "done")
    for read in (
        store.batch_items,
        store.batch_counts,
        store.batch_gold,
        store.batch_runs,
        store.batch_results,
    ):
        with pytest.raises(NotFoundError):
            read("nope")


def test_counts_runs_done_and_accuracy(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    bid = new_batch(store)
    outcomes = {
        0: (DecisionStatus.DECIDED, "YES "),  # gold yes: right, case and spaces aside
        1: (DecisionStatus.DECIDED, "yes"),  # gold No: wrong
        2: (DecisionStatus.TIE, None),  # no gold
        3: (DecisionStatus.NEEDS_REVIEW, None),  # gold yes: no label counts as wrong
    }
    for index, text, gold in [(i, t, g) for i, _, t, g in ITEMS]:
        store.start_run(
            f"{bid}-{index}",
            text,
            spec(["sim:a"], 3),
            source="batch",
            batch_id=bid,
            item_index=index,
            gold=gold,
        )
    for index, (status, label) in outcomes.items():
        calls = [make_call(i, cost_usd=None if index == 2 else 0.002) for i in range(3)]
        r = make_result(
            f"{bid}-{index}",
            calls,
            status=status,
            label=label,
            batch_id=bid,
            cost_usd=None if index == 2 else 0.006,
            gold=None,
        )
        store.finish_run(r)
    store.record_call(f"{bid}-4", make_call(0, status=CallStatus.RUNNING))

    counts = store.batch_counts(bid)
    assert counts["total"] == 5 and counts["started"] == 5
    assert counts["done"] == 4 and counts["running"] == 1
    assert (counts["decided"], counts["tie"], counts["needs_review"], counts["failed"]) == (
        2,
        1,
        1,
        0,
    )
    assert counts["calls"] == 13
    # one run's cost is unknown: the total is too, the known part is kept beside it
    assert counts["cost_usd"] is None and counts["unknown_cost_runs"] == 1
    assert counts["cost_known_usd"] == pytest.approx(0.018)
    assert set(store.batch_gold(bid)) == {(None, "yes", 1), ("YES ", "yes", 1), ("yes", "No", 1)}
    summary = batch_summary(store, bid)  # judged by the task's format: yes/no here
    assert (summary["with_gold"], summary["correct"]) == (3, 1)
    assert summary["accuracy"] == pytest.approx(1 / 3)

    assert store.runs_done(bid) == {0, 1, 2, 3}
    finished = store.batch_finished_calls(bid)
    assert sorted(finished) == [f"{bid}-{i}" for i in range(4)]  # run 4's call is in flight
    assert finished[f"{bid}-2"] == store.finished_calls(f"{bid}-2")
    assert store.batch_finished_calls("other") == {}
    assert store.runs_done("other") == set()
    rows = store.batch_runs(bid)
    assert [r.item_index for r in rows] == [0, 1, 2, 3, 4]
    assert rows[4].status == "running" and rows[1].gold == "No"
    results = store.batch_results(bid)
    assert [r.run_id for r in results] == [f"{bid}-{i}" for i in range(4)]
    assert all(len(r.calls) == 3 for r in results)


def test_counts_of_a_batch_without_gold_or_runs(store: Store) -> None:
    bid = store.create_batch(name="ui", source="ui", spec=spec(), concurrency=4, total=7)
    counts = store.batch_counts(bid)
    assert counts["total"] == 7 and counts["done"] == 0
    assert batch_summary(store, bid)["accuracy"] is None and store.batch_gold(bid) == []
    assert counts["calls"] == 0 and counts["cost_usd"] == 0.0
    assert store.batch_items(bid) == [] and store.get_batch(bid).spec == spec()
