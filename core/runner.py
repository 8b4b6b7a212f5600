"""The background runner: one per dashboard process, running votes and batches off the page.

A Streamlit script is re-run on every click and stops when the tab closes, so work started from
a page cannot live in the script. The runner owns a long-lived event loop in its own thread (an
anyio blocking portal) and, inside it, one ``Tally`` session: the HTTP client, the limiters and
the store writer are created once in that loop and shared by every job, exactly as in the CLI.

Pages call the runner from the script thread: ``submit_*`` validate synchronously (a bad input
raises before anything is stored or started) and return an id at once; ``*_progress`` return
copies of state the loop thread keeps up to date from the engine's events, under one lock.
A failing job ends with a one-line ``error``; it never takes the runner down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from core.api import Tally, new_id
from core.auth import Identity, Role
from core.batch import load_resume
from core.cost import is_simulated
from core.engine import RUN_CANCELLED, RunRequest, build_result, call_order
from core.errors import InputError, TallyError
from core.policy import Policy
from core.result import (
    CallResult,
    CallStatus,
    Decision,
    DecisionStatus,
    Event,
    RunResult,
)
from core.spec import RunSpec
from core.store import BatchItem, Store
from core.whatif import check_no_calls

JobKind = Literal["run", "batch"]
SlotKey = tuple[str, int]

MAX_EVENTS = 200
"""Event lines kept per run: enough to read what happened, bounded for long tie-break chains."""

MAX_FINISHED_JOBS = 100
"""Finished jobs remembered for the pages; older ones are read from the store instead."""


@dataclass
class RunProgress:
    """A run as the Run page shows it while it goes on. Returned as a copy: safe to keep."""

    run_id: str
    input: str
    started_at: float
    calls: dict[SlotKey, CallResult] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    decision: Decision | None = None
    result: RunResult | None = None
    done: bool = False
    error: str | None = None
    cancelled: bool = False

    def sorted_calls(self) -> list[CallResult]:
        """Panel slots first, then expand, then escalate, each by slot."""
        return sorted(self.calls.values(), key=call_order)


@dataclass
class BatchProgress:
    """A batch as the Batch page shows it. ``done`` counts finished runs, resumed ones included;
    ``rate`` and ``eta_s`` count only runs finished by this job (None until one has)."""

    batch_id: str
    name: str
    total: int
    started_at: float
    done: int = 0
    done_at_start: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    cost_known_usd: float = 0.0  # every finished run's known cost or known part
    simulated: bool = False  # priced from the sim catalogue
    unknown_cost_runs: int = 0
    finished: bool = False
    error: str | None = None
    cancelled: bool = False
    finished_at: float | None = None

    @property
    def cost_usd(self) -> float | None:
        """The batch's cost so far, or ``None`` once any run's is unknown."""
        return None if self.unknown_cost_runs else self.cost_known_usd

    @property
    def rate(self) -> float | None:
        """Runs per second finished by this job."""
        new = self.done - self.done_at_start
        end = self.finished_at or time.time()
        elapsed = end - self.started_at
        if new <= 0 or elapsed <= 0:
            return None
        return new / elapsed

    @property
    def eta_s(self) -> float | None:
        rate = self.rate
        if self.finished:
            return 0.0
        if rate is None:
            return None
        return max(0, self.total - self.done) / rate


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    kind: JobKind
    title: str
    started_at: float
    finished: bool
    error: str | None
    cancelled: bool


@dataclass
class _Job:
    job_id: str
    kind: JobKind
    title: str
    started_at: float
    scope: anyio.CancelScope | None = None
    cancel_requested: bool = False
    future: Future[None] | None = None
    finished: bool = False
    error: str | None = None
    cancelled: bool = False


def one_line(err: BaseException) -> str:
    """The first non-empty line of an error, for a job's ``error``."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if isinstance(err, TallyError) else f"{type(err).__name__}: {text}"


