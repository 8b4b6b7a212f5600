"""Running one claimed job to its end, whichever executor claimed it.

``execute`` keeps the job's lease alive while the work goes on, stops the work when someone
asks to cancel it (seen at a heartbeat, or at once through ``JobRun.cancel``) or when the
claim is lost, writes progress, and finishes the job with the status that says what
happened: ``done``, ``failed`` (with the one-line error), ``cancelled``, or ``interrupted``
when the executor itself is stopping. The work of each kind reads its spec and the store only,
so a queue worker on another host runs it exactly as the dashboard does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from core.engine import EventSink
from core.errors import StoreError, TallyError
from core.jobs.model import Job, JobKind, JobStatus
from core.jobs.specs import BatchSpec, CurveSpec, RevoteSpec, SweepSpec, VoteSpec, parse_spec
from core.jobs.store import JobStore
from core.result import RunResult
from core.store import Store
from core.store.lease import Owner

if TYPE_CHECKING:
    from core.analysis import SweepPoint
    from core.api import Tally

CANCELLED = "cancelled by request"
STOPPED = "stopped: its executor shut down"
PROGRESS_EVERY_S = 1.0
"""Batch progress is written at most this often: the job row is not a per-run counter."""


def one_line(err: BaseException) -> str:
    """The first non-empty line of an error, for a job's ``error``."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if isinstance(err, TallyError) else f"{type(err).__name__}: {text}"


@dataclass
class Hooks:
    """What an executor watches live, beside the job row: a vote's events, a batch's runs,
    a sweep's levels."""

    on_event: EventSink | None = None
    on_result: Callable[[RunResult], None] | None = None
    on_level: Callable[[SweepPoint], None] | None = None


@dataclass(frozen=True)
class Outcome:
    """What a job made: the id it points at, a small summary for its row, and the value
    itself for the caller that waits (a run's result, a batch's summary, a report)."""

    ref: str | None
    result: dict[str, Any]
    value: Any = None


@dataclass(frozen=True)
class Finished:
    job: Job
    value: Any = None


class JobRun:
    """One claimed job while it runs: its lease, its progress, its cancel switch."""

    def __init__(
        self, tally: Tally, job: Job, owner: Owner, lease_s: float, hooks: Hooks | None
    ) -> None:
        if tally.store is None:
            raise TallyError("jobs need the store, but persistence is off")
        self.tally = tally
        self.store: Store = tally.store
        self.jobs = JobStore(tally.store)
        self.job = job
        self.owner = owner
        self.lease_s = lease_s
        self.hooks = hooks or Hooks()
        self.stop_reason: str | None = None  # CANCELLED, or the lost claim's
        self._scope: anyio.CancelScope | None = None
        self._done_soon: int | None = None  # a count for the progress task to write

    def cancel(self, reason: str = CANCELLED) -> None:
        """Stop the work now (from the executor's own loop)."""
        self.stop_reason = self.stop_reason or reason
        if self._scope is not None:
            self._scope.cancel()

    def done_soon(self, done: int) -> None:
        """Note a count that changes often (a batch's finished runs): written within
        PROGRESS_EVERY_S by the job's progress task, not once per run."""
        self._done_soon = done

    async def _write_progress(self) -> None:
        while True:
            await anyio.sleep(PROGRESS_EVERY_S)
            done, self._done_soon = self._done_soon, None
            if done is not None:
                await self.progress(done=done)

    async def progress(
        self, *, done: int | None = None, total: int | None = None, note: str | None = None
    ) -> None:
        """Write how far the job is."""
        # progress is advice: when the store fails it, the next write or the finish says it
        with contextlib.suppress(StoreError):
            await anyio.to_thread.run_sync(
                lambda: self.jobs.progress(
                    self.job.id, self.owner.token, done=done, total=total, note=note
                )
            )

    async def _beat(self) -> None:
        while True:
            await anyio.sleep(self.lease_s / 3)
            try:
                beat = await anyio.to_thread.run_sync(
                    self.jobs.heartbeat, self.job.id, self.owner.token, self.lease_s
                )
            except StoreError:
                continue  # tried again at the next beat, well inside the lease
            if not beat.held:
                self.cancel("its claim was lost: another executor holds the job now")
                return
            if beat.cancel_requested:
                self.cancel()
                return


