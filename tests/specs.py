"""Run specs for tests that need one but are not about what it holds."""

from __future__ import annotations

from collections.abc import Sequence

from core.panel import Panel
from core.policy import Policy
from core.spec import RunSpec
from core.task import Task


def spec(
    models: Sequence[str] = ("sim:a",),
    n: int | None = None,
    *,
    name: str = "classify",
    task: Task | None = None,
    policy: Policy | None = None,
) -> RunSpec:
    """A yes/no task over ``models`` (N slots, round-robin) under ``policy`` (majority)."""
    return RunSpec(
        task=task or Task.for_yesno(name=name),
        panel=Panel.build(list(models), n),
        policy=policy or Policy(),
    )
