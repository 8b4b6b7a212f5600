"""Aggregation, quorum rules, early stop and the offline tie-break branches, case by case."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from core.errors import PolicyError
from core.formats import (
    MISSING,
    AnswerFormat,
    JsonFormat,
    LabelFormat,
    NumberFormat,
    TextFormat,
    YesNoFormat,
)
from core.policy import Acceptance, Aggregation, Policy, Quorum, TieBreak
from core.result import CallResult, CallStatus, Decision, DecisionStatus
from core.voting import (
    TEXT_REFUSED,
    acceptable,
    apply_offline_branch,
    check_policy,
    count_votes,
    decide,
    field_votes,
    is_settled,
    record_branch,
)

LABELS = LabelFormat(
    labels=("regression", "no regression", "unsure"),
    conservative_order=("regression", "unsure"),
)
ABC = LabelFormat(labels=("a", "b", "c", "d", "e"))
SCHEMA = {
    "type": "object",
    "properties": {"kind": {"type": "string"}, "size": {"type": "integer"}},
    "required": ["kind"],
}
JSON = JsonFormat.model_validate({"schema": SCHEMA})

_STATUS = {
    "!invalid": CallStatus.INVALID,
    "!error": CallStatus.ERROR,
    "!timeout": CallStatus.TIMEOUT,
    "!cancelled": CallStatus.CANCELLED,
    "!running": CallStatus.RUNNING,
}


def calls(*outcomes: str, models: Sequence[str] = ("sim:a",)) -> list[CallResult]:
    """One call per outcome: a vote, or ``!invalid`` / ``!error`` / ``!timeout`` / ``!cancelled``.

    Slot i ends at time 100 + i and uses ``models[i % len(models)]``.
    """
    out = []
    for i, outcome in enumerate(outcomes):
        status = _STATUS.get(outcome, CallStatus.OK)
        out.append(
            CallResult(
                slot=i,
                model=models[i % len(models)],
                status=status,
                answer=outcome if status == CallStatus.OK else None,
                ended_at=100.0 + i,
            )
        )
    return out


def policy(agg: Aggregation = Aggregation.MAJORITY, **kwargs: object) -> Policy:
    return Policy.model_validate({"aggregation": agg, **kwargs})


def outcome(decision: Decision) -> tuple[DecisionStatus, str | None]:
    return decision.status, decision.label


# -- counting -------------------------------------------------------------------------------


def test_count_votes_orders_by_count_then_first_appearance() -> None:
    votes = calls("b", "a", "!invalid", "a", "c", "b", "!error", "d", "!cancelled")
    counted = count_votes(votes, ABC)
    assert counted == {"b": 2, "a": 2, "c": 1, "d": 1}
    assert list(counted) == ["b", "a", "c", "d"]


def test_count_votes_groups_numbers_within_tolerance() -> None:
    fmt = NumberFormat(tolerance=0.5)
    assert count_votes(calls("10", "10.2", "10.4", "12", "12"), fmt) == {"10.2": 3, "12": 2}


def test_count_votes_of_nothing() -> None:
    assert count_votes([], ABC) == {}
    assert count_votes(calls("!error", "!invalid"), ABC) == {}


def test_field_votes_only_for_json() -> None:
    assert field_votes(calls("a"), ABC) is None
    votes = calls('{"kind":"bug","size":1}', '{"kind":"bug","size":2}', '{"kind":"ui"}', "!invalid")
    assert field_votes(votes, JSON) == {
        "kind": {'"bug"': 2, '"ui"': 1},
        "size": {"1": 1, "2": 1, MISSING: 1},
    }
    assert count_votes(votes, JSON) == {
        '{"kind":"bug","size":1}': 1,
        '{"kind":"bug","size":2}': 1,
        '{"kind":"ui"}': 1,
    }


# -- majority ---------------------------------------------------------------------------------


def test_majority_decides_the_plurality() -> None:
    d = decide(calls("a", "b", "a", "c", "a"), policy(), ABC)
    assert outcome(d) == (DecisionStatus.DECIDED, "a")
    assert d.margin == 2
    assert d.branches == [] and d.tied == []
    assert "3 of 5" in d.reason


def test_majority_plurality_need_not_be_half() -> None:
    d = decide(calls("a", "a", "b", "c", "d"), policy(), ABC)
    assert outcome(d) == (DecisionStatus.DECIDED, "a")
    assert d.margin == 1


def test_majority_tie_is_reported_not_broken() -> None:
    d = decide(calls("b", "a", "a", "b", "c"), policy(), ABC)
    assert outcome(d) == (DecisionStatus.TIE, None)
    assert d.tied == ["b", "a"]
    assert d.margin == 0
    assert "tie between b | a" in d.reason


def test_majority_every_vote_differs_is_no_convergence() -> None:
    d = decide(calls("a", "b", "c"), policy(), ABC)
    assert outcome(d) == (DecisionStatus.NO_CONVERGENCE, None)
    assert sorted(d.tied) == ["a", "b", "c"]
    # two votes that differ are a tie, not a failure to converge
    assert decide(calls("a", "b"), policy(), ABC).status == DecisionStatus.TIE


def test_majority_single_vote_decides() -> None:
    d = decide(calls("a", "!error", "!invalid"), policy(), ABC)
    assert outcome(d) == (DecisionStatus.DECIDED, "a")


def test_failed_and_invalid_calls_do_not_vote_in_a_majority() -> None:
    votes = calls("a", "a", "b", "!invalid", "!invalid", "!error", "!timeout")
    assert outcome(decide(votes, policy(), ABC)) == (DecisionStatus.DECIDED, "a")


def test_no_valid_vote_fails() -> None:
    d = decide(calls("!invalid", "!error", "!timeout", "!cancelled"), policy(), ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "no valid vote" in d.reason and "1 invalid, 2 failed" in d.reason
    assert decide([], policy(), ABC).status == DecisionStatus.FAILED


def test_min_valid_quorum() -> None:
    votes = calls("a", "a", "!error", "!invalid", "!timeout")
    strict_quorum = policy(quorum=Quorum(min_valid=3))
    d = decide(votes, strict_quorum, ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "no quorum: 2 valid votes, 3 needed" in d.reason
    assert decide(votes, policy(quorum=Quorum(min_valid=2)), ABC).status == DecisionStatus.DECIDED


def test_pending_and_running_calls_are_not_counted() -> None:
    votes = calls("a", "!running", "b", "b")
    assert outcome(decide(votes, policy(), ABC)) == (DecisionStatus.DECIDED, "b")


def test_numbers_vote_after_grouping() -> None:
    fmt = NumberFormat(tolerance=1)
    d = decide(calls("41.5", "42", "42.5", "50", "51.5"), policy(), fmt)
    assert outcome(d) == (DecisionStatus.DECIDED, "42")


def test_an_ambiguous_number_grouping_is_said_in_the_reason() -> None:
    fmt = NumberFormat(tolerance=1)
    chain = decide(calls("1", "2", "3", "2"), policy(), fmt)  # 1~2~3, but 1 and 3 differ by 2
    assert "ambiguous grouping" in chain.reason and "\n" not in chain.reason
    clear = decide(calls("41.5", "42", "42.5", "50", "51.5"), policy(), fmt)
    assert "ambiguous" not in clear.reason


def test_one_outlier_does_not_split_a_numeric_consensus() -> None:
    fmt = NumberFormat(tolerance=0.5)
    d = decide(calls("1", "1.5", "1.6", "1.6"), policy(), fmt)
    assert outcome(d) == (DecisionStatus.DECIDED, "1.6")


def test_yesno_majority() -> None:
    d = decide(calls("yes", "no", "yes"), policy(), YesNoFormat())
    assert outcome(d) == (DecisionStatus.DECIDED, "yes")


# -- strict majority --------------------------------------------------------------------------

STRICT = Aggregation.STRICT


def test_strict_majority_decides_over_half() -> None:
    d = decide(calls("a", "b", "a", "c", "a"), policy(STRICT), ABC)
    assert outcome(d) == (DecisionStatus.DECIDED, "a")
    assert "3 of 5 counted votes" in d.reason


def test_strict_majority_split_is_a_threshold_not_met_even_when_it_ties() -> None:
    d = decide(calls("a", "b", "a", "b", "c"), policy(STRICT), ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert d.reason.startswith("threshold not met: a | b have 2 of 5")
    assert d.tied == ["a", "b", "c"]  # every answer stays a candidate for the chain


def test_strict_majority_not_met_fails() -> None:
    d = decide(calls("a", "a", "a", "b", "b", "c", "c"), policy(STRICT), ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "threshold not met: a has 3 of 7" in d.reason


def test_strict_half_is_not_more_than_half() -> None:
    d = decide(calls("a", "a", "b", "c"), policy(STRICT), ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)


def test_strict_counts_invalid_only_when_told() -> None:
    votes = calls("a", "a", "a", "b", "!invalid", "!invalid")
    assert decide(votes, policy(STRICT), ABC).status == DecisionStatus.DECIDED
    counted = policy(STRICT, quorum=Quorum(count_invalid=True))
    d = decide(votes, counted, ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "3 of 6" in d.reason
    # Counting errors does not count invalid replies.
    assert decide(votes, policy(STRICT, quorum=Quorum(count_errors=True)), ABC).label == "a"


def test_strict_counts_errors_and_timeouts_but_never_cancelled_calls() -> None:
    votes = calls("a", "a", "a", "b", "!error", "!timeout", "!cancelled", "!cancelled")
    counted = policy(STRICT, quorum=Quorum(count_errors=True))
    assert decide(votes, counted, ABC).status == DecisionStatus.FAILED  # 3 of 6
    fewer = calls("a", "a", "a", "b", "!error", "!cancelled", "!cancelled", "!cancelled")
    assert outcome(decide(fewer, counted, ABC)) == (DecisionStatus.DECIDED, "a")  # 3 of 5


def test_strict_one_vote_against_counted_errors() -> None:
    votes = calls("a", "!error", "!error")
    counted = policy(STRICT, quorum=Quorum(min_valid=1, count_errors=True))
    assert outcome(decide(votes, counted, ABC)) == (DecisionStatus.FAILED, None)
    one = policy(STRICT, quorum=Quorum(min_valid=1))
    assert outcome(decide(votes, one, ABC)) == (DecisionStatus.DECIDED, "a")
    # by default strict needs half the panel: one valid vote of three does not decide
    assert outcome(decide(votes, policy(STRICT), ABC)) == (DecisionStatus.FAILED, None)


# -- at least k -------------------------------------------------------------------------------


def at_least(k: int, **kwargs: object) -> Policy:
    return policy(Aggregation.AT_LEAST, k=k, **kwargs)


def test_at_least_k_decides() -> None:
    d = decide(calls("a", "b", "a", "b", "a"), at_least(3), ABC)
    assert outcome(d) == (DecisionStatus.DECIDED, "a")
    assert "at least 3" in d.reason


def test_at_least_k_not_reached_fails() -> None:
    d = decide(calls("a", "a", "b", "c", "!error"), at_least(3), ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "threshold not met: a has 2 votes, 3 needed" in d.reason


def test_at_least_k_tie_below_k_is_a_threshold_not_met() -> None:
    d = decide(calls("a", "a", "b", "b", "c"), at_least(3), ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert d.reason.startswith("threshold not met")


def test_at_least_k_tie_above_k_is_a_tie() -> None:
    d = decide(calls("a", "a", "b", "b"), at_least(2), ABC)
    assert outcome(d) == (DecisionStatus.TIE, None)
    assert d.tied == ["a", "b"]


def test_at_least_one_with_all_different_is_no_convergence() -> None:
    assert decide(calls("a", "b", "c"), at_least(1), ABC).status == DecisionStatus.NO_CONVERGENCE


# -- weighted ---------------------------------------------------------------------------------

WEIGHTED = Aggregation.WEIGHTED
MODELS = ("big:m", "small:m", "small:m")


def test_weighted_votes_follow_the_weights() -> None:
    votes = calls("a", "b", "b", models=MODELS)
    weights = {"big:m": 3.0, "small:m": 1.0}
    d = decide(votes, policy(WEIGHTED), ABC, weights)
    assert outcome(d) == (DecisionStatus.DECIDED, "a")
    assert d.margin == 1
    assert "weight 3 of 5" in d.reason
    # The same votes by plain majority go the other way.
    assert decide(votes, policy(), ABC, weights).label == "b"


def test_weighted_default_weight_is_one() -> None:
    votes = calls("a", "b", "b", models=MODELS)
    assert decide(votes, policy(WEIGHTED), ABC).label == "b"
    assert decide(votes, policy(WEIGHTED), ABC, {"big:m": 1.5}).label == "b"


def test_weighted_tie_is_exact_in_decimal() -> None:
    votes = calls("a", "a", "b", models=("w1", "w2", "w3"))
    weights = {"w1": 0.1, "w2": 0.2, "w3": 0.3}
    d = decide(votes, policy(WEIGHTED), ABC, weights)
    assert outcome(d) == (DecisionStatus.TIE, None)
    assert "weight each" in d.reason


def test_weighted_every_vote_differs_is_no_convergence() -> None:
    votes = calls("a", "b", "c", models=(*MODELS, "other:m"))
    d = decide(votes, policy(WEIGHTED), ABC, {"big:m": 5.0})
    assert d.status == DecisionStatus.NO_CONVERGENCE


def test_weighted_rejects_negative_or_infinite_weights() -> None:
    votes = calls("a", "b", "b", models=MODELS)
    with pytest.raises(PolicyError, match="weight"):
        decide(votes, policy(WEIGHTED), ABC, {"big:m": -1.0})
    with pytest.raises(PolicyError, match="weight"):
        decide(votes, policy(WEIGHTED), ABC, {"big:m": float("inf")})


# -- unanimous --------------------------------------------------------------------------------

UNANIMOUS = Aggregation.UNANIMOUS


def test_unanimous_decides_when_all_agree() -> None:
    d = decide(calls("a", "a", "a", "!invalid", "!cancelled"), policy(UNANIMOUS), ABC)
    assert outcome(d) == (DecisionStatus.DECIDED, "a")


def test_unanimous_one_dissent_fails() -> None:
    d = decide(calls("a", "a", "a", "b"), policy(UNANIMOUS), ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "not unanimous: a 3, b 1" in d.reason


def test_unanimous_split_in_two_equal_halves_is_a_threshold_not_met() -> None:
    d = decide(calls("a", "b", "a", "b"), policy(UNANIMOUS), ABC)
    assert d.status == DecisionStatus.FAILED
    assert d.reason.startswith("threshold not met: not unanimous")


def test_unanimous_counted_failures_break_unanimity() -> None:
    votes = calls("a", "a", "!timeout")
    assert decide(votes, policy(UNANIMOUS), ABC).status == DecisionStatus.DECIDED
    counted = policy(UNANIMOUS, quorum=Quorum(count_errors=True))
    d = decide(votes, counted, ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "count against" in d.reason
    invalid = policy(UNANIMOUS, quorum=Quorum(count_invalid=True))
    assert decide(calls("a", "a", "!invalid"), invalid, ABC).status == DecisionStatus.FAILED
    assert decide(calls("a", "a", "!cancelled"), counted, ABC).status == DecisionStatus.DECIDED


# -- fastest acceptable -----------------------------------------------------------------------

FASTEST = Aggregation.FASTEST


def timed(*pairs: tuple[str, float]) -> list[CallResult]:
    votes = calls(*(answer for answer, _ in pairs))
    return [c.model_copy(update={"ended_at": t}) for c, (_, t) in zip(votes, pairs, strict=True)]


def test_fastest_takes_the_earliest_acceptable_answer() -> None:
    votes = timed(("a", 5.0), ("!invalid", 1.0), ("b", 3.0), ("!error", 0.5))
    d = decide(votes, policy(FASTEST), ABC)
    assert outcome(d) == (DecisionStatus.DECIDED, "b")
    assert "slot 2" in d.reason


def test_fastest_skips_unacceptable_answers() -> None:
    votes = timed(("a", 5.0), ("b", 3.0))
    only_a = policy(FASTEST, accept=Acceptance(labels=("a",)))
    assert decide(votes, only_a, ABC).label == "a"


def test_fastest_with_nothing_acceptable_fails() -> None:
    votes = timed(("b", 1.0), ("!invalid", 2.0), ("!timeout", 3.0))
    d = decide(votes, policy(FASTEST, accept=Acceptance(labels=("a",))), ABC)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "no acceptable answer" in d.reason and "1 invalid, 1 failed" in d.reason


def test_fastest_same_end_time_goes_to_the_lower_slot_and_unknown_times_last() -> None:
    votes = timed(("c", 2.0), ("a", 1.0), ("b", 1.0))
    assert decide(votes, policy(FASTEST), ABC).label == "a"
    unknown = [c.model_copy(update={"ended_at": None}) for c in calls("a", "b")]
    unknown[1] = unknown[1].model_copy(update={"ended_at": 7.0})
    assert decide(unknown, policy(FASTEST), ABC).label == "b"


def test_fastest_is_allowed_on_free_text() -> None:
    votes = timed(("A long summary.", 2.0), ("Short one.", 1.0))
    d = decide(votes, policy(FASTEST, accept=Acceptance(regex=r".*summary.*")), TextFormat())
    assert d.label == "A long summary."


# -- the generative guard ---------------------------------------------------------------------


@pytest.mark.parametrize("agg", [a for a in Aggregation if a != Aggregation.FASTEST])
def test_voting_on_free_text_is_refused(agg: Aggregation) -> None:
    pol = policy(agg, k=2) if agg == Aggregation.AT_LEAST else policy(agg)
    with pytest.raises(PolicyError) as info:
        check_policy(pol, TextFormat())
    assert str(info.value) == TEXT_REFUSED
    with pytest.raises(PolicyError, match="majority vote on free text is refused"):
        decide(calls("x", "x"), pol, TextFormat())
    with pytest.raises(PolicyError):
        is_settled(calls("x", "x"), [1.0], pol, TextFormat())


def test_check_policy_accepts_what_can_be_applied() -> None:
    check_policy(policy(FASTEST), TextFormat())
    check_policy(policy(), LABELS)
    check_policy(policy(FASTEST, accept=Acceptance(labels=("unsure",))), LABELS)


@pytest.mark.parametrize(
    ("accept", "message"),
    [
        (Acceptance(json_schema={"type": 12}), "bad acceptance schema"),
        (Acceptance(regex="(unclosed"), "bad acceptance regex"),
        (Acceptance(labels=("maybe",)), "not an answer of this task"),
    ],
)
def test_check_policy_refuses_bad_acceptance(accept: Acceptance, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        check_policy(policy(FASTEST, accept=accept), LABELS)


# -- acceptance -------------------------------------------------------------------------------


def one(answer: str, status: CallStatus = CallStatus.OK) -> CallResult:
    return CallResult(slot=0, model="m", status=status, answer=answer)


def test_acceptable_needs_an_ok_call() -> None:
    assert acceptable(one("a"), None, ABC)
    assert not acceptable(one("a", CallStatus.INVALID), None, ABC)
    assert not acceptable(one("a", CallStatus.CANCELLED), None, ABC)
    assert not acceptable(CallResult(slot=0, model="m", status=CallStatus.OK), None, ABC)


def test_acceptable_regex_matches_the_whole_answer() -> None:
    digits = Acceptance(regex=r"\d+")
    assert acceptable(one("42"), digits, NumberFormat())
    assert not acceptable(one("4.2"), digits, NumberFormat())
    prose = Acceptance(regex=r"Dear .*\.")
    assert acceptable(one("Dear team,\nall good."), prose, TextFormat())
    assert not acceptable(one("Hi. Dear team."), prose, TextFormat())


def test_acceptable_labels_read_through_the_format() -> None:
    fmt = LabelFormat(labels=("regression", "fine"), synonyms={"bug": "regression"})
    accept = Acceptance(labels=("Bug",))
    assert acceptable(one("regression"), accept, fmt)
    assert not acceptable(one("fine"), accept, fmt)
    assert acceptable(one("yes"), Acceptance(labels=("true",)), YesNoFormat())
    assert not acceptable(one("3"), Acceptance(labels=("4",)), NumberFormat())


def test_acceptable_json_schema_validates_the_parsed_answer() -> None:
    small = Acceptance(json_schema={"properties": {"size": {"maximum": 10}}})
    assert acceptable(one('{"kind":"x","size":3}'), small, JSON)
    assert not acceptable(one('{"kind":"x","size":30}'), small, JSON)
    positive = Acceptance(json_schema={"type": "number", "exclusiveMinimum": 0})
    assert acceptable(one("0.5"), positive, NumberFormat())
    assert not acceptable(one("-1"), positive, NumberFormat())
    enum = Acceptance(json_schema={"enum": ["regression"]})
    assert acceptable(one("regression"), enum, LABELS)
    assert not acceptable(one("unsure"), enum, LABELS)
    assert not acceptable(one("not json"), positive, NumberFormat())


def test_acceptable_all_checks_must_pass() -> None:
    accept = Acceptance(regex="re.*", labels=("regression", "unsure"))
    assert acceptable(one("regression"), accept, LABELS)
    assert not acceptable(one("unsure"), accept, LABELS)


# -- json: vote per field ---------------------------------------------------------------------


def test_json_decides_field_by_field() -> None:
    votes = calls(
        '{"kind":"bug","size":1}',
        '{"kind":"bug","size":2}',
        '{"kind":"ui","size":2}',
        '{"kind":"bug"}',
        '{"kind":"ui","size":2}',
    )
    d = decide(votes, policy(), JSON)
    # No whole object has a majority, but every field does.
    assert outcome(d) == (DecisionStatus.DECIDED, '{"kind":"bug","size":2}')
    assert d.fields == {"kind": '"bug"', "size": "2"}
    assert d.margin == 1


def test_json_field_mostly_missing_stays_missing() -> None:
    votes = calls('{"kind":"bug"}', '{"kind":"bug"}', '{"kind":"bug","size":9}')
    d = decide(votes, policy(), JSON)
    assert outcome(d) == (DecisionStatus.DECIDED, '{"kind":"bug"}')
    assert d.fields == {"kind": '"bug"', "size": None}


def test_json_tied_field_is_a_tie() -> None:
    votes = calls('{"kind":"bug","size":1}', '{"kind":"bug","size":2}', '{"kind":"bug"}', "!error")
    votes += calls('{"kind":"bug","size":1}', '{"kind":"bug","size":2}')
    d = decide(votes, policy(), JSON)
    assert outcome(d) == (DecisionStatus.TIE, None)
    assert d.tied == ["size: 1 | 2"]
    assert d.fields == {"kind": '"bug"', "size": None}


def test_json_field_without_convergence() -> None:
    votes = calls('{"kind":"a","size":1}', '{"kind":"a","size":2}', '{"kind":"a","size":3}')
    d = decide(votes, policy(), JSON)
    assert d.status == DecisionStatus.NO_CONVERGENCE
    assert d.reason.startswith("size: no convergence")


def test_json_strict_fails_on_a_field() -> None:
    votes = calls(
        '{"kind":"a","size":1}', '{"kind":"a","size":1}', '{"kind":"a","size":2}', "!invalid"
    )
    counted = policy(STRICT, quorum=Quorum(count_invalid=True))
    d = decide(votes, counted, JSON)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "size: threshold not met" in d.reason
    assert outcome(decide(votes, policy(STRICT), JSON)) == (
        DecisionStatus.DECIDED,
        '{"kind":"a","size":1}',
    )


def test_json_winners_must_form_a_valid_answer() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
    }
    fmt = JsonFormat.model_validate({"schema": schema})
    votes = calls('{"a":1}', '{"a":1,"b":2}', '{"b":2}')
    assert all(fmt.parse(c.answer or "").ok for c in votes[:1] + votes[2:])
    d = decide(votes, policy(), fmt)
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert "do not form a valid answer" in d.reason


def test_json_empty_objects_vote_as_whole_objects() -> None:
    fmt = JsonFormat.model_validate({"schema": {"type": "object"}})
    d = decide(calls("{}", "{}", "!error"), policy(), fmt)
    assert outcome(d) == (DecisionStatus.DECIDED, "{}")
    assert d.fields == {}


# -- early stop -------------------------------------------------------------------------------


def test_settled_when_nothing_is_outstanding() -> None:
    assert is_settled(calls("a", "b"), [], policy(), ABC)


def test_majority_settles_once_the_rest_cannot_catch_up() -> None:
    assert is_settled(calls("a", "a", "a"), [1.0, 1.0], policy(), ABC)
    assert not is_settled(calls("a", "a"), [1.0, 1.0], policy(), ABC)  # b, b would tie
    assert is_settled(calls("a", "a", "a", "b"), [1.0], policy(), ABC)
    assert not is_settled(calls("a", "a", "b"), [1.0], policy(), ABC)
    assert not is_settled(calls("a"), [1.0], policy(), ABC)  # a, b would not converge


def test_undecided_runs_do_not_settle() -> None:
    assert not is_settled(calls("a", "b"), [1.0], policy(), ABC)
    assert not is_settled(calls("a", "a", "b", "b"), [1.0], policy(), ABC)


def test_unreachable_quorum_settles_as_failed() -> None:
    quorum = policy(quorum=Quorum(min_valid=4))
    assert is_settled(calls("a", "!error", "!error"), [1.0, 1.0], quorum, ABC)
    assert not is_settled(calls("a", "!error"), [1.0, 1.0, 1.0], quorum, ABC)


def test_strict_settles_on_more_than_half_of_everything() -> None:
    assert is_settled(calls("a", "a", "a"), [1.0, 1.0], policy(STRICT), ABC)
    assert not is_settled(calls("a", "a", "a", "b"), [1.0, 1.0, 1.0], policy(STRICT), ABC)
    counted = policy(STRICT, quorum=Quorum(count_invalid=True))
    assert not is_settled(calls("a", "a", "a", "!invalid"), [1.0, 1.0], counted, ABC)
    assert is_settled(calls("a", "a", "a", "!invalid"), [1.0, 1.0], policy(STRICT), ABC)


def test_at_least_settles_once_k_is_reached_and_safe() -> None:
    assert is_settled(calls("a", "a", "a"), [1.0, 1.0], at_least(3), ABC)
    assert not is_settled(calls("a", "a"), [1.0, 1.0, 1.0], at_least(2), ABC)


def test_weighted_settles_on_weight() -> None:
    weights = {"big:m": 3.0, "small:m": 1.0}
    votes = calls("a", "a", models=("big:m",))
    assert is_settled(votes, [1.0, 1.0, 1.0], policy(WEIGHTED), ABC, weights)
    assert not is_settled(votes, [3.0, 3.0, 1.0], policy(WEIGHTED), ABC, weights)
    with pytest.raises(PolicyError):
        is_settled(votes, [-1.0], policy(WEIGHTED), ABC, weights)


def test_weighted_single_heavy_vote_settles_only_while_no_convergence_is_impossible() -> None:
    votes = calls("a", models=("big:m",))
    weights = {"big:m": 3.0}
    # one more vote cannot outweigh it, and two votes that differ are not "no convergence"
    assert is_settled(votes, [0.5], policy(WEIGHTED), ABC, weights)
    # two more different votes would make every vote differ: no convergence
    assert not is_settled(votes, [0.5, 0.5], policy(WEIGHTED), ABC, weights)
    both = votes + calls("b", models=("small:m",)) + calls("c", models=("other:m",))
    assert decide(both, policy(WEIGHTED), ABC, weights).status == DecisionStatus.NO_CONVERGENCE


def test_unanimous_settles_only_at_the_end() -> None:
    assert not is_settled(calls("a", "a", "a", "a"), [1.0], policy(UNANIMOUS), ABC)
    assert is_settled(calls("a", "a"), [], policy(UNANIMOUS), ABC)


def test_fastest_is_never_settled_here() -> None:
    assert not is_settled(calls("a", "a", "a"), [1.0], policy(FASTEST), ABC)


def test_numbers_with_tolerance_never_settle_early() -> None:
    fmt = NumberFormat(tolerance=1)
    assert not is_settled(calls("5", "5", "5", "5"), [1.0], policy(), fmt)
    assert is_settled(calls("5", "5", "5", "5"), [1.0], policy(), NumberFormat())


def test_json_empty_answers_settle_only_when_new_fields_cannot_win() -> None:
    fmt = JsonFormat.model_validate({"schema": {"type": "object"}})
    assert not is_settled(calls("{}", "{}"), [1.0, 1.0], policy(), fmt)
    assert is_settled(calls("{}", "{}", "{}"), [1.0, 1.0], policy(), fmt)
    full = calls("{}", "{}", '{"a":1}', '{"a":1}')
    assert decide(full, policy(), fmt).status == DecisionStatus.TIE


def test_json_settles_only_when_every_field_is_safe() -> None:
    same = '{"kind":"a","size":1}'
    assert is_settled(calls(same, same, same), [1.0, 1.0], policy(), JSON)
    split = calls(same, same, '{"kind":"a","size":2}', same)
    assert is_settled(split, [1.0], policy(), JSON)
    assert not is_settled(split, [1.0, 1.0], policy(), JSON)


# -- offline tie-break branches ---------------------------------------------------------------

TIE = decide(calls("no regression", "regression", "regression", "no regression"), policy(), LABELS)


def test_the_tie_fixture_is_a_tie() -> None:
    assert TIE.status == DecisionStatus.TIE
    assert TIE.tied == ["no regression", "regression"]


def test_conservative_takes_the_most_conservative_tied_label() -> None:
    d = apply_offline_branch(TIE, TieBreak(kind="conservative"), [], LABELS)
    assert d is not None
    assert outcome(d) == (DecisionStatus.DECIDED, "regression")
    assert d.branches == ["conservative"]
    assert d.tied == ["no regression", "regression"]
    assert "conservative" in d.reason


def test_conservative_ignores_unranked_labels_and_uses_rank_order() -> None:
    tie = decide(calls("no regression", "unsure", "unsure", "no regression"), policy(), LABELS)
    d = apply_offline_branch(tie, TieBreak(kind="conservative"), [], LABELS)
    assert d is not None and d.label == "unsure"


def test_conservative_without_a_ranked_tied_label_passes_on() -> None:
    fmt = LabelFormat(labels=("a", "b", "c"), conservative_order=("c",))
    tie = decide(calls("a", "b", "b", "a"), policy(), fmt)
    assert apply_offline_branch(tie, TieBreak(kind="conservative"), [], fmt) is None
    assert apply_offline_branch(tie, TieBreak(kind="conservative"), [], ABC) is None


def test_conservative_on_yes_no() -> None:
    fmt = YesNoFormat(conservative="no")
    tie = decide(calls("yes", "no"), policy(), fmt)
    assert tie.status == DecisionStatus.TIE
    d = apply_offline_branch(tie, TieBreak(kind="conservative"), [], fmt)
    assert d is not None and outcome(d) == (DecisionStatus.DECIDED, "no")


def test_conservative_keeps_earlier_branches() -> None:
    tie = record_branch(TIE, "expand:2")
    d = apply_offline_branch(tie, TieBreak(kind="conservative"), [], LABELS)
    assert d is not None and d.branches == ["expand:2", "conservative"]


def test_human_sends_the_tie_to_review() -> None:
    d = apply_offline_branch(TIE, TieBreak(kind="human"), [], LABELS)
    assert d is not None
    assert outcome(d) == (DecisionStatus.NEEDS_REVIEW, None)
    assert d.branches == ["human"]
    assert d.tied == TIE.tied


def test_abstain_ends_without_an_answer() -> None:
    d = apply_offline_branch(TIE, TieBreak(kind="abstain"), [], LABELS)
    assert d is not None
    assert outcome(d) == (DecisionStatus.FAILED, None)
    assert d.branches == ["abstain"]
    assert d.reason.startswith("tie between") and d.reason.endswith("; abstained")


def test_branches_that_need_calls_are_not_offline() -> None:
    escalate = TieBreak.parse("escalate:sim:sim-strong")
    assert apply_offline_branch(TIE, escalate, [], LABELS) is None
    assert apply_offline_branch(TIE, TieBreak.parse("expand:2"), [], LABELS) is None


def test_offline_branches_leave_non_ties_alone() -> None:
    decided = decide(calls("a", "a", "b"), policy(), ABC)
    failed = decide(calls("!error"), policy(), ABC)
    for d in (decided, failed):
        for kind in ("conservative", "human", "abstain"):
            assert apply_offline_branch(d, TieBreak.parse(kind), [], ABC) is None


def test_json_tie_conservative_passes_on_and_human_keeps_fields() -> None:
    votes = calls('{"kind":"a","size":1}', '{"kind":"a","size":2}', '{"kind":"a"}')
    votes += calls('{"kind":"a","size":1}', '{"kind":"a","size":2}')
    tie = decide(votes, policy(), JSON)
    assert tie.status == DecisionStatus.TIE
    assert apply_offline_branch(tie, TieBreak(kind="conservative"), votes, JSON) is None
    review = apply_offline_branch(tie, TieBreak(kind="human"), votes, JSON)
    assert review is not None and review.fields == {"kind": '"a"', "size": None}


def test_record_branch_appends() -> None:
    d = record_branch(record_branch(TIE, "expand:2"), "escalate:sim:x")
    assert d.branches == ["expand:2", "escalate:sim:x"]
    assert TIE.branches == []


# -- misc -------------------------------------------------------------------------------------


def test_decision_serialises_as_the_run_result_expects() -> None:
    d = decide(calls("a", "a", "b"), policy(), ABC)
    data = json.loads(d.model_dump_json())
    assert data["status"] == "decided" and data["label"] == "a" and data["branches"] == []


@pytest.mark.parametrize(
    "fmt", [ABC, YesNoFormat(), NumberFormat(), JSON], ids=["label", "yesno", "number", "json"]
)
def test_decide_on_nothing_fails_for_every_format(fmt: AnswerFormat) -> None:
    assert decide(calls("!invalid"), policy(), fmt).status == DecisionStatus.FAILED
