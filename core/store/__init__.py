"""The store: every run and call kept in SQLite or PostgreSQL, queryable, never the bottleneck.

``Store`` is the synchronous API (reads, reviews, batches, migrations); ``StoreWriter`` is the
single batched writer the engine sends runs and calls to while a fan-out goes on.
"""

from core.store.db import (
    BatchInfo,
    BatchItem,
    ReviewRow,
    SavedResult,
    Store,
    WriteBatch,
)
from core.store.queries import (
    CostPoint,
    MixPoint,
    ModelCost,
    PairAgreement,
    RunFilter,
    RunRow,
)
from core.store.writer import StoreWriter

__all__ = [
    "BatchInfo",
    "BatchItem",
    "CostPoint",
    "MixPoint",
    "ModelCost",
    "PairAgreement",
    "ReviewRow",
    "RunFilter",
    "RunRow",
    "SavedResult",
    "Store",
    "StoreWriter",
    "WriteBatch",
]