def event_line(event: Event) -> str:
    """One readable line per engine event."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
    where = f" slot {event.slot}" if event.slot is not None else ""
    detail = event.message
    if not detail and event.call is not None:
        call = event.call
        detail = call.status.value
        if call.status == CallStatus.OK:
            detail += f": {call.answer}"
        elif call.error:
            detail += f": {call.error}"
    if not detail and event.decision is not None:
        detail = event.decision.status.value
    return f"{stamp} {event.kind}{where}" + (f" - {detail}" if detail else "")


class Runner:
    """Runs and batches in a background event loop, with progress the pages can poll."""

    def __init__(
        self, *, config: str | Path | None = None, database_url: str | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._runs: dict[str, RunProgress] = {}
        self._batches: dict[str, BatchProgress] = {}
        self._closed = False
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._tally_cm: AbstractContextManager[Tally] = self._portal.wrap_async_context_manager(
                Tally.open(config=config, database_url=database_url)
            )
            self.tally: Tally = self._tally_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        assert self.tally.store is not None  # opened with persistence on
        self.store: Store = self.tally.store

    # -- runs ----------------------------------------------------------------------------------

    def submit_run(self, text: str, spec: RunSpec, *, actor: Identity) -> str:
        """Start one vote in the background and return its run id.

        Everything that can be refused is checked here, before a row is written or a call made:
        the actor's right to spend first.
        """
        actor.require(Role.RUNNER)
        self._check_open()
        request = RunRequest(
            run_id=new_id(), input=text, spec=spec, source="ui", submitted_by=actor.to_json()
        )
        self._portal.call(self.tally.engine.validate, request)
        progress = RunProgress(run_id=request.run_id, input=text, started_at=time.time())
        for slot in spec.panel.slots():
            progress.calls[("panel", slot.index)] = CallResult(
                slot=slot.index, model=slot.model.name, sample=slot.sample
            )
        title = f"vote: {' '.join(text.split())[:60]}"
        job = _Job(request.run_id, "run", title, progress.started_at)
        with self._lock:
            self._runs[request.run_id] = progress
            self._jobs[request.run_id] = job
            self._prune()
        self._start(job, lambda: self._run_job(job, request))
        return request.run_id

    def run_progress(self, run_id: str) -> RunProgress | None:
        """A copy of the run's progress, or None for a run this runner does not know."""
        with self._lock:
            progress = self._runs.get(run_id)
            if progress is None:
                return None
            return replace(progress, calls=dict(progress.calls), events=list(progress.events))

    async def _run_job(self, job: _Job, request: RunRequest) -> None:
        progress = self._runs[request.run_id]

        def on_event(event: Event) -> None:
            with self._lock:
                if event.call is not None:
                    call = event.call
                    progress.calls[(call.phase, call.slot)] = call.model_copy()
                if event.decision is not None:
                    progress.decision = event.decision
                progress.events.append(event_line(event))
                del progress.events[:-MAX_EVENTS]

        async def body() -> None:
            result = await self.tally.vote(
                request.input,
                request.spec,
                source=request.source,
                on_event=on_event,
                run_id=request.run_id,
                submitted_by=request.submitted_by,
            )
            with self._lock:
                progress.result = result
                progress.decision = result.decision
                progress.calls = {(c.phase, c.slot): c.model_copy() for c in result.calls}

        async def on_cancel() -> None:  # the engine has stored the run failed already
            result = self._cancelled_result(request, progress)
            with self._lock:
                progress.result = result
                progress.decision = result.decision
                progress.calls = {(c.phase, c.slot): c for c in result.calls}

        def on_end(error: str | None, cancelled: bool) -> None:
            progress.done = True
            progress.error = error
            progress.cancelled = cancelled
            line = "cancelled by the user" if cancelled else (error and f"error: {error}")
            if line:
                progress.events.append(line)

        await self._guard(job, body, on_cancel, on_end)

    def _cancelled_result(self, request: RunRequest, progress: RunProgress) -> RunResult:
        """What the page shows of a cancelled run: ``failed``, with what it had, in the words
        the engine stored it with."""
        with self._lock:
            calls = []
            for call in progress.sorted_calls():
                if not call.status.final:
                    call = call.model_copy(
                        update={"status": CallStatus.CANCELLED, "error": RUN_CANCELLED}
                    )
                calls.append(call)
        decision = Decision(status=DecisionStatus.FAILED, reason=RUN_CANCELLED)
        latency_ms = (time.time() - progress.started_at) * 1000
        return build_result(request, calls, decision, latency_ms=latency_ms)

    def revote(self, run_ids: Sequence[str], policy: Policy) -> list[RunResult]:
        """Decide stored runs again under ``policy`` with no new calls, and wait for the
        decisions (stored answers are counted again: moments, not a job)."""
        check_no_calls(policy)
        self._check_open()
        results = self._portal.call(self.tally.revote, list(run_ids), policy)
        self._portal.call(self.tally.flush)  # listed in History at once
        return results

    # -- batches -------------------------------------------------------------------------------

    def submit_batch(
        self,
        items: Sequence[BatchItem],
        spec: RunSpec,
        *,
        name: str,
        columns: Mapping[str, str | None],
        actor: Identity,
    ) -> str:
        """Create the batch in the store (so it is listed at once) and run it in the background.

        Every item is checked before the batch row is written: an actor who may not spend, an
        empty input or a policy that does not fit the format stores nothing.
        """
        actor.require(Role.RUNNER)
        self._check_open()
        self._portal.call(self.tally.check_batch, items, spec)
        batch_id = self.store.create_batch(
            name=name,
            source="ui",
            spec=spec,
            columns=dict(columns),
            concurrency=self.tally.engine.concurrency,
            items=[(i.index, i.item_id, i.text, i.gold) for i in items],
            submitted_by=actor.to_json(),
        )
        self._start_batch(batch_id, name, list(items), spec)
        return batch_id

    def resume_batch(self, batch_id: str, *, actor: Identity) -> str:
        """Pick an interrupted batch up again: finished runs are skipped, finished calls reused."""
        actor.require(Role.RUNNER)
        self._check_open()
        with self._lock:
            job = self._jobs.get(batch_id)
            if job is not None and not job.finished:
                raise InputError(f"batch {batch_id} is already running")
        items, spec = load_resume(self.store, batch_id)
        self._portal.call(
            self.tally.engine.validate, RunRequest(run_id="check", input=items[0].text, spec=spec)
        )
        info = self.store.get_batch(batch_id)
        self._start_batch(batch_id, info.name, items, spec)
        return batch_id

    def batch_progress(self, batch_id: str) -> BatchProgress | None:
        with self._lock:
            progress = self._batches.get(batch_id)
            if progress is None:
                return None
            return replace(progress, counts=dict(progress.counts))

    def _start_batch(
        self,
        batch_id: str,
        name: str,
        items: list[BatchItem],
        spec: RunSpec,
    ) -> None:
        counts = self.store.batch_counts(batch_id)
        progress = BatchProgress(
            batch_id=batch_id,
            name=name,
            total=int(counts["total"]),
            started_at=time.time(),
            done=int(counts["done"]),
            done_at_start=int(counts["done"]),
            counts={s.value: int(counts[s.value]) for s in DecisionStatus if counts[s.value]},
            cost_known_usd=float(counts["cost_known_usd"]),
            unknown_cost_runs=int(counts["unknown_cost_runs"]),
            simulated=is_simulated(spec.slot_names),
        )
        job = _Job(batch_id, "batch", f"batch: {name}", progress.started_at)
        with self._lock:
            self._batches[batch_id] = progress
            self._jobs[batch_id] = job
            self._prune()

        def on_result(result: RunResult) -> None:
            with self._lock:
                progress.done += 1
                status = result.decision.status.value
                progress.counts[status] = progress.counts.get(status, 0) + 1
                progress.cost_known_usd += result.cost_known_usd
                if result.cost_usd is None:
                    progress.unknown_cost_runs += 1

        async def body() -> None:
            await self.tally.run_batch(
                items,
                spec,
                name=name,
                source="ui",
                on_result=on_result,
                batch_id=batch_id,
            )

        async def on_cancel() -> None:
            return None  # run_batch already marked the batch interrupted

        def on_end(error: str | None, cancelled: bool) -> None:
            progress.finished = True
            progress.finished_at = time.time()
            progress.error = error
            progress.cancelled = cancelled

        self._start(job, lambda: self._guard(job, body, on_cancel, on_end))

    # -- jobs ----------------------------------------------------------------------------------

    def cancel(self, job_id: str, *, actor: Identity) -> bool:
        """Cancel a running run or batch. Calls already recorded stay recorded. False when the
        job is unknown or already finished."""
        actor.require(Role.RUNNER)
        return self._cancel(job_id)

    def _cancel(self, job_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.finished:
                return False
            job.cancel_requested = True
            scope = job.scope
        if scope is not None and not self._closed:
            self._portal.call(scope.cancel)
        return True

    def jobs(self) -> list[JobInfo]:
        """Active and recent jobs, newest first."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)
            return [
                JobInfo(j.job_id, j.kind, j.title, j.started_at, j.finished, j.error, j.cancelled)
                for j in jobs
            ]

    def close(self) -> None:
        """Cancel what is running, commit what was recorded, close the session and the loop."""
        if self._closed:
            return
        with self._lock:
            active = [j for j in self._jobs.values() if not j.finished]
        for job in active:
            self._cancel(job.job_id)
        for job in active:
            if job.future is not None:
                job.future.exception()  # waits; _guard never raises
        self._closed = True
        try:
            self._tally_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside the loop -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TallyError("the runner is closed")

    def _start(self, job: _Job, work: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            await work()

        job.future = self._portal.start_task_soon(main)

    async def _guard(
        self,
        job: _Job,
        body: Callable[[], Awaitable[None]],
        on_cancel: Callable[[], Awaitable[None]],
        on_end: Callable[[str | None, bool], None],
    ) -> None:
        """Run ``body`` under the job's cancel scope; whatever happens, end the job cleanly."""
        error: str | None = None
        with anyio.CancelScope() as scope:
            with self._lock:
                job.scope = scope
                if job.cancel_requested:
                    scope.cancel()
            try:
                await body()
            except Exception as err:  # a job's failure is reported, never raised into the loop
                error = one_line(err)
        cancelled = scope.cancelled_caught
        if cancelled:
            with anyio.CancelScope(shield=True):
                try:
                    await on_cancel()
                    await self.tally.flush()
                except Exception as err:
                    error = one_line(err)
        else:
            with anyio.CancelScope(shield=True):
                try:
                    await self.tally.flush()
                except Exception as err:
                    error = error or one_line(err)
        with self._lock:
            on_end(error, cancelled)
            job.finished = True
            job.error = error
            job.cancelled = cancelled

    def _prune(self) -> None:
        """Forget the oldest finished jobs beyond MAX_FINISHED_JOBS (caller holds the lock)."""
        finished = [j for j in self._jobs.values() if j.finished]
        if len(finished) <= MAX_FINISHED_JOBS:
            return
        finished.sort(key=lambda j: j.started_at)
        for job in finished[: len(finished) - MAX_FINISHED_JOBS]:
            del self._jobs[job.job_id]
            self._runs.pop(job.job_id, None)
            self._batches.pop(job.job_id, None)
