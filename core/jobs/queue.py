"""Queue workers for a team: batches run by ``tally worker`` processes on any number of hosts,
through pgqueuer on the PostgreSQL store.

A batch goes to the queue as parts of a few items, one pgqueuer job each. pgqueuer's per-job
heartbeat is the lease: a worker killed mid-part stops beating, and once its heartbeat is
``queue_heartbeat_s`` old another worker picks the part up again. That worker makes only the
calls the store does not have (finished runs are skipped, finished calls reused: the batch
resume's rule), so no call is paid twice and the results are those of an uninterrupted batch.

The job row (``core.jobs.store``) stays the one view of the batch. It is claimed by the first
part to start, under the queue's own claim: one token, derived from the job id, that every
worker running a part of it shares. Each of them renews its lease and reads its cancel flag;
the part that finds the batch complete finishes it. The batch row is claimed the same way, so
a ``tally batch --resume`` elsewhere is refused while workers run it. When every worker of a
job is gone, its lease runs out and ``JobStore.reap`` (which workers run too) queues it again;
its parts are still in the queue for the next worker.

pgqueuer's tables live in their own schema (``tally_queue``), created by a migration on
PostgreSQL; SQLite stores have no queue.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import anyio

from core.errors import InputError, StoreError, TallyError
from core.jobs.model import Beat, ExecutorName, Job, JobKind, JobStatus, Lane
from core.jobs.store import JobStore
from core.spec import RunSpec
from core.store import BatchItem, Store
from core.store.lease import Owner

if TYPE_CHECKING:
    from pgqueuer.domain.settings import DBSettings
    from pgqueuer.queries import Queries

    from core.api import Tally

QUEUE_SCHEMA = "tally_queue"
PART = "tally.batch-part"
"""The pgqueuer entrypoint of a part of a batch."""
PART_ITEMS = 20
"""Items per part: small enough that a killed worker's part is little to redo, large enough
that the queue's own work per item stays small (``benchmarks/workers.py``)."""
QUEUE_HOST = "queue workers"
"""The host name of the queue's shared claim: not a host, so only its lease says it lives."""
CANCELLED = "cancelled by request"


@lru_cache
def queue_settings() -> DBSettings:
    from pgqueuer.domain.settings import DBSettings

    return DBSettings(db_schema=QUEUE_SCHEMA)


def install_sql() -> str:
    """pgqueuer's schema, tables, types and trigger, in ``tally_queue`` (for the migration)."""
    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment

    return QueryBuilderEnvironment(queue_settings()).build_install_query()


def uninstall_sql() -> str:
    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment

    return QueryBuilderEnvironment(queue_settings()).build_uninstall_query()


def queries(driver: Any) -> Queries:
    from pgqueuer.adapters.persistence.qb import (
        QueryBuilderEnvironment,
        QueryQueueBuilder,
        QuerySchedulerBuilder,
    )
    from pgqueuer.queries import Queries

    s = queue_settings()
    return Queries(
        driver,
        qbe=QueryBuilderEnvironment(s),
        qbq=QueryQueueBuilder(s),
        qbs=QuerySchedulerBuilder(s),
    )


def queue_dsn(store: Store) -> str:
    """The store's URL as psycopg takes it; a SQLite store has no queue."""
    if store.dialect != "postgresql":
        raise InputError(
            "queue workers need a PostgreSQL store "
            "(TALLY_DATABASE_URL=postgresql+psycopg://USER@HOST/DB), not " + store.safe_url
        )
    return store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def queue_owner(job_id: str) -> Owner:
    """The claim every worker running a part of ``job_id`` shares."""
    return Owner(QUEUE_HOST, 0, f"queue-{job_id}", time.time())


