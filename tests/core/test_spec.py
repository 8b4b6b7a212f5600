"""The run spec: one value for task, panel and policy, and its stored JSON."""

from __future__ import annotations

import json

import pytest

from core.api import build_policy, build_task
from core.errors import InputError
from core.panel import ModelSpec, Panel
from core.spec import RunSpec


def full_spec() -> RunSpec:
    return RunSpec(
        task=build_task(
            labels=["regression", "no regression"],
            synonyms={"bug": "regression"},
            conservative=["regression"],
            template="Is this a regression?\n\n{input}",
            system="You triage UI changes.",
            name="triage",
        ),
        panel=Panel.build(
            [
                ModelSpec.parse("sim:sim-strong*3", params={"temperature": 0, "seed": 7}),
                ModelSpec.parse("sim:sim-fast", params={"temperature": 0.7}),
            ],
            5,
        ),
        policy=build_policy(
            aggregate="weighted", tie_break="expand:2,conservative", min_valid=3, count_errors=True
        ),
    )


def test_the_stored_json_reads_back_to_an_equal_spec() -> None:
    spec = full_spec()
    stored = json.loads(json.dumps(spec.to_json()))
    back = RunSpec.from_json(stored)
    assert back == spec
    assert back.panel.weights == {"sim:sim-strong": 3.0, "sim:sim-fast": 1.0}
    assert back.panel.models[0].params == {"temperature": 0, "seed": 7}
    assert back.slot_names == ["sim:sim-strong", "sim:sim-fast"] * 2 + ["sim:sim-strong"]


def test_a_spec_is_frozen() -> None:
    spec = full_spec()
    with pytest.raises(ValueError):
        spec.policy = build_policy()  # type: ignore[misc]


def test_an_older_row_with_only_slot_names_reads_with_weight_one_and_no_params() -> None:
    spec = full_spec()
    old = {**spec.to_json(), "panel": spec.slot_names}
    back = RunSpec.from_json(old)
    assert back.panel == Panel.build(["sim:sim-strong", "sim:sim-fast"], 5)
    assert back.panel.weights == {"sim:sim-strong": 1.0, "sim:sim-fast": 1.0}
    assert all(m.params == {} for m in back.panel.models)
    assert back.task == spec.task and back.policy == spec.policy


@pytest.mark.parametrize(
    "data",
    [
        "not an object",
        {"task": {"format": {"kind": "yesno"}}, "panel": ["sim:a"]},
        {"task": {"format": {"kind": "nope"}}, "panel": ["sim:a"], "policy": {}},
        {"task": {"format": {"kind": "yesno"}}, "panel": ["no-provider"], "policy": {}},
    ],
)
def test_a_bad_stored_spec_is_one_input_error(data: object) -> None:
    with pytest.raises(InputError) as caught:
        RunSpec.from_json(data)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
