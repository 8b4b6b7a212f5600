"""What a batch needs beyond the engine: picking an interrupted batch up from the store alone,
and the summary a person reads at the end."""

from __future__ import annotations

from typing import Any

from core.errors import InputError
from core.panel import Panel
from core.policy import Policy
from core.store import BatchItem, Store
from core.task import Task


def load_resume(store: Store, batch_id: str) -> tuple[list[BatchItem], Task, Panel, Policy]:
    """The inputs, task, panel and policy an interrupted batch was started with."""
    info = store.get_batch(batch_id)
    if info.status == "done":
        raise InputError(f"batch {batch_id} is already done: nothing to resume")
    items = store.batch_items(batch_id)
    if not items:
        raise InputError(f"batch {batch_id} has no stored inputs to resume from")
    task = Task.from_dict(info.task)
    panel = Panel.model_validate(info.panel)
    policy = Policy.model_validate(info.policy)
    return items, task, panel, policy


def batch_summary(store: Store, batch_id: str) -> dict[str, Any]:
    """Decided / ties / needs review / failed, cost, calls, and accuracy against gold."""
    counts = store.batch_counts(batch_id)
    info = store.get_batch(batch_id)
    summary: dict[str, Any] = {"batch_id": batch_id, "status": info.status}
    summary.update(counts)
    return summary
