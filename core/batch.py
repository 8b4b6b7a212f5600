"""What a batch needs beyond the engine: picking an interrupted batch up from the store alone,
and the summary a person reads at the end."""

from __future__ import annotations

from typing import Any

from core.errors import InputError
from core.spec import RunSpec
from core.store import BatchItem, Store


def load_resume(store: Store, batch_id: str) -> tuple[list[BatchItem], RunSpec]:
    """The inputs and the run spec an interrupted batch was started with."""
    info = store.get_batch(batch_id)
    if info.status == "done":
        raise InputError(f"batch {batch_id} is already done: nothing to resume")
    items = store.batch_items(batch_id)
    if not items:
        raise InputError(f"batch {batch_id} has no stored inputs to resume from")
    return items, info.spec


def batch_summary(store: Store, batch_id: str) -> dict[str, Any]:
    """Decided / ties / needs review / failed, cost, calls, and accuracy against gold."""
    counts = store.batch_counts(batch_id)
    info = store.get_batch(batch_id)
    summary: dict[str, Any] = {"batch_id": batch_id, "status": info.status}
    summary.update(counts)
    return summary
