"""The in-process executor: one per dashboard (or CLI) process, running jobs in its own loop.

A Streamlit script is re-run on every click and stops when the tab closes, so work started from
a page cannot live in the script. The executor owns a long-lived event loop in its own thread
(an anyio blocking portal) and, inside it, one ``Tally`` session: the HTTP client, the limiters
and the store writer are created once in that loop and shared by every job, exactly as in the
CLI. Pages never build a second one.

Every submission writes a job row claimed by this process (so no other executor takes it) and
runs it at once; the row is the truth about the job, for this page, another tab, a reload, the
CLI and a restarted dashboard alike. Beside it the executor keeps, for the jobs it runs, the
live detail a row does not hold (each call of a vote as it lands, a batch's counts by
decision), under one lock; pages poll copies of it. A submission validates synchronously: bad
input raises before anything is stored or started. A failing job ends ``failed`` with a
one-line ``error``; it never takes the executor down.

A dashboard's executor also looks after the store's in-process jobs: every few seconds it
reaps jobs whose process died (SIGKILL, a crash) and resumes the resumable ones (batches and
curve draws pick up from the store without paying twice); the others are marked with why.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from core.api import Tally, new_id
from core.auth import Identity, Role
from core.batch import load_resume
from core.cost import is_simulated
from core.engine import RUN_CANCELLED, RunRequest, build_result, call_order
from core.errors import InputError, StoreError, TallyError
from core.jobs.model import ExecutorName, Job, JobKind, JobStatus, Lane, waiting_line
from core.jobs.specs import BatchSpec, CurveSpec, RevoteSpec, SweepSpec, VoteSpec, parse_spec
from core.jobs.store import ACTIVE, RESUMABLE, JobStore
from core.jobs.work import STOPPED, Hooks, JobRun, execute, one_line
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
from core.store.lease import Owner
from core.whatif import check_no_calls

SlotKey = tuple[str, int]

MAX_EVENTS = 200
"""Event lines kept per run: enough to read what happened, bounded for long tie-break chains."""

MAX_WATCHED = 100
"""Finished runs and batches whose live detail is kept; older ones are read from the store."""

RESUMED_KINDS = RESUMABLE | {JobKind.CURVE}
"""What a dashboard resumes after a dead executor: work that continues from the store."""


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


@dataclass
class _Running:
    run: JobRun
    ended: threading.Event = field(default_factory=threading.Event)
    future: Future[None] | None = None


class InProcessExecutor:
    """Jobs run in a background event loop, with live detail the pages can poll."""

    def __init__(
        self,
        *,
        config: str | Path | None = None,
        database_url: str | None = None,
        look_after: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
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
        self.jobs = JobStore(self.store)
        self.lease_s = self.tally.settings.batch_lease_s
        self._care: Future[None] | None = None
        if look_after:
            self._care = self._portal.start_task_soon(self._look_after)

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self,
        kind: JobKind,
        spec: Mapping[str, Any],
        *,
        actor: Identity,
        idempotency_key: str | None = None,
        active_key: str | None = None,
        lane: Lane | None = None,
        priority: int = 0,
        total: int | None = None,
        result_ref: str | None = None,
    ) -> Job:
        """Write the job claimed by this process, as ``actor``'s, and run it here; a key
        already used gives the job it made, started once. Refused unless ``actor`` may spend."""
        actor.require(Role.RUNNER)
        self._check_open()
        parse_spec(kind, spec)
        owner = Owner.here()
        job = self.jobs.submit(
            kind,
            spec,
            submitted_by=actor.to_json(),
            idempotency_key=idempotency_key,
            active_key=active_key,
            lane=lane,
            priority=priority,
            total=total,
            result_ref=result_ref,
            executor=ExecutorName.IN_PROCESS,
            owner=owner,
            lease_s=self.lease_s,
        )
        if job.held_by(owner):
            self._start(job, owner)
        return job

    def existing(self, idempotency_key: str | None, active_key: str | None) -> Job | None:
        """The job a key already names (in flight, for an active key), if any: a form
        pressed twice attaches to it before anything new is written."""
        key = idempotency_key or (ACTIVE + active_key if active_key else None)
        return None if key is None else self.jobs.by_key(key)

    def submit_run(
        self,
        text: str,
        spec: RunSpec,
        *,
        actor: Identity,
        idempotency_key: str | None = None,
        active_key: str | None = None,
    ) -> Job:
        """Start one vote; the job's ``result_ref`` is its run id, known before it starts.
        Everything that can be refused is checked here, before a row is written or a call made:
        the actor's right to spend first.
        """
        actor.require(Role.RUNNER)
        self._check_open()
        run_id = new_id()
        self._portal.call(
            self.tally.engine.validate, RunRequest(run_id=run_id, input=text, spec=spec)
        )
        vote = VoteSpec(
            run_id=run_id,
            input=text,
            spec=spec.to_json(),
            source="ui",
            submitted_by=actor.to_json(),
        )
        return self.submit(
            JobKind.VOTE,
            vote.model_dump(),
            actor=actor,
            idempotency_key=idempotency_key,
            active_key=active_key,
            total=spec.panel.n,
            result_ref=run_id,
        )

    def submit_batch(
        self,
        items: Sequence[BatchItem],
        spec: RunSpec,
        *,
        name: str,
        columns: Mapping[str, str | None],
        actor: Identity,
        idempotency_key: str | None = None,
        active_key: str | None = None,
        source: str = "ui",
    ) -> Job:
        """Create the batch in the store (so it is listed at once) and run it as a job.

        Every item is checked before the batch row is written: an actor who may not spend, an
        empty input or a policy that does not fit the format stores nothing. A submission
        already made is not stored twice.
        """
        actor.require(Role.RUNNER)
        self._check_open()
        found = self.existing(idempotency_key, active_key)
        if found is not None and found.kind == JobKind.BATCH:
            return found
        self._portal.call(self.tally.check_batch, items, spec)
        batch_id = self.store.create_batch(
            name=name,
            source=source,
            spec=spec,
            columns=dict(columns),
            concurrency=self.tally.engine.concurrency,
            items=[(i.index, i.item_id, i.text, i.gold) for i in items],
            submitted_by=actor.to_json(),
        )
        return self.submit(
            JobKind.BATCH,
            BatchSpec(batch_id=batch_id).model_dump(),
            actor=actor,
            idempotency_key=idempotency_key,
            active_key=active_key,
            total=len(items),
            result_ref=batch_id,
        )

    def resume_batch(self, batch_id: str, *, actor: Identity) -> Job:
        """Pick an interrupted batch up again: finished runs are skipped, finished calls reused.
        A batch that already has a job in flight gives that job."""
        actor.require(Role.RUNNER)
        self._check_open()
        current = self.jobs.for_ref(batch_id)
        if current is not None and not current.finished:
            return current
        items, spec = load_resume(self.store, batch_id)
        self._portal.call(
            self.tally.engine.validate, RunRequest(run_id="check", input=items[0].text, spec=spec)
        )
        return self.submit(
            JobKind.BATCH,
            BatchSpec(batch_id=batch_id).model_dump(),
            actor=actor,
            total=len(items),
            result_ref=batch_id,
        )

    def submit_curve(
        self,
        plan: Any,
        ns: Sequence[int],
        *,
        panels: Sequence[Sequence[str]] = (),
        seed: int = 0,
        min_gain: float,
        actor: Identity,
        active_key: str | None = None,
    ) -> Job:
        """A curve draw (a ``core.experiments.curve.DrawPlan``) as one job: its batch is stored
        now, drawn in the background, then curved. Pressed twice, it draws once."""
        actor.require(Role.RUNNER)
        self._check_open()
        found = self.existing(None, active_key)
        if found is not None and found.kind == JobKind.CURVE:
            return found
        for custom in panels:
            missing = [m for m in custom if m not in plan.models]
            if missing:
                raise InputError(f"the panel {','.join(custom)} names {missing[0]}, not drawn")
        self._portal.call(self.tally.check_batch, plan.items, plan.spec)
        batch_id = self.store.create_batch(
            name=f"curve draw: {plan.set_name}, K={plan.k}",
            source="curve",
            spec=plan.spec,
            columns={"text": "text", "gold": "gold", "id": "id"},
            concurrency=self.tally.engine.concurrency,
            items=[(i.index, i.item_id, i.text, i.gold) for i in plan.items],
            submitted_by=actor.to_json(),
        )
        params = {
            "models": plan.models,
            "k": plan.k,
            "items": len(plan.items),
            "panels": [list(p) for p in panels],
            "min_gain": min_gain,
        }
        curve = CurveSpec(
            batch_id=batch_id,
            set_name=plan.set_name,
            ns=list(ns),
            panels=[list(p) for p in panels],
            seed=seed,
            min_gain=min_gain,
            params=params,
        )
        return self.submit(
            JobKind.CURVE,
            curve.model_dump(),
            actor=actor,
            active_key=active_key,
            total=len(plan.items),
        )

    def submit_sweep(
        self,
        *,
        model: str | None = None,
        demo: str | None = None,
        levels: Sequence[int],
        calls_per_level: int,
        actor: Identity,
        active_key: str | None = None,
    ) -> Job:
        """A throughput sweep of ``model`` (or of a sim server in a ``demo`` mode) as a job."""
        from core.experiments.sweep import DEMO_MODES, check_levels

        actor.require(Role.RUNNER)
        wanted = check_levels(levels)
        if calls_per_level < 1:
            raise InputError(f"calls per level must be at least 1, got {calls_per_level}")
        if demo is not None and demo not in DEMO_MODES:
            raise InputError(f"unknown demo mode {demo!r}: use {', '.join(DEMO_MODES)}")
        if demo is None:
            if model is None:
                raise InputError("choose a model to sweep")
            from core.panel import ModelSpec

            self.tally.registry.resolve(ModelSpec.parse(model))
        sweep = SweepSpec(model=model, demo=demo, levels=wanted, calls_per_level=calls_per_level)
        return self.submit(JobKind.SWEEP, sweep.model_dump(), actor=actor, active_key=active_key)

    def submit_revote(
        self,
        run_ids: Sequence[str],
        policy: Policy | None = None,
        *,
        expand: bool = False,
        actor: Identity,
        active_key: str | None = None,
    ) -> Job:
        """Stored runs decided again as one job (interactive: it is one person's question)."""
        actor.require(Role.RUNNER)
        if not run_ids:
            raise InputError("choose at least one run to re-vote")
        for run_id in run_ids:
            self.store.get_run(run_id)  # unknown or unfinished: refused now
        spec = RevoteSpec(
            run_ids=list(run_ids),
            policy=None if policy is None else policy.model_dump(mode="json"),
            expand=expand,
        )
        return self.submit(
            JobKind.REVOTE,
            spec.model_dump(),
            actor=actor,
            active_key=active_key,
            total=len(run_ids),
        )

    def revote(self, run_ids: Sequence[str], policy: Policy, *, actor: Identity) -> list[RunResult]:
        """Decide stored runs again under ``policy`` with no new calls, and wait for the
        decisions (stored answers are counted again: moments, not a job). The new runs are
        stored, and may enter the review queue, so it is a runner's, like any run."""
        actor.require(Role.RUNNER)
        check_no_calls(policy)
        self._check_open()
        results = self._portal.call(self.tally.revote, list(run_ids), policy)
        self._portal.call(self.tally.flush)  # listed in History at once
        return results

    # -- reading -------------------------------------------------------------------------------

    def run_progress(self, run_id: str) -> RunProgress | None:
        """A copy of a run's live detail, or None for a run this executor is not running."""
        with self._lock:
            progress = self._runs.get(run_id)
            if progress is None:
                return None
            return replace(progress, calls=dict(progress.calls), events=list(progress.events))

    def batch_progress(self, batch_id: str) -> BatchProgress | None:
        with self._lock:
            progress = self._batches.get(batch_id)
            if progress is None:
                return None
            return replace(progress, counts=dict(progress.counts))

    def run_view(self, run_id: str) -> tuple[RunProgress, Job | None] | None:
        """A run as the Run page shows it, whoever runs it: this executor's live detail, or,
        for a run another process runs (a replica, the dashboard before a restart), what the
        store holds (its landed calls, its job's state); with the job that makes it. None for
        a run the store has never seen."""
        job = self.jobs.for_ref(run_id)
        live = self.run_progress(run_id)
        if live is not None and (job is None or self.runs_here(job.id) or live.done):
            return live, job
        try:
            row = self.store.get_run_row(run_id)
        except InputError:
            row = None
        if row is None and job is None:
            return None
        return stored_run(self.store, run_id, row, job), job

    def batch_view(self, batch_id: str) -> tuple[BatchProgress, Job | None]:
        """A batch as the Batch page shows it, whoever runs it: this executor's live detail,
        or its counts in the store (no rate: the runs' pace is the runner's to know); with its
        newest job."""
        job = self.jobs.for_ref(batch_id)
        live = self.batch_progress(batch_id)
        if live is not None and (job is None or self.runs_here(job.id) or live.finished):
            return live, job
        return stored_batch(self.store, batch_id, job), job

    def waiting(self, job: Job) -> str | None:
        """What a job that has not started its work waits behind (the other work in flight
        on the shared ceilings), in one line; None when nothing is ahead of it."""
        ahead = [j for j in self.active() if j.id != job.id and j.status == JobStatus.RUNNING]
        if job.status == JobStatus.QUEUED:
            ahead = self.jobs.ahead_of(job.id)
        return waiting_line(job, ahead)

    def runs_here(self, job_id: str) -> bool:
        """Whether this executor is running the job now."""
        with self._lock:
            return job_id in self._running

    def active(self) -> list[Job]:
        """Queued and running jobs of the store, whoever runs them, newest first."""
        return self.jobs.list_jobs(statuses=[JobStatus.QUEUED, JobStatus.RUNNING])

    # -- cancelling and closing ----------------------------------------------------------------

    def cancel(self, job_id: str, *, actor: Identity) -> Job:
        """Ask a job to stop; when this executor runs it, it stops now. Calls already recorded
        stay recorded. Only someone who may spend may stop spending."""
        actor.require(Role.RUNNER)
        job = self.jobs.request_cancel(job_id)
        with self._lock:
            running = self._running.get(job_id)
        if running is not None and not self._closed:
            self._portal.call(running.run.cancel)
        return job

    def close(self) -> None:
        """Stop what runs here (each job ends ``interrupted``, resumable), commit what was
        recorded, close the session and the loop."""
        if self._closed:
            return
        self._closed = True
        if self._care is not None:
            self._care.cancel()
        with self._lock:
            active = list(self._running.values())
        for running in active:
            if running.future is not None:
                running.future.cancel()
        for running in active:
            running.ended.wait()
        try:
            self._tally_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside the loop -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TallyError("the executor is closed")

    def _start(self, job: Job, owner: Owner) -> None:
        hooks, on_end = self._watch(job)
        running = _Running(JobRun(self.tally, job, owner, self.lease_s, hooks))
        with self._lock:
            self._running[job.id] = running

        async def main() -> None:
            try:
                finished = await execute(self.tally, job, owner, run=running.run)
                with self._lock:
                    on_end(finished.job, finished.value)
            except anyio.get_cancelled_exc_class():
                with self._lock:
                    on_end(replace(job, status=JobStatus.INTERRUPTED, error=STOPPED), None)
                raise
            except Exception as err:  # the store failed at the finish: shown, never raised on
                with self._lock:
                    on_end(replace(job, status=JobStatus.FAILED, error=one_line(err)), None)
            finally:
                with self._lock:
                    self._running.pop(job.id, None)
                running.ended.set()

        running.future = self._portal.start_task_soon(main)

    def _watch(self, job: Job) -> tuple[Hooks, Any]:
        """The live detail kept for a job while it runs here, and what to do when it ends."""
        if job.kind == JobKind.VOTE:
            return self._watch_run(job)
        if job.kind in (JobKind.BATCH, JobKind.CURVE):
            return self._watch_batch(job)
        return Hooks(), lambda ended, value: None

    def _watch_run(self, job: Job) -> tuple[Hooks, Any]:
        vote: VoteSpec = parse_spec(JobKind.VOTE, job.spec)
        spec = vote.run_spec()
        progress = RunProgress(run_id=vote.run_id, input=vote.input, started_at=time.time())
        for slot in spec.panel.slots():
            progress.calls[("panel", slot.index)] = CallResult(
                slot=slot.index, model=slot.model.name, sample=slot.sample
            )
        with self._lock:
            self._runs[vote.run_id] = progress
            _prune(self._runs, lambda p: p.done)

        def on_event(event: Event) -> None:
            with self._lock:
                if event.call is not None:
                    call = event.call
                    progress.calls[(call.phase, call.slot)] = call.model_copy()
                if event.decision is not None:
                    progress.decision = event.decision
                progress.events.append(event_line(event))
                del progress.events[:-MAX_EVENTS]

        def on_end(ended: Job, value: Any) -> None:  # under the lock
            if isinstance(value, RunResult):
                progress.result = value
                progress.decision = value.decision
                progress.calls = {(c.phase, c.slot): c.model_copy() for c in value.calls}
            elif ended.status in (JobStatus.CANCELLED, JobStatus.INTERRUPTED):
                result = cancelled_result(
                    RunRequest(run_id=vote.run_id, input=vote.input, spec=spec), progress
                )
                progress.result = result
                progress.decision = result.decision
                progress.calls = {(c.phase, c.slot): c for c in result.calls}
            progress.done = True
            progress.cancelled = ended.status == JobStatus.CANCELLED
            progress.error = None if progress.cancelled or ended.status == "done" else ended.error
            line = (
                "cancelled by the user"
                if progress.cancelled
                else (progress.error and f"error: {progress.error}")
            )
            if line:
                progress.events.append(line)

        return Hooks(on_event=on_event), on_end

    def _watch_batch(self, job: Job) -> tuple[Hooks, Any]:
        batch_id = str(job.spec["batch_id"])
        progress = stored_batch(self.store, batch_id, None)
        progress.started_at = time.time()
        progress.done_at_start = progress.done
        progress.finished = False
        with self._lock:
            self._batches[batch_id] = progress
            _prune(self._batches, lambda p: p.finished)

        def on_result(result: RunResult) -> None:
            with self._lock:
                progress.done += 1
                status = result.decision.status.value
                progress.counts[status] = progress.counts.get(status, 0) + 1
                progress.cost_known_usd += result.cost_known_usd
                if result.cost_usd is None:
                    progress.unknown_cost_runs += 1

        def on_end(ended: Job, value: Any) -> None:  # under the lock
            progress.finished = True
            progress.finished_at = time.time()
            progress.cancelled = ended.status == JobStatus.CANCELLED
            progress.error = None if ended.status in ("done", "cancelled") else ended.error

        return Hooks(on_result=on_result), on_end

    async def _look_after(self) -> None:
        """Reap the store's dead in-process jobs and resume what can resume, now and then."""
        while True:
            with contextlib.suppress(StoreError, InputError):  # the next round tries again
                await anyio.to_thread.run_sync(self._reap_and_resume)
            await anyio.sleep(max(1.0, self.lease_s / 3))

    def _reap_and_resume(self) -> None:
        self.jobs.reap(resumable=RESUMED_KINDS)
        while not self._closed:
            owner = Owner.here()
            job = self.jobs.claim_next(
                owner, self.lease_s, executor=ExecutorName.IN_PROCESS, kinds=RESUMED_KINDS
            )
            if job is None:
                return
            self._start(job, owner)


def stored_batch(store: Store, batch_id: str, job: Job | None) -> BatchProgress:
    """A batch's progress counted in the store; finished unless its job is in flight."""
    info = store.get_batch(batch_id)
    counts = store.batch_counts(batch_id)
    done = int(counts["done"])
    progress = BatchProgress(
        batch_id=batch_id,
        name=info.name,
        total=int(counts["total"]),
        started_at=job.started_at or job.created_at if job is not None else info.created_at,
        done=done,
        done_at_start=done,
        counts={s.value: int(counts[s.value]) for s in DecisionStatus if counts[s.value]},
        cost_known_usd=float(counts["cost_known_usd"]),
        unknown_cost_runs=int(counts["unknown_cost_runs"]),
        simulated=is_simulated(info.spec.slot_names),
        finished=job is None or job.finished,
        finished_at=None if job is None else job.finished_at,
    )
    if job is not None and job.finished:
        progress.cancelled = job.status == JobStatus.CANCELLED
        if job.status in (JobStatus.FAILED, JobStatus.INTERRUPTED):
            progress.error = job.error
    return progress


def stored_run(store: Store, run_id: str, row: Any, job: Job | None) -> RunProgress:
    """A run's progress read back from the store: every slot of its spec, the calls that
    landed so far, done once the run row is decided or its job has ended."""
    spec: RunSpec | None = None
    text = row.input if row is not None else ""
    if job is not None and job.kind == JobKind.VOTE:
        vote: VoteSpec = parse_spec(JobKind.VOTE, job.spec)
        spec, text = vote.run_spec(), vote.input
    started = row.created_at if row is not None else job.created_at if job else time.time()
    progress = RunProgress(run_id=run_id, input=text, started_at=started)
    if spec is not None:
        for slot in spec.panel.slots():
            progress.calls[("panel", slot.index)] = CallResult(
                slot=slot.index, model=slot.model.name, sample=slot.sample
            )
    if row is not None:
        for call in store.run_calls(run_id):
            progress.calls[(call.phase, call.slot)] = call
    decided = row is not None and row.status != "running"
    if decided:
        progress.result = store.get_run(run_id)
        progress.decision = progress.result.decision
        progress.calls = {(c.phase, c.slot): c for c in progress.result.calls}
    if job is not None and job.finished:
        progress.cancelled = job.status == JobStatus.CANCELLED
        if job.status in (JobStatus.FAILED, JobStatus.INTERRUPTED):
            progress.error = job.error
    progress.done = decided or (job is not None and job.finished)
    if job is not None and job.owner is not None and not progress.done:
        progress.events.append(
            f"running in pid {job.owner.pid} on {job.owner.host}: its live events stay there; "
            "calls show here as they are stored"
        )
    return progress


def cancelled_result(request: RunRequest, progress: RunProgress) -> RunResult:
    """What the page shows of a cancelled run: ``failed``, with what it had, in the words the
    engine stored it with."""
    calls = []
    for call in progress.sorted_calls():
        if not call.status.final:
            call = call.model_copy(update={"status": CallStatus.CANCELLED, "error": RUN_CANCELLED})
        calls.append(call)
    decision = Decision(status=DecisionStatus.FAILED, reason=RUN_CANCELLED)
    latency_ms = (time.time() - progress.started_at) * 1000
    return build_result(request, calls, decision, latency_ms=latency_ms)


def _prune(watched: dict[str, Any], finished: Any) -> None:
    """Forget the oldest finished entries beyond MAX_WATCHED (caller holds the lock)."""
    ended = [k for k, v in watched.items() if finished(v)]
    for key in ended[: max(0, len(ended) - MAX_WATCHED)]:
        del watched[key]
