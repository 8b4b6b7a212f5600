"""Jobs in the store: submit, claim, heartbeat, progress, finish, cancel, list, reap.

Every change a worker makes to a job it runs is guarded by its claim's token (compare-and-set),
so an executor that lost its lease (reaped, then taken by another) changes nothing. Claims take
the interactive lane first, then the highest priority, then the oldest job; on PostgreSQL the
candidate row is locked with ``SKIP LOCKED`` so concurrent claimers never wait on each other,
on SQLite the write transaction (``BEGIN IMMEDIATE``) serialises them.

Times are unix seconds; every method takes ``now`` so tests can drive a fake clock.
"""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from sqlalchemy import Connection, RowMapping, case, select, update
from sqlalchemy.dialects import postgresql, sqlite

from core.errors import InputError, NotFoundError
from core.jobs.model import (
    DEFAULT_LANE,
    Beat,
    ExecutorName,
    Job,
    JobKind,
    JobStatus,
    Lane,
    Reaped,
)
from core.store import Store
from core.store.lease import Owner, holds
from core.store.tables import dumps, job_t, loads

RESUMABLE = frozenset({JobKind.BATCH})
"""Kinds a reaped job resumes as: a batch picks up from the store without paying twice."""

MAX_ATTEMPTS = 3
"""Claims a job may have before a dead executor marks it instead of resuming it again."""

_LANE_ORDER = case((job_t.c.lane == Lane.INTERACTIVE.value, 0), else_=1)

ACTIVE = "active:"
"""The prefix of a key held only while its job is queued or running (see ``submit``)."""

_RELEASED_KEY = case(
    (job_t.c.idempotency_key.startswith(ACTIVE), job_t.c.idempotency_key + "~" + job_t.c.id),
    else_=job_t.c.idempotency_key,
)
"""A finishing job's key: an active key is set free (suffixed with the job id), others stay."""


