"""How ``run`` and ``batch`` read their task and policy options: one reading for both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.cli import task_and_policy
from core.errors import InputError
from core.formats import LabelFormat, NumberFormat
from core.policy import Aggregation, Quorum, TieBreak

OPTIONS: dict[str, Any] = {
    "labels": None,
    "synonym": [],
    "conservative": None,
    "answer_format": None,
    "template": "{input}",
    "aggregate": "majority",
    "tie_break": None,
    "early_stop": False,
    "accept": [],
    "min_valid": 1,
    "count_invalid": False,
    "count_errors": False,
}


def read(**given: Any) -> Any:
    return task_and_policy(**{**OPTIONS, **given})


def test_labels_synonyms_and_the_conservative_order() -> None:
    task, _ = read(
        labels="regression, no regression",
        synonym=["broken=regression", " fine = no regression "],
        conservative="regression",
        template="Is this a regression?\n\n{input}",
    )
    assert isinstance(task.format, LabelFormat)
    assert task.format.labels == ("regression", "no regression")
    assert task.format.synonyms == {"broken": "regression", "fine": "no regression"}
    assert task.format.conservative_order == ("regression",)
    assert task.template == "Is this a regression?\n\n{input}"


def test_every_policy_option_reaches_the_policy() -> None:
    _, policy = read(
        labels="yes,no",
        aggregate="at-least:2",
        tie_break="expand:3,human",
        early_stop=True,
        min_valid=2,
        count_invalid=True,
        count_errors=True,
    )
    assert (policy.aggregation, policy.k) == (Aggregation.AT_LEAST, 2)
    assert policy.tie_breaks == (TieBreak(kind="expand", k=3), TieBreak(kind="human"))
    assert policy.early_stop
    assert policy.quorum == Quorum(min_valid=2, count_invalid=True, count_errors=True)


def test_a_format_other_than_label_and_an_acceptance() -> None:
    task, policy = read(answer_format="number", aggregate="fastest", accept=["regex:^[0-9]+$"])
    assert isinstance(task.format, NumberFormat)
    assert policy.accept is not None and policy.accept.regex == "^[0-9]+$"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"labels": "yes,no", "synonym": ["nope"]}, "--synonym takes SYNONYM=LABEL, got 'nope'"),
        ({}, "give the labels to vote on"),
        ({"labels": "yes,no", "tie_break": "coin"}, "unknown tie-break 'coin'"),
    ],
)
def test_bad_options_are_input_errors(given: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        read(**given)


def test_schema_tolerance_and_a_task_file_express_every_format(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    (tmp_path / "s.json").write_text(json.dumps(schema))
    for given in (json.dumps(schema), f"@{tmp_path / 's.json'}"):
        task, _ = read(answer_format="json", schema=given)
        assert task.format.schema == schema
    task, _ = read(answer_format="number", tolerance=0.5)
    assert task.format == NumberFormat(tolerance=0.5)
    path = tmp_path / "task.toml"
    path.write_text(
        'name = "triage"\ntemplate = "Which queue? {input}"\nsystem = "Be brief."\n'
        '[format]\nkind = "label"\nlabels = ["bug", "billing"]\n'
        'synonyms = { defect = "bug" }\nconservative_order = ["bug", "billing"]\n'
    )
    task, _ = read(task_file=path)
    assert (task.name, task.template, task.system) == (
        "triage",
        "Which queue? {input}",
        "Be brief.",
    )
    assert task.format == LabelFormat(
        labels=("bug", "billing"), synonyms={"defect": "bug"}, conservative_order=("bug", "billing")
    )