async def execute(
    tally: Tally,
    job: Job,
    owner: Owner,
    *,
    lease_s: float | None = None,
    hooks: Hooks | None = None,
    run: JobRun | None = None,
    reraise: bool = False,
) -> Finished:
    """Run ``job`` (claimed by ``owner``) to its end and finish it; returns the job as it
    ended and, when it is done, what its work returned.

    A cancellation from outside (the executor closing, Ctrl-C) finishes the job
    ``interrupted`` and propagates; a cancel request, seen here, finishes it ``cancelled``
    and returns. A failure finishes it ``failed``; with ``reraise`` (a CLI, a library call
    that waits) its error is then raised, so the caller sees the error itself."""
    run = run or JobRun(tally, job, owner, lease_s or tally.settings.batch_lease_s, hooks)
    work = WORK[job.kind]
    outcome: Outcome | None = None
    error: str | None = None
    failure: Exception | None = None
    try:
        with anyio.CancelScope() as scope:
            run._scope = scope
            if run.stop_reason is not None:
                scope.cancel()
            async with anyio.create_task_group() as tg:
                tg.start_soon(run._beat)
                tg.start_soon(run._write_progress)
                try:
                    outcome = await work(run)
                except Exception as err:  # recorded on the job; raised on only if asked
                    error, failure = one_line(err), err
                tg.cancel_scope.cancel()
            if run._done_soon is not None:  # the last count, after any write in flight
                with anyio.CancelScope(shield=True):
                    await run.progress(done=run._done_soon)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await _finish(run, JobStatus.INTERRUPTED, error=STOPPED)
        raise
    if outcome is not None and run.stop_reason is None:
        status, error = JobStatus.DONE, None
    elif run.stop_reason == CANCELLED:
        status, error = JobStatus.CANCELLED, CANCELLED
    elif run.stop_reason is not None:  # the claim is gone: nothing of ours to write
        return Finished(await anyio.to_thread.run_sync(run.jobs.get, job.id))
    else:
        status = JobStatus.FAILED
    with anyio.CancelScope(shield=True):
        ended = await _finish(run, status, outcome=outcome, error=error)
    if reraise and failure is not None:
        raise failure
    return Finished(ended, outcome.value if outcome is not None and status == "done" else None)


async def run_here(
    tally: Tally,
    kind: JobKind,
    spec: dict[str, Any],
    *,
    hooks: Hooks | None = None,
    submitted_by: str | None = None,
    idempotency_key: str | None = None,
    total: int | None = None,
    result_ref: str | None = None,
) -> Finished:
    """Submit a job claimed by this process and run it to its end here (the CLI's and the
    library's way: the work is a job like any other, listed while it runs). Its failure is
    raised; Ctrl-C leaves it ``interrupted``; a key already used gives the job it made
    without running anything again (the value is then None)."""
    store = tally.store
    if store is None:
        raise TallyError("jobs need the store, but persistence is off")
    jobs = JobStore(store)
    owner = Owner.here()
    lease_s = tally.settings.batch_lease_s
    job = await anyio.to_thread.run_sync(
        lambda: jobs.submit(
            kind,
            spec,
            submitted_by=submitted_by,
            idempotency_key=idempotency_key,
            total=total,
            result_ref=result_ref,
            owner=owner,
            lease_s=lease_s,
        )
    )
    if not job.held_by(owner):
        return Finished(job)
    return await execute(tally, job, owner, lease_s=lease_s, hooks=hooks, reraise=True)


async def _finish(
    run: JobRun, status: JobStatus, *, outcome: Outcome | None = None, error: str | None = None
) -> Job:
    try:
        await run.tally.flush()
    except TallyError as err:
        status, error = JobStatus.FAILED, error or one_line(err)
    ref = outcome.ref if outcome is not None else None
    result = outcome.result if outcome is not None and status == JobStatus.DONE else None
    jobs, token = run.jobs, run.owner.token
    await anyio.to_thread.run_sync(
        lambda: jobs.finish(run.job.id, token, status, result_ref=ref, result=result, error=error)
    )
    return await anyio.to_thread.run_sync(jobs.get, run.job.id)


# -- the work of each kind ---------------------------------------------------------------------


