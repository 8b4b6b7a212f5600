"""Jobs: every piece of submitted work (vote, batch, curve draw, sweep, re-vote) as one concept.

The CLI, the library and the pages submit jobs and read them; an executor runs them. The job
row in the store is the truth about a job: its spec, who submitted it, its status, progress,
lease and result, whichever executor runs it (in-process, or queue workers on PostgreSQL).

The names below are imported on first use, not with the package, so ``tally --help`` does not
pay for the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as re-exports, for type checkers
    from core.jobs.executor import Executor as Executor
    from core.jobs.model import Beat as Beat
    from core.jobs.model import ExecutorName as ExecutorName
    from core.jobs.model import Job as Job
    from core.jobs.model import JobKind as JobKind
    from core.jobs.model import JobStatus as JobStatus
    from core.jobs.model import Lane as Lane
    from core.jobs.model import Reaped as Reaped
    from core.jobs.store import JobStore as JobStore

_WHERE = {
    "Executor": "executor",
    "Beat": "model",
    "ExecutorName": "model",
    "Job": "model",
    "JobKind": "model",
    "JobStatus": "model",
    "Lane": "model",
    "Reaped": "model",
    "JobStore": "store",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"core.jobs.{module}"), name)
