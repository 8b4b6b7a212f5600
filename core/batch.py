"""What a batch needs beyond the engine: picking an interrupted batch up from the store alone,
and the summary a person reads at the end."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.cost import is_simulated
from core.errors import InputError
from core.formats import AnswerFormat
from core.spec import RunSpec
from core.store import BatchInfo, BatchItem, RunRow, Store


def load_resume(store: Store, batch_id: str) -> tuple[list[BatchItem], RunSpec]:
    """The inputs and the run spec an interrupted batch was started with."""
    info = store.get_batch(batch_id)
    check_resumable(info)
    items = store.batch_items(batch_id)
    if not items:
        raise InputError(f"batch {batch_id} has no stored inputs to resume from")
    return items, info.spec


def check_gold(fmt: AnswerFormat, items: Iterable[BatchItem]) -> None:
    """Refuse a batch whose gold the task cannot read, before anything is stored: such a row
    could never be counted right, and its accuracy would be a silent lie."""
    for item in items:
        if item.gold is None:
            continue
        read = fmt.read_gold(item.gold)
        if not read.ok:
            where = f"row {item.index + 1}" + (f" ({item.item_id})" if item.item_id else "")
            raise InputError(f"{where}: gold {read.error}")


def batch_format(store: Store, batch_id: str) -> AnswerFormat:
    """The answer format a batch was asked in: the one its gold is judged by."""
    return store.get_batch(batch_id).spec.task.format


def check_resumable(info: BatchInfo) -> None:
    """A finished batch has nothing left to run: resuming it is a mistake to report."""
    if info.status == "done":
        raise InputError(f"batch {info.batch_id} is already done: nothing to resume")


def batch_summary(store: Store, batch_id: str) -> dict[str, Any]:
    """Decided / ties / needs review / failed, cost, calls, accuracy against gold, and how
    many independent voters the panel was worth (``effective_voters``, votable formats).

    ``cost_usd`` is ``None`` once any run's cost is unknown; ``cost_known_usd`` is the known
    part and ``unknown_cost_runs`` how many runs it leaves out; ``simulated_cost`` says the
    panel is priced from the sim catalogue.

    ``with_gold`` counts the finished runs with gold, ``correct`` those whose decided label
    the task's format reads as the gold (:meth:`gold_matches`), ``accuracy`` their share
    (``None`` without gold). A run without a label counts as wrong."""
    counts = store.batch_counts(batch_id)
    info = store.get_batch(batch_id)
    fmt = batch_format(store, batch_id)
    pairs = store.batch_gold(batch_id)
    with_gold = sum(n for _, _, n in pairs)
    correct = sum(n for label, gold, n in pairs if fmt.gold_matches(label, gold))
    summary: dict[str, Any] = {"batch_id": batch_id, "status": info.status}
    summary.update(counts)
    summary["simulated_cost"] = is_simulated(info.spec.slot_names)
    summary.update(
        with_gold=with_gold,
        correct=correct,
        accuracy=correct / with_gold if with_gold else None,
    )
    if fmt.votable:
        from core.experiments.reliability import batch_independence

        summary["effective_voters"] = batch_independence(store, batch_id)
    return summary


def judged_runs(store: Store, batch_id: str) -> list[tuple[RunRow, bool | None]]:
    """Every run of a batch with whether it got its gold right (``None``: no gold, or still
    running), judged as :func:`batch_summary` judges it."""
    fmt = batch_format(store, batch_id)
    return [
        (
            row,
            None
            if row.gold is None or row.status == "running"
            else fmt.gold_matches(row.label, row.gold),
        )
        for row in store.batch_runs(batch_id)
    ]
