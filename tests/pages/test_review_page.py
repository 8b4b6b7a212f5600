"""The Review page under AppTest: the queue, the candidates, the decision flow (a reason is
required, the decision is written with its audit row, the run leaves the queue for good) and
the counters."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from core.auth import local_identity
from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import Store

PAGE = "pages/review.py"
TASK = {
    "name": "classify",
    "template": "{input}",
    "system": None,
    "format": {
        "kind": "label",
        "labels": ["regression", "no regression", "needs a look"],
        "synonyms": {},
        "conservative_order": [],
    },
}
HOSTILE = "<script>alert(1)</script> ![x](http://127.0.0.1:9/x.png) **bold**"


def waiting_run(run_id: str, created_at: float, text: str = "the footer vanished") -> RunResult:
    calls = [
        CallResult(
            slot=0,
            model="sim:sim-strong",
            status=CallStatus.OK,
            answer="regression",
            raw="Regression: the footer is gone.",
        ),
        CallResult(
            slot=1,
            model="sim:sim-fast",
            status=CallStatus.OK,
            answer="no regression",
            raw=HOSTILE,
        ),
        CallResult(
            slot=2,
            model="sim:sim-flaky",
            status=CallStatus.ERROR,
            error="HTTP 503 from the provider",
        ),
    ]
    return RunResult(
        run_id=run_id,
        input=text,
        spec=RunSpec.from_json(
            {
                "task": TASK,
                "panel": [c.model for c in calls],
                "policy": {"tie_breaks": [{"kind": "human"}]},
            }
        ),
        decision=Decision(
            status=DecisionStatus.NEEDS_REVIEW,
            branches=["human"],
            tied=["regression", "no regression"],
            reason="tie between regression and no regression: sent to a reviewer",
        ),
        votes={"regression": 1, "no regression": 1},
        calls=calls,
        cost_usd=0.0012,
        latency_ms=900.0,
        created_at=created_at,
    )


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def all_text(at: AppTest) -> str:
    elements = [*at.markdown, *at.caption, *at.code, *at.success, *at.error]
    parts = [e.value for e in elements]
    return "\n".join(str(p) for p in parts)


def test_empty_queue(page_test: Callable[[str], AppTest], store: Store) -> None:
    at = page_test(PAGE).run()
    assert not at.exception
    assert metric(at, "Waiting") == "0"
    assert any("Nothing is waiting" in s.value for s in at.success)


def test_candidates_grouped_with_names_hidden_until_asked(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    store.save_run(waiting_run("r-one", 1000.0), source="ui")
    at = page_test(PAGE).run()
    assert not at.exception
    assert metric(at, "Waiting") == "1"
    text = all_text(at)
    assert "**regression** · 1 vote" in text
    assert "**no regression** · 1 vote" in text
    assert "sim-strong" not in text and "sim-fast" not in text  # names hidden by default
    codes = [c.value for c in at.code]
    assert "the footer vanished" in codes  # the input, as plain text
    assert HOSTILE in codes  # a hostile reply is shown as inert text, verbatim
    assert "Calls not counted (1)" in [e.label for e in at.expander]

    at.toggle(key="review_reveal").set_value(True).run()
    text = all_text(at)
    assert "sim\\-strong" in text and "sim\\-fast" in text


def test_decision_needs_a_reason_then_resolves_with_an_audit_row(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    store.save_run(waiting_run("r-one", 1000.0), source="ui")
    store.save_run(waiting_run("r-two", 2000.0, "second case"), source="ui")
    at = page_test(PAGE).run()
    assert at.selectbox(key="review_pick").value == "r-one"  # oldest first
    assert at.selectbox(key="review_label_r-one").options == [
        "regression",
        "no regression",
        "needs a look",
    ]

    # no name, no label, no reason: three messages, nothing written
    at.button(key="review_resolve_r-one").click().run()
    errors = [e.value for e in at.error]
    assert any("Enter your name" in e for e in errors)
    assert any("Pick the final label" in e for e in errors)
    assert any("Give a reason" in e for e in errors)
    assert [r.run_id for r in store.review_queue()] == ["r-one", "r-two"]

    # a name and a label but an empty reason: refused, still nothing written
    at.text_input(key="review_name").input("Ana").run()
    at.selectbox(key="review_label_r-one").select("needs a look").run()
    at.text_area(key="review_reason_r-one").input("   ").run()
    at.button(key="review_resolve_r-one").click().run()
    assert [e.value for e in at.error] == [
        "Give a reason: the audit trail records why, not only what."
    ]
    assert store.reviews("r-one") == []

    at.text_area(key="review_reason_r-one").input("the footer is optional on this page").run()
    at.button(key="review_resolve_r-one").click().run()
    assert not at.exception
    assert not at.error
    assert any("Resolved run r\\-one" in s.value for s in at.success)

    resolved = store.get_run("r-one")
    assert resolved.decision.status == DecisionStatus.RESOLVED
    assert resolved.decision.label == "needs a look"
    (row,) = store.reviews("r-one")
    assert (row.reviewer, row.label, row.reason) == (
        "Ana",
        "needs a look",
        "the footer is optional on this page",
    )
    assert row.previous_status == "needs_review"
    assert [r.run_id for r in store.review_queue()] == ["r-two"]  # left the queue for good

    # the page now shows the next run, the counters, and the audit trail of the resolved one
    assert at.selectbox(key="review_pick").value == "r-two"
    assert "r-one" not in at.selectbox(key="review_pick").options
    assert metric(at, "Waiting") == "1"
    assert metric(at, "Resolved today") == "1"
    assert at.selectbox(key="review_resolved_pick").value == "r-one"
    audit = at.dataframe[-1].value
    assert list(audit["reviewer"]) == ["Ana"]
    assert list(audit["reason"]) == ["the footer is optional on this page"]
    assert list(audit["agrees with panel"]) == ["n/a"]  # an exact tie has no plurality

    # the reviewer's name is kept for the next decision
    assert at.text_input(key="review_name").value == "Ana"


def test_a_run_resolved_elsewhere_meanwhile_is_not_resolved_twice(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    store.save_run(waiting_run("r-one", 1000.0), source="ui")
    at = page_test(PAGE).run()
    at.text_input(key="review_name").input("Ana").run()
    at.selectbox(key="review_label_r-one").select("no regression").run()
    at.text_area(key="review_reason_r-one").input("second opinion").run()
    store.decide_review(
        "r-one", local_identity("Bo"), label="regression", reason="the footer is required"
    )
    at.button(key="review_resolve_r-one").click().run()
    assert not at.exception
    assert any("r\\-one is no longer waiting" in i.value for i in at.info)
    assert any("Nothing is waiting" in s.value for s in at.success)
    assert [r.reviewer for r in store.reviews("r-one")] == ["Bo"]  # the second one was not kept


def test_agreement_counter(page_test: Callable[[str], AppTest], store: Store) -> None:
    run = waiting_run("r-plural", 1000.0)
    run.votes = {"regression": 2, "no regression": 1}  # e.g. a strict majority not reached
    store.save_run(run, source="ui")
    store.decide_review(
        "r-plural", local_identity("Bo"), label="regression", reason="two of three say so"
    )
    at = page_test(PAGE).run()
    assert metric(at, "Reviewers agree with the panel") == "100%"
    assert metric(at, "Resolved today") == "1"
