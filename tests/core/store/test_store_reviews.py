"""The review queue: oldest first, resolution with an audit trail, never back in the queue,
bad input refused, counters; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select, update

from core.errors import InputError, NotFoundError
from core.result import CallResult, Decision, DecisionStatus, RunResult
from core.store import Store
from core.store.tables import review_t, run_t

MakeCall = Callable[..., CallResult]
MakeResult = Callable[..., RunResult]


def waiting(run_id: str, make_call: MakeCall, make_result: MakeResult, **kw: object) -> RunResult:
    calls = [make_call(0, "sim:a", "yes"), make_call(1, "sim:b", "no"), make_call(2, "sim:c", "no")]
    decision = Decision(
        status=DecisionStatus.NEEDS_REVIEW,
        label=None,
        branches=["human"],
        reason="tie: sent to a reviewer",
        tied=["no", "yes"],
    )
    return make_result(run_id, calls, decision=decision, **kw)


def test_queue_resolve_and_audit_trail(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    store.save_run(waiting("late", make_call, make_result, created_at=2000.0), source="ui")
    store.save_run(waiting("early", make_call, make_result, created_at=1000.0), source="cli")
    store.save_run(make_result("decided"), source="cli")
    assert [r.run_id for r in store.review_queue()] == ["early", "late"]
    assert [r.run_id for r in store.review_queue(limit=1)] == ["early"]
    queued = store.review_queue()[0]
    assert len(queued.calls) == 3 and queued.votes == {"yes": 1, "no": 2}

    before = time.time()
    resolved = store.resolve("early", reviewer=" ana ", label="yes", reason=" the page regressed ")
    assert resolved.decision.status == DecisionStatus.RESOLVED
    assert resolved.decision.label == "yes"
    assert resolved.decision.branches == ["human", "resolved by ana"]
    assert resolved.decision.reason == "the page regressed"
    assert resolved.calls == queued.calls  # the candidates are untouched

    assert [r.run_id for r in store.review_queue()] == ["late"]  # never re-enters the queue
    trail = store.reviews("early")
    assert len(trail) == 1
    entry = trail[0]
    assert (entry.reviewer, entry.label, entry.reason) == ("ana", "yes", "the page regressed")
    assert entry.previous_status == "needs_review" and entry.panel_plurality == "no"
    assert entry.previous_reason == "tie: sent to a reviewer"  # the panel's, kept beside
    assert before <= entry.created_at <= time.time()
    assert store.reviews("decided") == []

    with pytest.raises(
        InputError, match=r"run early is not waiting for review \(status: resolved\)"
    ):
        store.resolve("early", reviewer="bo", label="no", reason="second thoughts")
    with pytest.raises(InputError, match="status: decided"):
        store.resolve("decided", reviewer="bo", label="no", reason="why not")
    assert len(store.reviews("early")) == 1  # the refused attempt left no trace
    assert store.get_run("early").decision.label == "yes"


@pytest.mark.parametrize(
    ("reviewer", "label", "reason", "message"),
    [
        ("", "yes", "because", "reviewer's name"),
        ("   ", "yes", "because", "reviewer's name"),
        ("ana", "yes", "", "needs a reason"),
        ("ana", "yes", " \n ", "needs a reason"),
        ("ana", "", "because", "final label"),
    ],
)
def test_resolve_refuses_incomplete_reviews(
    store: Store,
    make_call: MakeCall,
    make_result: MakeResult,
    reviewer: str,
    label: str,
    reason: str,
    message: str,
) -> None:
    store.save_run(waiting("w", make_call, make_result), source="ui")
    with pytest.raises(InputError, match=message):
        store.resolve("w", reviewer=reviewer, label=label, reason=reason)
    assert [r.run_id for r in store.review_queue()] == ["w"]
    assert store.reviews("w") == []


def test_resolve_unknown_run(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no run 'ghost'"):
        store.resolve("ghost", reviewer="ana", label="yes", reason="r")


def test_two_reviewers_at_once_resolve_a_run_once(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    store.save_run(waiting("w", make_call, make_result), source="ui")
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def review(name: str) -> None:
        barrier.wait()
        try:
            store.resolve("w", reviewer=name, label="no", reason="checked")
            outcomes.append("ok")
        except InputError:
            outcomes.append("refused")

    threads = [threading.Thread(target=review, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]
    assert len(store.reviews("w")) == 1
    assert len(store.get_run("w").decision.branches) == 2


def test_review_stats(store: Store, make_call: MakeCall, make_result: MakeResult) -> None:
    assert store.review_stats() == {
        "waiting": 0,
        "resolved_today": 0,
        "agreement_with_plurality": None,
    }
    for i in range(4):
        store.save_run(waiting(f"w{i}", make_call, make_result), source="ui")
    tie_votes = {"yes": 1, "no": 1}
    store.save_run(waiting("tie", make_call, make_result, votes=tie_votes), source="ui")
    store.resolve("w0", reviewer="ana", label="no", reason="plurality was right")
    store.resolve("w1", reviewer="ana", label="yes", reason="overruled")
    store.resolve("w2", reviewer="bo", label="no", reason="agree")
    store.resolve("tie", reviewer="bo", label="yes", reason="no plurality to agree with")
    stats = store.review_stats()
    assert stats["waiting"] == 1 and stats["resolved_today"] == 4
    assert stats["agreement_with_plurality"] == pytest.approx(2 / 3)
    assert store.reviews("tie")[0].panel_plurality is None

    # a review from yesterday is not "today"
    with store.engine.begin() as conn:
        first = conn.execute(select(review_t.c.id).order_by(review_t.c.id)).scalars().first()
        conn.execute(
            update(review_t).where(review_t.c.id == first).values(created_at=time.time() - 2e5)
        )
    assert store.review_stats()["resolved_today"] == 3
    assert store.review_stats(since=0.0)["resolved_today"] == 4


def test_review_rows_are_only_inserted(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    store.save_run(waiting("w", make_call, make_result), source="ui")
    store.resolve("w", reviewer="ana", label="yes", reason="first")
    # a run sent back to review (by a re-vote, say) and resolved again keeps both reviews
    with store.engine.begin() as conn:
        conn.execute(update(run_t).where(run_t.c.id == "w").values(status="needs_review"))
    store.resolve("w", reviewer="bo", label="no", reason="second")
    assert [(r.reviewer, r.label) for r in store.reviews("w")] == [("ana", "yes"), ("bo", "no")]
    assert store.get_run("w").decision.branches == ["human", "resolved by ana", "resolved by bo"]