async def vote(run: JobRun) -> Outcome:
    spec: VoteSpec = parse_spec(JobKind.VOTE, run.job.spec)
    result = await run.tally.vote(
        spec.input,
        spec.run_spec(),
        source=spec.source,
        on_event=run.hooks.on_event,
        run_id=spec.run_id,
        submitted_by=spec.submitted_by,
    )
    d = result.decision
    summary = {"status": d.status.value, "label": d.label, "cost_usd": result.cost_usd}
    return Outcome(result.run_id, summary, result)


async def run_stored_batch(run: JobRun, batch_id: str) -> None:
    """Run what a stored batch has not finished, its progress on the job row."""
    from core.batch import load_resume

    store = run.store
    items, spec = await anyio.to_thread.run_sync(load_resume, store, batch_id)
    counts = await anyio.to_thread.run_sync(store.batch_counts, batch_id)
    done = int(counts["done"])
    await run.progress(done=done, total=int(counts["total"]))
    info = await anyio.to_thread.run_sync(store.get_batch, batch_id)

    def on_result(result: RunResult) -> None:
        nonlocal done
        done += 1
        if run.hooks.on_result is not None:
            run.hooks.on_result(result)
        run.done_soon(done)

    await run.tally.run_batch(
        items, spec, name=info.name, source=info.source, on_result=on_result, batch_id=batch_id
    )


async def batch(run: JobRun) -> Outcome:
    from core.batch import batch_summary

    spec: BatchSpec = parse_spec(JobKind.BATCH, run.job.spec)
    await run_stored_batch(run, spec.batch_id)
    summary = await anyio.to_thread.run_sync(batch_summary, run.store, spec.batch_id)
    keep: dict[str, Any] = {k: summary[k] for k in ("total", "done", "cost_usd") if k in summary}
    return Outcome(spec.batch_id, keep, summary)


async def curve(run: JobRun) -> Outcome:
    from core.experiments.curve import curve_from_batch

    spec: CurveSpec = parse_spec(JobKind.CURVE, run.job.spec)
    await run_stored_batch(run, spec.batch_id)
    await run.progress(note="curving the draw")
    report = await anyio.to_thread.run_sync(
        lambda: curve_from_batch(
            run.store,
            spec.batch_id,
            ns=spec.ns,
            panels=spec.panels,
            seed=spec.seed,
            min_gain=spec.min_gain,
            set_name=spec.set_name,
            params=spec.params,
        )
    )
    return Outcome(report.curve_id, {"batch_id": spec.batch_id}, report)


async def sweep(run: JobRun) -> Outcome:
    from core.experiments.sweep import demo_sweep_async, sweep_and_store

    spec: SweepSpec = parse_spec(JobKind.SWEEP, run.job.spec)
    levels_done = 0
    await run.progress(done=0, total=len(spec.levels))
    # a sweep measures levels above the session's ceiling, so it opens one as wide as its top
    # level, on the same store
    url = run.store.engine.url.render_as_string(hide_password=False)

    def on_level(point: SweepPoint) -> None:
        nonlocal levels_done
        levels_done += 1
        if run.hooks.on_level is not None:
            run.hooks.on_level(point)
        run.done_soon(levels_done)

    async def measure() -> Any:
        if spec.demo is not None:
            return await demo_sweep_async(
                spec.demo,
                levels=spec.levels,
                calls_per_level=spec.calls_per_level,
                database_url=url,
                on_level=on_level,
            )
        assert spec.model is not None
        return await sweep_and_store(
            spec.model,
            spec.levels,
            calls_per_level=spec.calls_per_level,
            config=run.tally.config.path,
            database_url=url,
            on_level=on_level,
        )

    report = await measure()
    return Outcome(report.sweep_id, {"model": report.model}, report)


async def revote(run: JobRun) -> Outcome:
    spec: RevoteSpec = parse_spec(JobKind.REVOTE, run.job.spec)
    await run.progress(done=0, total=len(spec.run_ids))
    results = await run.tally.revote(spec.run_ids, spec.parsed_policy(), expand=spec.expand)
    await run.progress(done=len(results))
    ids = [r.run_id for r in results]
    return Outcome(ids[0] if len(ids) == 1 else None, {"run_ids": ids}, results)


WORK: dict[JobKind, Callable[[JobRun], Awaitable[Outcome]]] = {
    JobKind.VOTE: vote,
    JobKind.BATCH: batch,
    JobKind.CURVE: curve,
    JobKind.SWEEP: sweep,
    JobKind.REVOTE: revote,
}
