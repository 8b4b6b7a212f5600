"""A batch's answers matrix for the reliability fit: counted by the database, on SQLite and
PostgreSQL; invalid, failed and unfinished calls are not votes; reviews and gold come along."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.errors import NotFoundError
from core.result import CallResult, CallStatus, DecisionStatus, RunResult
from core.store import Store
from tests.specs import spec

MakeCall = Callable[..., CallResult]
MakeResult = Callable[..., RunResult]


def test_batch_answers_counts_valid_panel_votes(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    bid = store.create_batch(
        name="cases.csv",
        source="cli",
        spec=spec(["sim:a", "sim:b"], 4),
        concurrency=4,
        items=[(0, "x", "one", "yes"), (1, "y", "two", "no"), (2, None, "three", None)],
    )
    first = [
        make_call(0, "sim:a", "yes"),
        make_call(1, "sim:b", "no"),
        make_call(2, "sim:a", "yes", sample=1),
        make_call(3, "sim:b", None, status=CallStatus.INVALID),
        make_call(0, "sim:c", "no", phase="escalate"),
    ]
    second = [
        make_call(0, "sim:a", "no"),
        make_call(1, "sim:b", None, status=CallStatus.TIMEOUT),
        make_call(2, "sim:a", None, status=CallStatus.ERROR),
        make_call(3, "sim:b", "no"),
    ]
    store.save_run(make_result("r0", first, batch_id=bid, item_id="x", gold="yes"), source="cli")
    store.save_run(
        make_result(
            "r1", second, batch_id=bid, item_id="y", gold="no", status=DecisionStatus.RESOLVED
        ),
        source="cli",
    )
    store.start_run(
        "r2",
        "three",
        spec(),
        source="cli",
        batch_id=bid,
        item_id=None,
        item_index=2,
        gold=None,
    )
    store.record_call("r2", make_call(0, "sim:a", "yes"))

    answers = store.batch_answers(bid)

    assert answers.votes == {
        "r0": {"sim:a": {"yes": 2}, "sim:b": {"no": 1}},
        "r1": {"sim:a": {"no": 1}, "sim:b": {"no": 1}},
    }
    assert answers.calls == {"r0": 4, "r1": 4}  # escalations are not panel calls
    assert answers.gold == {"r0": "yes", "r1": "no"}
    assert answers.resolved == {"r1": "yes"}
    assert answers.item_ids == {"r0": "x", "r1": "y"}
    assert answers.models == ["sim:a", "sim:b"]
    assert answers.answers == 5


def test_batch_answers_of_an_unknown_batch(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no batch 'nope'"):
        store.batch_answers("nope")
