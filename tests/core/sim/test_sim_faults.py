"""Fault plans: parsed from the flag strings, applied per model, deterministic by seed."""

from __future__ import annotations

from collections import Counter

import pytest

from core.errors import InputError
from core.sim.faults import FAULT_KINDS, FaultPlan, FaultRule


def test_rules_parse_with_and_without_a_model() -> None:
    assert FaultRule.parse("429:0.1") == FaultRule(kind="429", probability=0.1)
    assert FaultRule.parse("sim-flaky:500:0.2") == FaultRule("500", 0.2, "sim-flaky")
    assert str(FaultRule.parse(" sim-fast:STALL:1 ")) == "sim-fast:stall:1"
    plan = FaultPlan.parse(["429:0.1,cut:0.05", "sim-mid:html:0.5"])
    assert [str(r) for r in plan.rules] == ["429:0.1", "cut:0.05", "sim-mid:html:0.5"]
    assert not FaultPlan.parse(None) and not FaultPlan()
    assert set(FAULT_KINDS) == {
        "429",
        "500",
        "503",
        "stall",
        "timeout",
        "cut",
        "corrupt",
        "html",
        "shape",
    }


@pytest.mark.parametrize("spec", ["429", "teapot:0.1", "429:lots", "429:1.5", "a:b:c:d", ""])
def test_bad_rules_are_input_errors(spec: str) -> None:
    with pytest.raises(InputError):
        FaultRule.parse(spec)


def test_rules_apply_to_their_model_at_their_rate() -> None:
    plan = FaultPlan.parse(["sim-flaky:500:0.2", "429:0.1"])
    flaky = Counter(plan.pick("sim-flaky", 0, f"t{i}", 0) for i in range(5000))
    other = Counter(plan.pick("sim-fast", 0, f"t{i}", 0) for i in range(5000))
    assert flaky["500"] / 5000 == pytest.approx(0.2, abs=0.02)
    assert flaky["429"] / 5000 == pytest.approx(0.1, abs=0.015)
    assert other["500"] == 0
    assert other["429"] / 5000 == pytest.approx(0.1, abs=0.015)


def test_picks_are_deterministic_by_seed_and_differ_by_sample() -> None:
    plan = FaultPlan.parse("corrupt:0.5")
    first = [plan.pick("sim-mid", 3, f"t{i}", 0) for i in range(200)]
    assert first == [plan.pick("sim-mid", 3, f"t{i}", 0) for i in range(200)]
    assert first != [plan.pick("sim-mid", 4, f"t{i}", 0) for i in range(200)]
    assert first != [plan.pick("sim-mid", 3, f"t{i}", 1) for i in range(200)]
