"""How runs and calls map onto rows: the spec JSON cache of the writer's hot path."""

from __future__ import annotations

from core.panel import Panel
from core.policy import Policy, TieBreak
from core.spec import RunSpec
from core.store.tables import SpecCache, loads, spec_columns
from core.task import Task

TASK = Task.for_yesno(name="triage")


def test_spec_columns() -> None:
    cols = spec_columns(
        RunSpec(task=TASK, panel=Panel.build(["sim:a", "sim:b"], 3), policy=Policy())
    )
    assert cols["task_name"] == "triage"
    assert loads(cols["panel_json"]) == ["sim:a", "sim:b", "sim:a"]
    assert loads(cols["policy_json"])["aggregation"] == "majority"


def test_a_spec_is_computed_once_and_the_cache_is_bounded() -> None:
    cache = SpecCache(size=2)
    panel, policy = Panel.build(["sim:a"], 5), Policy()
    human = Policy(tie_breaks=(TieBreak(kind="human"),))
    spec = RunSpec(task=TASK, panel=panel, policy=policy)
    first = cache.columns(spec)
    assert first["task_name"] == "triage"
    assert cache.columns(spec) is first
    other = spec.model_copy(update={"policy": human})
    assert cache.columns(other) is not first
    assert loads(cache.columns(other)["policy_json"])["tie_breaks"] == [
        {"kind": "human", "model": None, "k": None}
    ]
    for n in range(1, 6):  # bounded
        cache.columns(RunSpec(task=TASK, panel=Panel.build(["sim:a"], n), policy=policy))
    assert len(cache._cache) == 2
