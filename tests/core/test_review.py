"""The review screen's logic: candidates grouped by label, the choices a reviewer has, the
checks a decision must pass before it is written, and the audit trail's rows."""

from __future__ import annotations

from typing import Any

from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.review import (
    agrees,
    audit_rows,
    candidate_groups,
    decision_problems,
    format_labels,
    label_choices,
    review_case,
    waiting_for,
)
from core.spec import RunSpec
from core.store import ReviewRow

LABEL_TASK: dict[str, Any] = {
    "name": "classify",
    "template": "{input}",
    "system": None,
    "format": {"kind": "label", "labels": ["regression", "no regression", "unsure"]},
}


def call(slot: int, model: str, status: CallStatus, answer: str | None, raw: str) -> CallResult:
    return CallResult(slot=slot, model=model, status=status, answer=answer, raw=raw)


def tied_run(task: dict[str, Any] | None = None) -> RunResult:
    calls = [
        call(0, "sim:sim-strong", CallStatus.OK, "regression", "Regression."),
        call(1, "sim:sim-fast", CallStatus.OK, "no regression", "no regression"),
        call(2, "sim:sim-mid", CallStatus.OK, "no regression", "**No regression**"),
        call(3, "sim:sim-flaky", CallStatus.INVALID, None, "<b>maybe</b>"),
        call(4, "sim:sim-biased", CallStatus.OK, "regression", "regression"),
        call(5, "sim:sim-fast", CallStatus.ERROR, None, None),
    ]
    return RunResult(
        run_id="r1",
        input="the page lost its footer",
        spec=RunSpec.from_json(
            {"task": task or LABEL_TASK, "panel": [c.model for c in calls], "policy": {}}
        ),
        decision=Decision(
            status=DecisionStatus.NEEDS_REVIEW,
            branches=["human"],
            tied=["regression", "no regression"],
            reason="tie between regression and no regression",
        ),
        votes={"regression": 2, "no regression": 2},
        calls=calls,
        cost_usd=0.001,
        latency_ms=120.0,
    )


def test_groups_count_ok_votes_by_label_and_mark_the_tied_ones() -> None:
    groups = candidate_groups(tied_run())
    assert [(g.label, g.count, g.tied) for g in groups] == [
        ("regression", 2, True),
        ("no regression", 2, True),
    ]
    assert groups[0].models == ["sim:sim-strong", "sim:sim-biased"]
    assert [c.raw for c in groups[1].calls] == ["no regression", "**No regression**"]


def test_groups_put_the_most_votes_first() -> None:
    run = tied_run()
    run.calls.append(call(6, "sim:sim-oracle", CallStatus.OK, "no regression", "no regression"))
    assert [g.label for g in candidate_groups(run)] == ["no regression", "regression"]


def test_a_model_sampled_twice_is_named_once() -> None:
    run = tied_run()
    run.calls.append(call(6, "sim:sim-strong", CallStatus.OK, "regression", "regression"))
    assert candidate_groups(run)[0].models == ["sim:sim-strong", "sim:sim-biased"]


def test_case_keeps_failed_and_invalid_calls_apart_and_visible() -> None:
    case = review_case(tied_run())
    assert [(c.slot, c.status) for c in case.not_counted] == [
        (3, CallStatus.INVALID),
        (5, CallStatus.ERROR),
    ]
    assert case.plurality is None  # a tie has no single plurality
    assert case.branches == ("human",)
    assert case.input == "the page lost its footer"


def test_choices_are_candidates_then_the_formats_other_labels() -> None:
    assert label_choices(tied_run()) == ["regression", "no regression", "unsure"]


def test_formats_without_a_closed_set_offer_only_candidates() -> None:
    number_task = {"name": "n", "template": "{input}", "format": {"kind": "number"}}
    run = tied_run(number_task)
    for c in run.calls:
        if c.answer is not None:
            c.answer = "42" if c.slot % 2 == 0 else "41"
    assert format_labels(number_task) == []
    assert label_choices(run) == ["42", "41"]
    assert format_labels({"format": {"kind": "yesno"}}) == ["yes", "no"]
    assert format_labels({}) == []


def test_a_complete_decision_has_no_problems() -> None:
    assert decision_problems("ana", "regression", "footer gone", ["regression"]) == {}


def test_each_missing_part_is_reported_on_its_own_field() -> None:
    problems = decision_problems("  ", "", " \n ", ["regression"])
    assert set(problems) == {"reviewer", "label", "reason"}
    assert "reason" in problems["reason"].lower()


def test_a_label_outside_the_choices_is_refused() -> None:
    problems = decision_problems(
        "ana", "maybe", "why not the other one", ["regression", "no regression"]
    )
    assert list(problems) == ["label"]
    assert "'maybe'" in problems["label"]


def review(label: str, plurality: str | None) -> ReviewRow:
    return ReviewRow(
        review_id=1,
        run_id="r1",
        reviewer="ana",
        label=label,
        reason="because",
        created_at=1_700_000_000.0,
        previous_status="needs_review",
        panel_plurality=plurality,
        previous_reason="tie: sent to a reviewer",
    )


def test_agreement_with_the_panels_plurality() -> None:
    assert agrees(review("a", "a")) is True
    assert agrees(review("b", "a")) is False
    assert agrees(review("a", None)) is None


def test_audit_rows_say_who_when_what_why() -> None:
    (row,) = audit_rows([review("b", "a")])
    assert row["reviewer"] == "ana"
    assert row["label"] == "b"
    assert row["reason"] == "because"
    assert row["agrees with panel"] == "no"
    assert row["panel's reason"] == "tie: sent to a reviewer"
    assert row["when"].startswith("2023-11-1")
    (tie,) = audit_rows([review("b", None)])
    assert tie["panel plurality"] == "none (tie)"
    assert tie["agrees with panel"] == "n/a"


def test_waiting_time_in_the_largest_whole_unit() -> None:
    assert waiting_for(1000.0, now=1045.0) == "45 s"
    assert waiting_for(1000.0, now=1000.0 + 12 * 60 + 5) == "12 min"
    assert waiting_for(1000.0, now=1000.0 + 3 * 3600 + 5) == "3 h"
    assert waiting_for(1000.0, now=1000.0 + 2 * 86400) == "2 d"
    assert waiting_for(2000.0, now=1000.0) == "0 s"
