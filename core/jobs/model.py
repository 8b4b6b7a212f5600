"""What a job is: its kind, status, lane and executor, and the row as the rest of Tally reads it.

A job is one piece of submitted work. It is written before anything runs (so it is listed at
once, and a second submission with the same idempotency key finds it), claimed by one executor
under a lease it keeps renewing, and ends in one final status with what it made (``result_ref``:
the run, batch, sweep or curve id) or why it did not (``error``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.store.lease import Owner


class JobKind(StrEnum):
    VOTE = "vote"
    BATCH = "batch"
    CURVE = "curve"
    SWEEP = "sweep"
    REVOTE = "revote"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


FINAL_STATUSES = tuple(s for s in JobStatus if s.final)


class Lane(StrEnum):
    """Interactive work (a vote, a re-vote of one run) is claimed before bulk work."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


class ExecutorName(StrEnum):
    """Who may claim a job: the in-process executor of a dashboard or CLI, or queue workers."""

    IN_PROCESS = "in-process"
    QUEUE = "queue"


DEFAULT_LANE = {
    JobKind.VOTE: Lane.INTERACTIVE,
    JobKind.REVOTE: Lane.INTERACTIVE,
    JobKind.BATCH: Lane.BULK,
    JobKind.CURVE: Lane.BULK,
    JobKind.SWEEP: Lane.BULK,
}


@dataclass(frozen=True)
class Job:
    """A job row. ``owner`` is the claim holding it (None when nobody does)."""

    id: str
    kind: JobKind
    spec: dict[str, Any]
    submitted_by: str | None
    status: JobStatus
    lane: Lane
    priority: int
    executor: ExecutorName
    idempotency_key: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    done: int
    total: int | None
    note: str | None
    result_ref: str | None
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    attempts: int
    owner: Owner | None
    heartbeat_at: float | None
    lease_until: float | None

    @property
    def finished(self) -> bool:
        return self.status.final

    def held_by(self, owner: Owner) -> bool:
        """Whether ``owner``'s claim is the one holding this job."""
        return self.owner is not None and self.owner.token == owner.token

    def waited_s(self, now: float | None = None) -> float:
        """How long the job has waited to start (so far, while queued)."""
        end = self.started_at
        if end is None:
            end = time.time() if now is None else now
        return max(0.0, end - self.created_at)

    def describe(self) -> str:
        """One line: kind, status, progress, what it made or why it stopped."""
        parts = [f"{self.kind} {self.id}", str(self.status)]
        if self.total:
            parts.append(f"{self.done}/{self.total}")
        if self.result_ref:
            parts.append(f"-> {self.result_ref}")
        if self.error:
            parts.append(self.error)
        elif self.note and not self.finished:
            parts.append(self.note)
        return " · ".join(parts)


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learns: whether the claim still holds, and whether to stop."""

    held: bool
    cancel_requested: bool


@dataclass(frozen=True)
class Reaped:
    """A running job whose executor was gone: resumed (queued again) or marked, and why."""

    job_id: str
    status: JobStatus
    reason: str


def waiting_line(job: Job, ahead: list[Job], now: float | None = None) -> str | None:
    """What a job that has not started its work waits behind, and for how long, in one line
    (None when nothing is ahead of it)."""
    if not ahead:
        return None
    at = time.time() if now is None else now
    since = job.started_at if job.status == JobStatus.RUNNING else job.created_at
    first = ahead[0]
    what = f"{first.kind} {first.result_ref or first.id}"
    if first.total:
        what += f" ({first.done} of {first.total})"
    more = f" and {len(ahead) - 1} more" if len(ahead) > 1 else ""
    return f"waiting {max(0.0, at - (since or at)):.0f} s behind {what}{more}"