def submission_key(submitted_by: str | None, kind: JobKind | str, content: Any) -> str:
    """The active key of a form's submission: who asked for what kind of work with what
    (any JSON value), so the same press twice, or from a second tab, is one job."""
    body = dumps([submitted_by or "local", str(kind), content])
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def job_from_row(r: Mapping[Any, Any]) -> Job:
    owner = None
    if r["lease_token"] is not None:
        owner = Owner(r["owner_host"], r["owner_pid"], r["lease_token"], r["started_at"] or 0.0)
    return Job(
        id=r["id"],
        kind=JobKind(r["kind"]),
        spec=loads(r["spec_json"], {}),
        submitted_by=r["submitted_by"],
        status=JobStatus(r["status"]),
        lane=Lane(r["lane"]),
        priority=r["priority"],
        executor=ExecutorName(r["executor"]),
        idempotency_key=r["idempotency_key"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        done=r["progress_done"],
        total=r["progress_total"],
        note=r["note"],
        result_ref=r["result_ref"],
        result=loads(r["result_json"]),
        error=r["error"],
        cancel_requested=bool(r["cancel_requested"]),
        attempts=r["attempts"],
        owner=owner,
        heartbeat_at=r["heartbeat_at"],
        lease_until=r["lease_until"],
    )


def _claim_values(owner: Owner, lease_s: float, at: float) -> dict[str, Any]:
    return {
        "status": JobStatus.RUNNING.value,
        "owner_host": owner.host,
        "owner_pid": owner.pid,
        "lease_token": owner.token,
        "heartbeat_at": at,
        "lease_until": at + lease_s,
        "started_at": at,
        "attempts": job_t.c.attempts + 1,
    }


class JobStore:
    """The jobs of one store (``Store``'s engine, connections and error translation)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self,
        kind: JobKind | str,
        spec: Mapping[str, Any],
        *,
        submitted_by: str | None = None,
        lane: Lane | str | None = None,
        priority: int = 0,
        executor: ExecutorName | str = ExecutorName.IN_PROCESS,
        idempotency_key: str | None = None,
        active_key: str | None = None,
        total: int | None = None,
        result_ref: str | None = None,
        owner: Owner | None = None,
        lease_s: float = 30.0,
        now: float | None = None,
    ) -> Job:
        """Write a job, queued, or already claimed by ``owner`` (the process that will run it
        at once, so no other executor can take it first).

        With an ``idempotency_key`` already used, nothing is written and the job that key
        made is returned (whatever its state: the first submission's spec wins); the same key
        for another kind of work is an InputError. Check ``job.held_by(owner)`` to know
        whether this call is the one that should run it.

        An ``active_key`` (what a form submits, e.g. a digest of who asked what) is held only
        while its job is queued or running: the same submission again while the first is in
        flight (a double click, a second tab) gets the first job; once it has ended, the same
        submission is a new job."""
        if active_key is not None:
            if idempotency_key is not None:
                raise InputError("give an idempotency key or an active key, not both")
            idempotency_key = ACTIVE + active_key
        kind = _parse(JobKind, kind, "job kind")
        lane = DEFAULT_LANE[kind] if lane is None else _parse(Lane, lane, "lane")
        executor = _parse(ExecutorName, executor, "executor")
        at = _now(now)
        row: dict[str, Any] = {
            "id": new_job_id(),
            "kind": kind.value,
            "spec_json": dumps(dict(spec)),
            "submitted_by": submitted_by,
            "status": JobStatus.QUEUED.value,
            "lane": lane.value,
            "priority": int(priority),
            "executor": executor.value,
            "idempotency_key": idempotency_key,
            "created_at": at,
            "progress_done": 0,
            "progress_total": total,
            "result_ref": result_ref,
            "cancel_requested": False,
            "attempts": 0,
        }
        if owner is not None:
            row.update(
                status=JobStatus.RUNNING.value,
                owner_host=owner.host,
                owner_pid=owner.pid,
                lease_token=owner.token,
                heartbeat_at=at,
                lease_until=at + lease_s,
                started_at=at,
                attempts=1,
            )
        ins = (postgresql if self.store.dialect == "postgresql" else sqlite).insert(job_t)
        stmt = (
            ins.values(row)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(job_t.c.id)
        )
        with self.store._write() as conn:
            if conn.execute(stmt).scalar() is not None:
                return job_from_row(self._need(conn, row["id"]))
            found = (
                conn.execute(select(job_t).where(job_t.c.idempotency_key == idempotency_key))
                .mappings()
                .one()
            )
        job = job_from_row(found)
        if job.kind != kind:
            raise InputError(
                f"idempotency key {idempotency_key!r} already started a {job.kind} job "
                f"({job.id}), not a {kind}"
            )
        return job

    # -- claiming and running ------------------------------------------------------------------

    def claim(
        self, job_id: str, owner: Owner, lease_s: float, *, now: float | None = None
    ) -> Job | None:
        """Claim one queued job (a queue worker told which job to run); None when it is not
        queued any more (claimed by another, cancelled, finished)."""
        at = _now(now)
        with self.store._write() as conn:
            self._need(conn, job_id)
            done = conn.execute(
                update(job_t)
                .where(job_t.c.id == job_id, job_t.c.status == JobStatus.QUEUED.value)
                .values(_claim_values(owner, lease_s, at))
            )
            if done.rowcount != 1:
                return None
            return job_from_row(self._need(conn, job_id))

    def claim_next(
        self,
        owner: Owner,
        lease_s: float,
        *,
        executor: ExecutorName | str = ExecutorName.IN_PROCESS,
        lanes: Iterable[Lane | str] | None = None,
        kinds: Iterable[JobKind | str] | None = None,
        now: float | None = None,
    ) -> Job | None:
        """Claim the next queued job of ``executor`` (interactive lane first, then priority,
        then age), optionally only of some lanes or kinds; None when there is none."""
        at = _now(now)
        c = job_t.c
        q = select(c.id).where(
            c.executor == _parse(ExecutorName, executor, "executor").value,
            c.status == JobStatus.QUEUED.value,
        )
        if lanes is not None:
            q = q.where(c.lane.in_([_parse(Lane, x, "lane").value for x in lanes]))
        if kinds is not None:
            q = q.where(c.kind.in_([_parse(JobKind, x, "job kind").value for x in kinds]))
        q = q.order_by(_LANE_ORDER, c.priority.desc(), c.created_at, c.id).limit(1)
        if self.store.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        with self.store._write() as conn:
            job_id = conn.execute(q).scalar()
            if job_id is None:
                return None
            done = conn.execute(
                update(job_t)
                .where(c.id == job_id, c.status == JobStatus.QUEUED.value)
                .values(_claim_values(owner, lease_s, at))
            )
            if done.rowcount != 1:  # taken between the read and the write (SQLite only)
                return None
            return job_from_row(self._need(conn, job_id))

    def heartbeat(
        self, job_id: str, token: str, lease_s: float, *, now: float | None = None
    ) -> Beat:
        """Renew the lease of the claim ``token``; the answer says whether the claim still
        holds and whether someone asked to cancel the job."""
        at = _now(now)
        with self.store._write() as conn:
            done = conn.execute(
                update(job_t)
                .where(job_t.c.id == job_id, job_t.c.lease_token == token)
                .values(heartbeat_at=at, lease_until=at + lease_s)
            )
            if done.rowcount != 1:
                return Beat(held=False, cancel_requested=False)
            asked = conn.execute(
                select(job_t.c.cancel_requested).where(job_t.c.id == job_id)
            ).scalar()
        return Beat(held=True, cancel_requested=bool(asked))

    def progress(
        self,
        job_id: str,
        token: str,
        *,
        done: int | None = None,
        total: int | None = None,
        note: str | None = None,
        result_ref: str | None = None,
    ) -> bool:
        """Record how far the job is (only what is given changes; ``note=""`` clears the note).
        False when the claim ``token`` no longer holds the job."""
        values: dict[str, Any] = {}
        if done is not None:
            values["progress_done"] = done
        if total is not None:
            values["progress_total"] = total
        if note is not None:
            values["note"] = note or None
        if result_ref is not None:
            values["result_ref"] = result_ref
        if not values:
            return True
        with self.store._write() as conn:
            changed = conn.execute(
                update(job_t)
                .where(job_t.c.id == job_id, job_t.c.lease_token == token)
                .values(values)
            )
            return bool(changed.rowcount == 1)

    def finish(
        self,
        job_id: str,
        token: str,
        status: JobStatus | str,
        *,
        result_ref: str | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        now: float | None = None,
    ) -> bool:
        """End the claim ``token`` with a final status and what the job made or why it did
        not. False, and nothing changed, when the claim was lost."""
        status = _parse(JobStatus, status, "job status")
        if not status.final:
            raise InputError(f"a job finishes done, failed, cancelled or interrupted, not {status}")
        values: dict[str, Any] = {
            "status": status.value,
            "finished_at": _now(now),
            "lease_token": None,
            "lease_until": None,
            "error": error,
            "note": None,
            "idempotency_key": _RELEASED_KEY,
        }
        if result_ref is not None:
            values["result_ref"] = result_ref
        if result is not None:
            values["result_json"] = dumps(dict(result))
        with self.store._write() as conn:
            done = conn.execute(
                update(job_t)
                .where(job_t.c.id == job_id, job_t.c.lease_token == token)
                .values(values)
            )
            return bool(done.rowcount == 1)

    def request_cancel(self, job_id: str, *, now: float | None = None) -> Job:
        """Ask a job to stop. A queued one is cancelled at once; a running one is flagged and
        its executor stops it at its next heartbeat; a finished one is left as it is."""
        at = _now(now)
        c = job_t.c
        with self.store._write() as conn:
            self._need(conn, job_id)
            conn.execute(
                update(job_t)
                .where(c.id == job_id, c.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.CANCELLED.value,
                    cancel_requested=True,
                    finished_at=at,
                    error="cancelled before it started",
                    idempotency_key=_RELEASED_KEY,
                )
            )
            conn.execute(
                update(job_t)
                .where(c.id == job_id, c.status == JobStatus.RUNNING.value)
                .values(cancel_requested=True)
            )
            return job_from_row(self._need(conn, job_id))

    # -- reading -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        with self.store._read() as conn:
            return job_from_row(self._need(conn, job_id))

    def by_key(self, idempotency_key: str) -> Job | None:
        """The job an idempotency key names (an active key: ``ACTIVE`` + it), if any."""
        q = select(job_t).where(job_t.c.idempotency_key == idempotency_key)
        with self.store._read() as conn:
            r = conn.execute(q).mappings().first()
        return None if r is None else job_from_row(r)

    def for_ref(self, result_ref: str) -> Job | None:
        """The newest job that made (or is making) a run, batch, sweep or curve."""
        q = (
            select(job_t)
            .where(job_t.c.result_ref == result_ref)
            .order_by(job_t.c.created_at.desc())
            .limit(1)
        )
        with self.store._read() as conn:
            r = conn.execute(q).mappings().first()
        return None if r is None else job_from_row(r)

    def list_jobs(
        self,
        *,
        statuses: Iterable[JobStatus | str] | None = None,
        kinds: Iterable[JobKind | str] | None = None,
        submitted_by: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs newest first."""
        c = job_t.c
        q = select(job_t)
        if statuses is not None:
            q = q.where(c.status.in_([_parse(JobStatus, s, "job status").value for s in statuses]))
        if kinds is not None:
            q = q.where(c.kind.in_([_parse(JobKind, k, "job kind").value for k in kinds]))
        if submitted_by is not None:
            q = q.where(c.submitted_by == submitted_by)
        q = q.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        with self.store._read() as conn:
            return [job_from_row(r) for r in conn.execute(q).mappings()]

    def ahead_of(self, job_id: str) -> list[Job]:
        """What a queued job waits behind: the running jobs of its executor and the queued
        ones that will be claimed before it, in that order. Empty once it runs."""
        c = job_t.c
        with self.store._read() as conn:
            me = job_from_row(self._need(conn, job_id))
            if me.status != JobStatus.QUEUED:
                return []
            mine = c.executor == me.executor.value
            running = conn.execute(
                select(job_t)
                .where(mine, c.status == JobStatus.RUNNING.value)
                .order_by(c.started_at, c.id)
            ).mappings()
            out = [job_from_row(r) for r in running]
            queued = conn.execute(
                select(job_t)
                .where(mine, c.status == JobStatus.QUEUED.value)
                .order_by(_LANE_ORDER, c.priority.desc(), c.created_at, c.id)
            ).mappings()
            for r in queued:  # jobs are coarse (a batch is one): the queue is short
                if r["id"] == me.id:
                    break
                out.append(job_from_row(r))
        return out

    # -- faults --------------------------------------------------------------------------------

    def reap(
        self,
        *,
        now: float | None = None,
        resumable: Iterable[JobKind] = RESUMABLE,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> list[Reaped]:
        """Running jobs whose executor is gone (its process on this host has ended, or its
        lease expired) are queued again when their kind resumes from the store and they have
        attempts left, and marked ``interrupted`` otherwise, each with the reason."""
        at = _now(now)
        kinds = {JobKind(k) for k in resumable}
        with self.store._read() as conn:
            rows = conn.execute(
                select(job_t).where(job_t.c.status == JobStatus.RUNNING.value)
            ).mappings()
            running = [job_from_row(r) for r in rows]
        reaped: list[Reaped] = []
        for job in running:
            owner = job.owner
            if owner is not None and holds(owner, job.lease_until, at):
                continue
            reason = _why_stale(job, at)
            if job.kind in kinds and job.attempts < max_attempts:
                values: dict[str, Any] = {
                    "status": JobStatus.QUEUED.value,
                    "note": f"resumed: {reason}",
                }
                status = JobStatus.QUEUED
            else:
                values = {
                    "status": JobStatus.INTERRUPTED.value,
                    "error": reason,
                    "note": None,
                    "finished_at": at,
                    "idempotency_key": _RELEASED_KEY,
                }
                status = JobStatus.INTERRUPTED
            values.update(lease_token=None, lease_until=None)
            guard = (
                job_t.c.lease_token.is_(None)
                if owner is None
                else job_t.c.lease_token == owner.token
            )
            with self.store._write() as conn:
                done = conn.execute(
                    update(job_t)
                    .where(job_t.c.id == job.id, job_t.c.status == JobStatus.RUNNING.value, guard)
                    .values(values)
                )
            if done.rowcount == 1:
                reaped.append(Reaped(job.id, status, reason))
        return reaped

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _need(conn: Connection, job_id: str) -> RowMapping:
        r = conn.execute(select(job_t).where(job_t.c.id == job_id)).mappings().first()
        if r is None:
            raise NotFoundError(f"no job {job_id!r} in the store")
        return r


def _why_stale(job: Job, at: float) -> str:
    owner = job.owner
    if owner is None:
        return "its executor left no claim"
    who = f"pid {owner.pid} on {owner.host}"
    if owner.host == socket.gethostname():
        return f"its executor ({who}) has exited"
    stamp = time.strftime("%H:%M:%S UTC", time.gmtime(job.lease_until or at))
    return f"its executor ({who}) stopped renewing its lease (expired {stamp})"


E = TypeVar("E", JobKind, JobStatus, Lane, ExecutorName)


def _parse(enum: type[E], value: E | str, what: str) -> E:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise InputError(f"unknown {what} {value!r}: use {choices}") from None
