"""The one interface both executors offer: submit a job, cancel it, close.

The in-process executor (a dashboard's or a CLI's own event loop) claims what it is given at
submission and runs it at once; queue workers on PostgreSQL claim what a submission queued.
Whoever runs a job, the job row says where it stands, so callers read jobs through
``JobStore`` and never ask the executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from core.auth import Identity
from core.jobs.model import Job, JobKind, Lane
from core.jobs.store import JobStore


class Executor(Protocol):
    jobs: JobStore
    """The store's jobs, to read what was submitted."""

    def submit(
        self,
        kind: JobKind,
        spec: Mapping[str, Any],
        *,
        actor: Identity,
        idempotency_key: str | None = None,
        lane: Lane | None = None,
        priority: int = 0,
        total: int | None = None,
        result_ref: str | None = None,
    ) -> Job:
        """Write the job as ``actor``'s and see that it runs; with a key already used, the job
        it made (started once, never twice). An actor who may not spend, or bad input, raises
        before anything is written."""
        ...

    def cancel(self, job_id: str, *, actor: Identity) -> Job:
        """Ask the job to stop: a queued one ends at once, a running one at its executor's
        next heartbeat (or at once, when this executor runs it)."""
        ...

    def close(self) -> None:
        """Stop what this executor runs (its jobs end ``interrupted``, resumable later)."""
        ...
