"""The decision banner the Run page and History's run detail share: the quorum on every
decision, and a degraded decision marked as such with why."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def test_the_dashboard_banner_shows_the_quorum_and_a_degraded_decision() -> None:
    def page() -> None:
        from core.formats import LabelFormat
        from core.policy import Aggregation, Policy
        from core.result import CallResult, CallStatus
        from core.voting import decide
        from pages.ui import decision_banner

        fmt = LabelFormat(labels=("a", "b"))
        votes = [
            CallResult(slot=i, model="m", status=s, answer=a)
            for i, (s, a) in enumerate(
                [(CallStatus.OK, "a"), (CallStatus.OK, "a"), (CallStatus.TIMEOUT, None)]
            )
        ]
        decision = decide(votes, Policy(aggregation=Aggregation.STRICT), fmt)
        decision_banner(decision, {"a": 2})

    at = AppTest.from_function(page).run(timeout=60)
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("**DEGRADED**") and "timed out" in w for w in warnings), warnings
    assert any("quorum 2 of 3" in c.value for c in at.caption)


def test_the_banner_gives_a_decided_vote_its_confidence_and_names_a_low_one() -> None:
    def page() -> None:
        from core.formats import LabelFormat
        from core.policy import Policy, TieBreak
        from core.result import CallResult, CallStatus
        from core.voting import decide
        from pages.ui import decision_banner

        fmt = LabelFormat(labels=("a", "b"))
        votes = [
            CallResult(slot=i, model="m", status=CallStatus.OK, answer=a)
            for i, a in enumerate("aaabb")
        ]
        decision_banner(decide(votes, Policy(), fmt), {"a": 3, "b": 2})
        low = Policy(escalate_below=0.8, tie_breaks=(TieBreak(kind="human"),))
        decision_banner(decide(votes, low, fmt), {"a": 3, "b": 2})

    at = AppTest.from_function(page).run(timeout=60)
    assert not at.exception
    assert [s.value for s in at.success] == [
        "**DECIDED: a**, margin 1 (5 votes), confidence 0.66",
        "**DECIDED: a**, margin 1 (5 votes), confidence 0.66",
    ]
    shown = [c.value.replace("\\", "") for c in at.caption]  # markdown escapes
    assert any(c.startswith("low confidence: 0.66, below 0.8") for c in shown), shown
