"""The review queue shared by several reviewers: oldest first, decisions recorded with the
identity, claims the others see, two decisions at once never overwriting each other, blind
double review, roles checked by the store, the audit trail append-only; on SQLite and
PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from typer.testing import CliRunner

from core.auth import ANONYMOUS, Identity, Role, local_identity
from core.cli import app
from core.errors import ConflictError, ForbiddenError, InputError, NotFoundError, NotSignedInError
from core.result import CallResult, Decision, DecisionStatus, RunResult
from core.store import Store
from core.store.export import export_reviews
from core.store.tables import review_t, run_t

MakeCall = Callable[..., CallResult]
MakeResult = Callable[..., RunResult]
REASON = "the page plainly regressed"


def person(name: str, *roles: Role) -> Identity:
    return Identity(
        issuer="https://idp.test",
        subject=f"sub-{name}",
        email=f"{name}@example.com",
        name=name.title(),
        roles=frozenset(roles or (Role.REVIEWER,)),
        signed_in=True,
    )


ANA, BO, CY = person("ana"), person("bo"), person("cy")
ADMIN = person("root", Role.ADMIN)


def waiting(
    run_id: str, make_call: MakeCall, make_result: MakeResult, *, blind: bool = False, **kw: object
) -> RunResult:
    calls = [make_call(0, "sim:a", "yes"), make_call(1, "sim:b", "no"), make_call(2, "sim:c", "no")]
    branch = "human:2" if blind else "human"
    decision = Decision(
        status=DecisionStatus.NEEDS_REVIEW,
        label=None,
        branches=[branch],
        reason="tie: sent to a reviewer",
        tied=["no", "yes"],
    )
    return make_result(run_id, calls, decision=decision, **kw)


def test_queue_decide_and_audit_trail(
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
    outcome = store.decide_review("early", ANA, label="yes", reason=f"  {REASON} ")
    assert (outcome.status, outcome.label) == ("resolved", "yes")
    resolved = store.get_run("early")
    assert resolved.decision.status == DecisionStatus.RESOLVED
    assert resolved.decision.label == "yes"
    assert resolved.decision.branches == ["human", "resolved by Ana"]
    assert resolved.decision.reason == REASON
    assert resolved.calls == queued.calls  # the candidates are untouched

    assert [r.run_id for r in store.review_queue()] == ["late"]  # never re-enters the queue
    (entry,) = store.reviews("early")
    assert (entry.reviewer, entry.label, entry.reason) == ("Ana", "yes", REASON)
    assert (entry.reviewer_issuer, entry.reviewer_subject, entry.reviewer_email) == (
        "https://idp.test",
        "sub-ana",
        "ana@example.com",
    )
    assert entry.stage == "single" and entry.seat is None
    assert entry.previous_status == "needs_review" and entry.panel_plurality == "no"
    assert entry.previous_reason == "tie: sent to a reviewer"  # the panel's, kept beside
    assert before <= entry.created_at <= time.time()
    assert store.reviews("decided") == []

    with pytest.raises(ConflictError, match=r"run early was already resolved by Ana as 'yes'"):
        store.decide_review("early", BO, label="no", reason="second thoughts on it")
    with pytest.raises(ConflictError, match="status: decided"):
        store.decide_review("decided", BO, label="no", reason="why not change it")
    assert len(store.reviews("early")) == 1  # the refused attempt left no trace
    assert store.get_run("early").decision.label == "yes"


@pytest.mark.parametrize(
    ("label", "reason", "message"),
    [
        ("yes", "", "Give a reason"),
        ("yes", " \n ", "Give a reason"),
        ("yes", "x", "of substance"),
        ("yes", "ok", "of substance"),
        ("yes", "regression", "of substance"),  # one word
        ("yes", "aaaa aaaa aaaa", "of substance"),  # no substance in the letters
        ("", REASON, "final label"),
        ("maybe", REASON, "'maybe' is not one of the allowed labels: yes, no"),
    ],
)
def test_decisions_without_substance_are_refused_and_nothing_is_written(
    store: Store,
    make_call: MakeCall,
    make_result: MakeResult,
    label: str,
    reason: str,
    message: str,
) -> None:
    store.save_run(waiting("w", make_call, make_result), source="ui")
    with pytest.raises(InputError, match=message):
        store.decide_review("w", ANA, label=label, reason=reason)
    assert [r.run_id for r in store.review_queue()] == ["w"]
    assert store.reviews("w") == []


def test_roles_are_checked_by_the_store(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    store.save_run(waiting("w", make_call, make_result), source="ui")
    with pytest.raises(NotSignedInError, match="sign in to resolve reviews"):
        store.decide_review("w", ANONYMOUS, label="yes", reason=REASON)
    with pytest.raises(NotSignedInError):
        store.claim_review("w", ANONYMOUS)
    viewer = person("vi", Role.VIEWER)
    runner = person("ru", Role.RUNNER)
    for who in (viewer, runner):
        with pytest.raises(ForbiddenError, match="needs the reviewer role"):
            store.decide_review("w", who, label="yes", reason=REASON)
    assert store.reviews("w") == [] and store.review_claims(["w"]) == {"w": []}
    assert store.decide_review("w", ADMIN, label="no", reason=REASON).status == "resolved"


def test_unknown_run(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no run 'ghost'"):
        store.decide_review("ghost", ANA, label="yes", reason=REASON)
    with pytest.raises(NotFoundError, match="no run 'ghost'"):
        store.claim_review("ghost", ANA)


def test_a_claim_is_a_lease_the_others_see(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    store.save_run(waiting("w", make_call, make_result), source="ui")
    claim = store.claim_review("w", ANA)
    assert claim.held_by(ANA) and claim.name == "Ana" and claim.seat == 1
    assert claim.expires_at > time.time()
    (shown,) = store.review_claims(["w"])["w"]
    assert shown.held_by(ANA) and "claimed by Ana until" in shown.describe()

    with pytest.raises(ConflictError, match="claimed by Ana until"):
        store.claim_review("w", BO)
    with pytest.raises(ConflictError, match=r"claimed by Ana until .*not written"):
        store.decide_review("w", BO, label="no", reason=REASON)
    renewed = store.claim_review("w", ANA)  # renewing keeps when it was first claimed
    assert renewed.claimed_at == claim.claimed_at and renewed.expires_at >= claim.expires_at

    store.release_review("w", ANA)
    assert store.review_claims(["w"]) == {"w": []}
    store.claim_review("w", BO, ttl_s=0.0)  # a claim that has run out holds nothing
    assert store.review_claims(["w"]) == {"w": []}
    assert store.claim_review("w", ANA).held_by(ANA)
    assert store.decide_review("w", ANA, label="no", reason=REASON).status == "resolved"
    assert store.review_claims(["w"]) == {"w": []}  # resolving frees the run's seats


def test_two_reviewers_at_once_resolve_a_run_once(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    """Four reviewers press Resolve together: one wins, the others are told who did, and the
    winner's label is the one kept."""
    store.save_run(waiting("w", make_call, make_result), source="ui")
    barrier = threading.Barrier(4)
    outcomes: dict[str, str] = {}
    reviewers = [person(f"r{i}") for i in range(4)]

    def review(who: Identity, label: str) -> None:
        barrier.wait()
        try:
            store.decide_review("w", who, label=label, reason=REASON)
            outcomes[who.subject] = "won"
        except ConflictError as err:
            outcomes[who.subject] = str(err)

    threads = [
        threading.Thread(target=review, args=(who, ("yes", "no")[i % 2]))
        for i, who in enumerate(reviewers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [s for s, o in outcomes.items() if o == "won"]
    assert len(winners) == 1 and len(outcomes) == 4
    (review_row,) = store.reviews("w")
    assert review_row.reviewer_subject == winners[0]
    for subject, told in outcomes.items():
        if subject != winners[0]:
            assert told.startswith(f"run w was already resolved by {review_row.reviewer} as ")
    assert store.get_run("w").decision.label == review_row.label
    assert len(store.get_run("w").decision.branches) == 2


def test_blind_double_review_agreeing_resolves(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    store.save_run(waiting("b", make_call, make_result, blind=True), source="ui")
    assert store.review_stages(store.review_queue())["b"].name == "blind"
    store.claim_review("b", ANA)
    assert store.claim_review("b", BO).seat == 2  # two seats: both decide at once
    with pytest.raises(ConflictError, match=r"claimed by Ana .*; claimed by Bo"):
        store.claim_review("b", CY)

    first = store.decide_review("b", ANA, label="no", reason=REASON)
    assert first.status == "recorded"
    assert store.get_run("b").decision.status == DecisionStatus.NEEDS_REVIEW  # still waiting
    assert store.review_stages(store.review_queue())["b"].owed == 1
    with pytest.raises(ConflictError, match="already gave your blind decision"):
        store.decide_review("b", ANA, label="no", reason="again, the same reading")

    second = store.decide_review("b", BO, label="no", reason="the panel's plurality holds")
    assert second.status == "resolved"
    run = store.get_run("b")
    assert (run.decision.status, run.decision.label) == (DecisionStatus.RESOLVED, "no")
    assert run.decision.branches[-1] == "resolved by Ana and Bo, who agreed blind"
    assert [(r.stage, r.seat) for r in store.reviews("b")] == [("blind", 1), ("blind", 2)]
    stats = store.review_stats()
    assert stats["blind_pairs"] == 1 and stats["blind_agreement"] == 1.0


def test_blind_double_review_disagreeing_goes_to_an_admin(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    store.save_run(waiting("b", make_call, make_result, blind=True), source="ui")
    assert store.decide_review("b", ANA, label="yes", reason=REASON).status == "recorded"
    assert store.decide_review("b", BO, label="no", reason=REASON).status == "escalated"
    stage = store.review_stages(store.review_queue())["b"]
    assert stage.name == "admin" and [r.label for r in stage.blind] == ["yes", "no"]
    with pytest.raises(ForbiddenError, match="needs the admin role"):
        store.decide_review("b", CY, label="no", reason=REASON)
    assert store.decide_review("b", ADMIN, label="no", reason=REASON).status == "resolved"
    assert [r.stage for r in store.reviews("b")] == ["blind", "blind", "admin"]
    assert store.get_run("b").decision.branches[-1].endswith("after a blind disagreement")
    stats = store.review_stats(since=0.0)
    assert stats["blind_pairs"] == 1 and stats["blind_agreement"] == 0.0


def test_review_stats(store: Store, make_call: MakeCall, make_result: MakeResult) -> None:
    assert store.review_stats() == {
        "waiting": 0,
        "resolved_today": 0,
        "agreement_with_plurality": None,
        "blind_pairs": 0,
        "blind_agreement": None,
    }
    for i in range(4):
        store.save_run(waiting(f"w{i}", make_call, make_result), source="ui")
    tie_votes = {"yes": 1, "no": 1}
    store.save_run(waiting("tie", make_call, make_result, votes=tie_votes), source="ui")
    store.decide_review("w0", ANA, label="no", reason="plurality was right here")
    cut = time.time()
    store.decide_review("w1", ANA, label="yes", reason="overruled the panel")
    store.decide_review("w2", BO, label="no", reason="agree with the panel")
    store.decide_review("tie", BO, label="yes", reason="no plurality to agree with")
    stats = store.review_stats()
    assert stats["waiting"] == 1 and stats["resolved_today"] == 4
    assert stats["agreement_with_plurality"] == pytest.approx(2 / 3)
    assert store.reviews("tie")[0].panel_plurality is None
    assert store.review_stats(since=cut)["resolved_today"] == 3
    assert store.review_stats(since=time.time() + 1)["resolved_today"] == 0


def test_the_audit_trail_is_append_only_in_the_database(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    store.save_run(waiting("w", make_call, make_result), source="ui")
    store.decide_review("w", local_identity("ana"), label="yes", reason="first reading of it")
    # a run sent back to review (by a re-vote, say) and resolved again keeps both reviews
    with store.engine.begin() as conn:
        conn.execute(update(run_t).where(run_t.c.id == "w").values(status="needs_review"))
    store.decide_review("w", local_identity("bo"), label="no", reason="second reading of it")
    assert [(r.reviewer, r.label) for r in store.reviews("w")] == [("ana", "yes"), ("bo", "no")]
    assert store.get_run("w").decision.branches == ["human", "resolved by ana", "resolved by bo"]
    for change in (
        update(review_t).values(label="no"),
        update(review_t).values(created_at=0.0),
        delete(review_t),
    ):
        with pytest.raises(SQLAlchemyError, match="append-only"), store.engine.begin() as conn:
            conn.execute(change)
    with store.engine.connect() as conn:
        assert conn.execute(select(review_t.c.label).order_by(review_t.c.id)).scalars().all() == [
            "yes",
            "no",
        ]
    out = io.StringIO()
    assert export_reviews(store, out, "jsonl") == 2
    exported = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["reviewer"], r["reviewer_issuer"], r["stage"]) for r in exported] == [
        ("ana", "local", "single"),
        ("bo", "local", "single"),
    ]
    out = io.StringIO()
    export_reviews(store, out, "csv")
    header = out.getvalue().splitlines()[0]
    assert header.startswith("review_id,run_id,created_at,stage,seat,reviewer,reviewer_issuer")


def test_tally_export_reviews_writes_the_trail_with_formulas_escaped(
    store: Store, store_url: str, make_call: MakeCall, make_result: MakeResult, tmp_path: Path
) -> None:
    """``tally export reviews`` writes every review with who, when, what and why; a reason a
    spreadsheet would run as a formula is written as text."""
    store.save_run(waiting("w", make_call, make_result), source="ui")
    hostile = '=HYPERLINK("http://x.invalid", "the footer") is gone'
    store.decide_review("w", ANA, label="yes", reason=hostile)
    out = tmp_path / "reviews.csv"
    result = CliRunner().invoke(app, ["export", "reviews", str(out), "--database-url", store_url])
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(out.open(encoding="utf-8")))
    assert (row["run_id"], row["reviewer"], row["label"]) == ("w", "Ana", "yes")
    assert (row["reviewer_issuer"], row["reviewer_subject"]) == ("https://idp.test", "sub-ana")
    assert row["reviewer_email"] == "ana@example.com" and row["stage"] == "single"
    assert row["reason"] == "'" + " ".join(hostile.split())