@dataclass(frozen=True)
class Part:
    """Items ``start`` to ``stop`` (excluded) of a batch job."""

    job_id: str
    batch_id: str
    start: int
    stop: int

    def payload(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_payload(cls, payload: bytes | None) -> Part:
        return cls(**json.loads(payload or b"{}"))

    @property
    def key(self) -> str:
        """pgqueuer's dedupe key: a part is in the queue at most once."""
        return f"{self.job_id}:{self.start}"


def split(job_id: str, batch_id: str, total: int, size: int = PART_ITEMS) -> list[Part]:
    return [
        Part(job_id, batch_id, start, min(total, start + size)) for start in range(0, total, size)
    ]


class QueueExecutor:
    """The executor of a team: a submission is a queued job and its parts in the queue, run by
    whichever ``tally worker`` takes them. Only batches go to workers."""

    def __init__(self, store: Store, *, part_items: int = PART_ITEMS) -> None:
        self.dsn = queue_dsn(store)
        self.store = store
        self.jobs = JobStore(store)
        if part_items < 1:
            raise InputError(f"a part holds at least one item, got {part_items}")
        self.part_items = part_items

    def submit(
        self,
        kind: JobKind,
        spec: Mapping[str, Any],
        *,
        submitted_by: str | None = None,
        idempotency_key: str | None = None,
        lane: Lane | None = None,
        priority: int = 0,
        total: int | None = None,
        result_ref: str | None = None,
    ) -> Job:
        """Queue a stored batch (``spec`` = ``{"batch_id": ...}``). The same key again gives
        the job it made and puts back any part missing from the queue, never one twice."""
        if kind != JobKind.BATCH:
            raise InputError(f"queue workers run batches; a {kind} runs in-process")
        batch_id = str(spec.get("batch_id", ""))
        info = self.store.get_batch(batch_id)
        job = self.jobs.submit(
            kind,
            {"batch_id": batch_id},
            submitted_by=submitted_by,
            idempotency_key=idempotency_key,
            lane=lane,
            priority=priority,
            executor=ExecutorName.QUEUE,
            total=info.total if total is None else total,
            result_ref=result_ref or batch_id,
        )
        if not job.finished:
            try:
                self._enqueue(split(job.id, batch_id, info.total, self.part_items), priority)
            except StoreError:
                self.jobs.request_cancel(job.id)  # never a queued job nobody will run
                raise
        return job

    def _enqueue(self, parts: list[Part], priority: int) -> None:
        import psycopg
        from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
        from pgqueuer.adapters.persistence.qb import QueryQueueBuilder
        from pgqueuer.queries import SyncQueries

        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                q = SyncQueries(SyncPsycopgDriver(conn), qbq=QueryQueueBuilder(queue_settings()))
                for start in range(0, len(parts), 500):
                    chunk = parts[start : start + 500]
                    q.enqueue(
                        [PART] * len(chunk),
                        [p.payload() for p in chunk],
                        [priority] * len(chunk),
                        dedupe_key=[p.key for p in chunk],
                        on_conflict="skip",
                    )
        except psycopg.Error as exc:
            raise StoreError(f"could not queue the batch's parts: {exc}") from exc

    def cancel(self, job_id: str) -> Job:
        """A queued job ends at once; a running one at its workers' next heartbeat. Its parts
        still in the queue find it finished and end without a call."""
        return self.jobs.request_cancel(job_id)

    def close(self) -> None:
        return None


# -- the worker ----------------------------------------------------------------------------------


def _sync(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread (the store's calls block)."""
    return anyio.to_thread.run_sync(lambda: fn(*args))


async def run_part(tally: Tally, part: Part, lease_s: float) -> None:
    """Run the items of ``part`` not yet finished, under the job's shared claim; finish the
    job when the batch is complete, or cancelled when it was asked to stop."""
    store = tally.store
    assert store is not None
    jobs = JobStore(store)
    owner = queue_owner(part.job_id)
    sync = _sync
    held = await _hold(store, jobs, part, owner, lease_s)
    if held is None:  # finished, or cancelled while queued
        return
    if held.cancel_requested:
        await _end(tally, jobs, part, owner, JobStatus.CANCELLED)
        return
    spec = (await sync(store.get_batch, part.batch_id)).spec
    items: list[BatchItem] = await sync(
        store.batch_items, part.batch_id, range(part.start, part.stop)
    )
    done: set[int] = await sync(store.runs_done, part.batch_id)
    todo = [item for item in items if item.index not in done]
    from core.api import batch_run_id
    from core.engine import RunRequest, reusable_calls

    finished = await sync(
        store.runs_finished_calls, [batch_run_id(part.batch_id, i.index) for i in todo]
    )
    stop: str | None = None

    async def one(item: BatchItem) -> None:
        run_id = batch_run_id(part.batch_id, item.index)
        request = RunRequest(
            run_id=run_id,
            input=item.text,
            spec=spec,
            source="batch",
            batch_id=part.batch_id,
            item_id=item.item_id,
            item_index=item.index,
            gold=item.gold,
        )
        await tally.engine.run(request, prior=reusable_calls(finished.get(run_id, ())))

    async def beat(scope: anyio.CancelScope) -> None:
        nonlocal stop
        while True:
            await anyio.sleep(lease_s / 3)
            try:
                b = await sync(jobs.heartbeat, part.job_id, owner.token, lease_s)
                await sync(store.renew_lease, part.batch_id, owner.token, lease_s)
            except StoreError:
                continue  # tried again at the next beat, well inside the lease
            if not b.held or b.cancel_requested:
                stop = CANCELLED if b.cancel_requested else "lost"
                scope.cancel()
                return

    async with anyio.create_task_group() as outer:
        outer.start_soon(beat, outer.cancel_scope)
        async with anyio.create_task_group() as tg:
            for item in todo:
                tg.start_soon(one, item)
        outer.cancel_scope.cancel()
    with anyio.CancelScope(shield=True):
        await tally.flush()
    if stop == CANCELLED:
        await _end(tally, jobs, part, owner, JobStatus.CANCELLED)
    elif stop is None and await _hold(store, jobs, part, owner, lease_s) is not None:
        info = await sync(store.get_batch, part.batch_id)
        runs = len(await sync(store.runs_done, part.batch_id))
        await sync(lambda: jobs.progress(part.job_id, owner.token, done=runs))
        if runs >= info.total:
            await _end(tally, jobs, part, owner, JobStatus.DONE)


async def _hold(
    store: Store, jobs: JobStore, part: Part, owner: Owner, lease_s: float
) -> Beat | None:
    """Hold the job under the queue's shared claim and renew its lease (and the batch's):
    claimed by this part when it is queued (its first part, or once reaped after every
    worker of it was gone), else renewed. None when it is finished: nothing to run."""
    sync = _sync
    job: Job = await sync(jobs.get, part.job_id)
    if job.status == JobStatus.QUEUED:
        claimed = await sync(jobs.claim, job.id, owner, lease_s)
        if claimed is not None:  # this part (re)starts the job: its other parts renew it
            await sync(store.claim_batch, part.batch_id, owner, lease_s)
            return Beat(held=True, cancel_requested=claimed.cancel_requested)
        job = await sync(jobs.get, job.id)
    if job.finished or not job.held_by(owner):
        return None
    beat: Beat = await sync(jobs.heartbeat, job.id, owner.token, lease_s)
    await sync(store.renew_lease, part.batch_id, owner.token, lease_s)
    return beat if beat.held else None


async def _end(tally: Tally, jobs: JobStore, part: Part, owner: Owner, status: JobStatus) -> None:
    """Finish the job and release the batch (the first part to see the end does it)."""
    from core.batch import batch_summary

    store = tally.store
    assert store is not None
    result: dict[str, Any] | None = None
    if status == JobStatus.DONE:
        summary = await anyio.to_thread.run_sync(batch_summary, store, part.batch_id)
        result = {k: summary[k] for k in ("total", "done", "cost_usd") if k in summary}
    batch_status = "done" if status == JobStatus.DONE else "cancelled"
    await anyio.to_thread.run_sync(store.release_batch, part.batch_id, owner.token, batch_status)
    await anyio.to_thread.run_sync(
        lambda: jobs.finish(
            part.job_id,
            owner.token,
            status,
            result_ref=part.batch_id,
            result=result,
            error=CANCELLED if status == JobStatus.CANCELLED else None,
        )
    )


async def _fail(tally: Tally, part: Part, err: Exception) -> None:
    """A part that broke (not a call: calls end in a recorded state) fails its job, with why."""
    store = tally.store
    assert store is not None
    owner = queue_owner(part.job_id)
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not isinstance(err, TallyError):
        reason = f"{type(err).__name__}: {reason}"
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(store.release_batch, part.batch_id, owner.token, "failed")
        await anyio.to_thread.run_sync(
            lambda: JobStore(store).finish(part.job_id, owner.token, "failed", error=reason)
        )


async def work(
    tally: Tally,
    *,
    concurrency: int = 2,
    heartbeat_s: float | None = None,
    on_ready: Callable[[], None] | None = None,
    on_part: Callable[[Part], None] | None = None,
    stop: anyio.Event | None = None,
) -> None:
    """Take parts from the queue and run them, ``concurrency`` at a time, until ``stop`` is
    set (or SIGINT/SIGTERM, from the CLI). Also reaps jobs whose executor died."""
    import psycopg
    from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
    from pgqueuer.core.qm import QueueManager
    from pgqueuer.domain.types import Channel
    from pgqueuer.models import Job as QueueJob

    store = tally.store
    if store is None:
        raise TallyError("a worker needs the store, but persistence is off")
    if concurrency < 1:
        raise InputError(f"a worker runs at least one part at a time, got {concurrency}")
    heartbeat = heartbeat_s or tally.settings.queue_heartbeat_s
    lease_s = tally.settings.batch_lease_s
    try:
        conn = await psycopg.AsyncConnection.connect(queue_dsn(store), autocommit=True)
    except psycopg.Error as exc:
        raise StoreError(f"cannot reach the queue: {exc}") from exc
    slots = anyio.CapacityLimiter(concurrency)
    async with conn:
        qm = QueueManager(queries(PsycopgDriver(conn)), channel=Channel(queue_settings().channel))

        @qm.entrypoint(PART)
        async def part(job: QueueJob) -> None:
            p = Part.from_payload(job.payload)
            async with slots:
                if on_part is not None:
                    on_part(p)
                try:
                    await run_part(tally, p, lease_s)
                except Exception as err:
                    await _fail(tally, p, err)

        async def reap() -> None:
            jobs = JobStore(store)
            while True:
                with contextlib.suppress(StoreError):  # the next pass tries again
                    await anyio.to_thread.run_sync(jobs.reap)
                await anyio.sleep(heartbeat)

        async def until_stopped() -> None:
            if stop is not None:
                await stop.wait()
                qm.shutdown.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reap)
            tg.start_soon(until_stopped)
            if on_ready is not None:
                on_ready()
            # pgqueuer needs room for twice what one dequeue takes; ``slots`` keeps the rest
            await qm.run(
                batch_size=1,
                max_concurrent_tasks=max(2, concurrency),
                heartbeat_timeout=timedelta(seconds=heartbeat),
                dequeue_timeout=timedelta(seconds=max(0.5, heartbeat / 2)),
            )
            tg.cancel_scope.cancel()


def queue_batch(
    store: Store,
    items: list[BatchItem],
    spec: RunSpec,
    *,
    name: str,
    columns: Mapping[str, str | None],
    concurrency: int,
    batch_id: str | None = None,
    part_items: int = PART_ITEMS,
    submitted_by: str | None = None,
) -> Job:
    """Store a new batch (or take an interrupted one, ``batch_id``) and queue it for workers;
    ``submitted_by`` (``core.auth.Identity.to_json``) is kept on the batch and the job."""
    executor = QueueExecutor(store, part_items=part_items)  # refuses a SQLite store first
    if batch_id is None:
        batch_id = store.create_batch(
            name=name,
            source="queue",
            spec=spec,
            columns=dict(columns),
            concurrency=concurrency,
            items=[(i.index, i.item_id, i.text, i.gold) for i in items],
            submitted_by=submitted_by,
        )
    return executor.submit(JobKind.BATCH, {"batch_id": batch_id}, submitted_by=submitted_by)
