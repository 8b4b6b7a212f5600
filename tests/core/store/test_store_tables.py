"""How runs and calls map onto rows: the spec JSON cache of the writer's hot path."""

from __future__ import annotations

from core.formats import parse_format
from core.panel import Panel
from core.policy import Policy, TieBreak
from core.store.tables import SpecCache, loads, spec_columns
from core.task import Task

TASK = Task(name="triage", format=parse_format({"kind": "yesno"}))


def test_spec_columns() -> None:
    cols = spec_columns({"name": "triage", "x": 1}, Panel.build(["sim:a", "sim:b"], 3), Policy())
    assert cols["task_name"] == "triage"
    assert loads(cols["panel_json"]) == ["sim:a", "sim:b", "sim:a"]
    assert loads(cols["policy_json"])["aggregation"] == "majority"
    assert spec_columns({"name": 3}, [], {})["task_name"] is None


def test_frozen_specs_are_computed_once_and_dicts_never_cached() -> None:
    cache = SpecCache(size=2)
    panel, policy = Panel.build(["sim:a"], 5), Policy()
    human = Policy(tie_breaks=(TieBreak(kind="human"),))
    task = {"name": "t"}
    first = cache.columns(TASK, panel, policy)
    assert first["task_name"] == "triage"
    assert cache.columns(TASK, panel, policy) is first
    assert cache.columns(TASK, panel, human) is not first
    assert loads(cache.columns(TASK, panel, human)["policy_json"])["tie_breaks"] == [
        {"kind": "human", "model": None, "k": None}
    ]
    a = cache.columns(task, panel, policy)
    task["name"] = "changed"  # a mutable task is read afresh every time
    assert cache.columns(task, panel, policy)["task_name"] == "changed" != a["task_name"]
    for n in range(1, 6):  # bounded
        cache.columns(TASK, Panel.build(["sim:a"], n), policy)
    assert len(cache._cache) == 2
