"""How runs and calls map onto rows: the spec JSON cache of the writer's hot path."""

from __future__ import annotations

from core.panel import ModelSpec, Panel
from core.policy import Policy, TieBreak
from core.spec import RunSpec
from core.store.tables import (
    SpecCache,
    dumps,
    loads,
    slot_names,
    spec_columns,
    spec_from_columns,
)
from core.task import Task

TASK = Task.for_yesno(name="triage")


def test_spec_columns_keep_the_whole_panel_and_read_back() -> None:
    weighted = ModelSpec.parse("sim:a*2", params={"temperature": 0.5})
    spec = RunSpec(task=TASK, panel=Panel.build([weighted, "sim:b"], 3), policy=Policy())
    cols = spec_columns(spec)
    assert cols["task_name"] == "triage"
    assert loads(cols["panel_json"])["models"][0] == {
        "provider": "sim",
        "model": "a",
        "params": {"temperature": 0.5},
        "weight": 2.0,
    }
    assert loads(cols["policy_json"])["aggregation"] == "majority"
    assert spec_from_columns(cols["task_json"], cols["panel_json"], cols["policy_json"]) == spec
    assert slot_names(cols["panel_json"]) == ("sim:a", "sim:b", "sim:a")


def test_a_row_stored_before_the_whole_panel_was_kept_reads_with_weight_one() -> None:
    spec = RunSpec(task=TASK, panel=Panel.build(["sim:a*2", "sim:b"], 3), policy=Policy())
    cols = spec_columns(spec)
    old_panel = dumps(["sim:a", "sim:b", "sim:a"])
    back = spec_from_columns(cols["task_json"], old_panel, cols["policy_json"])
    assert back.panel == Panel.build(["sim:a", "sim:b"], 3)
    assert back.panel.weights == {"sim:a": 1.0, "sim:b": 1.0}
    assert slot_names(old_panel) == ("sim:a", "sim:b", "sim:a")


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
