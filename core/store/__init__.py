"""The store: every run and call kept in SQLite or PostgreSQL, queryable, never the bottleneck.

``Store`` is the synchronous API (reads, reviews, batches, migrations); ``StoreWriter`` is the
single batched writer the engine sends runs and calls to while a fan-out goes on.

The names below are imported on first use, not with the package: the store writer's own
process imports ``core.store.commit`` alone and must not pay for SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as re-exports, for type checkers
    from core.store.db import BatchInfo as BatchInfo
    from core.store.db import BatchItem as BatchItem
    from core.store.db import SavedResult as SavedResult
    from core.store.db import Store as Store
    from core.store.queries import BatchAnswers as BatchAnswers
    from core.store.queries import CostPoint as CostPoint
    from core.store.queries import MixPoint as MixPoint
    from core.store.queries import ModelCost as ModelCost
    from core.store.queries import PairAgreement as PairAgreement
    from core.store.queries import RunFilter as RunFilter
    from core.store.queries import RunRow as RunRow
    from core.store.reviews import ReviewClaim as ReviewClaim
    from core.store.reviews import ReviewOutcome as ReviewOutcome
    from core.store.reviews import ReviewRow as ReviewRow
    from core.store.reviews import ReviewStage as ReviewStage
    from core.store.upsert import WriteBatch as WriteBatch
    from core.store.writer import StoreWriter as StoreWriter

_WHERE = {
    "BatchInfo": "db",
    "BatchItem": "db",
    "ReviewClaim": "reviews",
    "ReviewOutcome": "reviews",
    "ReviewRow": "reviews",
    "ReviewStage": "reviews",
    "SavedResult": "db",
    "Store": "db",
    "BatchAnswers": "queries",
    "CostPoint": "queries",
    "MixPoint": "queries",
    "ModelCost": "queries",
    "PairAgreement": "queries",
    "RunFilter": "queries",
    "RunRow": "queries",
    "WriteBatch": "upsert",
    "StoreWriter": "writer",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"core.store.{module}"), name)
