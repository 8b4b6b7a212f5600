"""Jobs: every piece of submitted work (vote, batch, curve draw, sweep, re-vote) as one concept.

The CLI, the library and the pages submit jobs and read them; an executor runs them. The job
row in the store is the truth about a job: its spec, who submitted it, its status, progress,
lease and result, whichever executor runs it (in-process, or queue workers on PostgreSQL).
"""

from __future__ import annotations

from core.jobs.executor import Executor
from core.jobs.model import (
    Beat,
    ExecutorName,
    Job,
    JobKind,
    JobStatus,
    Lane,
    Reaped,
)
from core.jobs.store import JobStore

__all__ = [
    "Beat",
    "Executor",
    "ExecutorName",
    "Job",
    "JobKind",
    "JobStatus",
    "JobStore",
    "Lane",
    "Reaped",
]
