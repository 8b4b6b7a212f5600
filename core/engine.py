"""The fan-out: one run's slots as concurrent calls under global and per-provider ceilings,
with deadlines, retries, early stop, fastest-acceptable cancellation and the tie-break chain.

The engine is the only async orchestrator. It decides nothing itself: ``core.voting`` does,
on the calls the engine collects. Every call ends in a recorded state, cancelled ones with the
usage known when they were cut.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

from core import voting
from core.analysis.sweeps import AIMD
from core.cost import PriceBook, cost_total
from core.errors import PolicyError, ProviderError
from core.formats import AnswerFormat, Parsed
from core.limits import GLOBAL, Limits, LocalLimits
from core.pacing import Pacer, ThrottleWindow
from core.panel import ModelSpec, Slot
from core.policy import Aggregation, TieBreak
from core.providers.base import Completion, CompletionRequest, Provider, Usage
from core.providers.registry import Registry
from core.result import (
    CallPhase,
    CallResult,
    CallStatus,
    Decision,
    DecisionStatus,
    Event,
    RunResult,
)
from core.retry import RetryPolicy, call_with_retries
from core.spec import RunSpec

RUN_CANCELLED = "run cancelled"
"""The reason a run cancelled from outside is stored with, and its unfinished calls' error."""

EventSink = Callable[[Event], None]


class Recorder:
    """Where the engine reports what must be stored. The default keeps nothing (a dry run)."""

    async def run_started(self, request: RunRequest) -> None:
        return None

    async def call_finished(self, run_id: str, call: CallResult, cache_key: str | None) -> None:
        return None

    async def run_finished(self, result: RunResult, source: str) -> None:
        return None

    async def cache_lookup(self, keys: Sequence[str]) -> Mapping[str, CallResult]:
        return {}


@dataclass(frozen=True)
class RunRequest:
    """One input through one run spec (task, panel, policy)."""

    run_id: str
    input: str
    spec: RunSpec
    source: str = "library"
    batch_id: str | None = None
    item_id: str | None = None
    item_index: int | None = None
    gold: str | None = None
    cache: bool | None = None  # None: on for temperature 0, off otherwise
    stream: bool | None = None  # None: the provider's own setting
    submitted_by: str | None = None  # who started it (``core.auth.Identity.to_json``)
    bulk: bool = False  # a batch's run: kept off the ceilings' reserve (``interactive_reserve``)


def interactive_reserve(ceiling: int) -> int:
    """Slots of a ceiling bulk work (a batch, a curve draw) may never take, so a vote started
    while a 5,000-item batch runs starts a call at once instead of queueing behind it: one in
    eight, at least one, none for a ceiling of one. Beyond the reserve, waiting calls are
    served in arrival order, and a vote's calls arrive before the batch's next ones (those
    wait at the bulk gate first), so every slot freed goes to the vote until it is under way."""
    return 0 if ceiling < 2 else max(1, ceiling // 8)


def bulk_gate(ceiling: int) -> anyio.CapacityLimiter:
    return anyio.CapacityLimiter(max(1, ceiling - interactive_reserve(ceiling)))


class AdaptiveLimiter:
    """A per-provider ceiling that backs off on 429s and comes back, and the provider's pace.

    A 429 with ``Retry-After`` cuts the ceiling in half at most once per throttle window (that
    long), and the ceiling is back as soon as the window has passed: the provider said when it
    would be ready. A 429 without one follows :class:`core.analysis.AIMD`: one cut per burst
    of 429s from calls already in flight, one slot back per full round of successes, never
    above the configured ceiling. ``pacer`` spaces the provider's requests by its rate-limit
    headers (``core.pacing``). This class applies the result to the capacity limiter and says
    when it changed, so the engine can report it as an event.
    """

    def __init__(
        self,
        ceiling: int,
        clock: Callable[[], float] = anyio.current_time,
        pacer: Pacer | None = None,
    ) -> None:
        self.ceiling = max(1, ceiling)
        self.aimd = AIMD(self.ceiling, maximum=self.ceiling)
        self.limiter = anyio.CapacityLimiter(self.ceiling)
        self.bulk = bulk_gate(self.ceiling)  # what bulk calls may hold of it
        self.window = ThrottleWindow(clock)
        self.pacer = pacer or Pacer(self.ceiling, clock=clock)
        self._restore: int | None = None  # the ceiling before a window's cut

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    def _apply(self, new: int) -> int | None:
        if new == self.limit:
            return None
        self.limiter.total_tokens = new
        self.bulk.total_tokens = max(1, new - interactive_reserve(self.ceiling))
        return new

    def on_throttle(self, retry_after: float | None = None) -> int | None:
        """A 429: the new ceiling, or None when it did not change."""
        if retry_after is None:
            return self._apply(self.aimd.on_throttle())
        restored = self.recover()
        if not self.window.cut(retry_after):
            return restored
        if self._restore is None:
            self._restore = self.limit
        cut = max(1, math.floor(self.limit * self.aimd.decrease))
        self.aimd = AIMD(cut, maximum=self.ceiling)
        return self._apply(cut)

    def on_success(self) -> int | None:
        """A call that was not throttled: the new ceiling, or None when it did not change."""
        restored = self.recover()
        return restored if restored is not None else self._apply(self.aimd.on_success())

    def recover(self) -> int | None:
        """The ceiling from before the cut, once the throttle window has passed."""
        if not self.window.passed() or self._restore is None:
            return None
        back, self._restore = self._restore, None
        self.aimd = AIMD(back, maximum=self.ceiling)
        return self._apply(back)


class Hold:
    """``async with limiter`` without anyio's two checkpoints when a token is free (the request
    that follows is the checkpoint): two rounds of the event loop fewer per call. With no free
    token, or others already waiting, it waits in anyio's queue, in its order."""

    __slots__ = ("limiter",)

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self.limiter = limiter

    async def __aenter__(self) -> None:
        try:
            self.limiter.acquire_nowait()
        except anyio.WouldBlock:
            await self.limiter.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.limiter.release()


@dataclass
class Engine:
    """Long-lived state shared by every run of a process: client, limiters, prices, recorder."""

    registry: Registry
    client: httpx2.AsyncClient
    prices: PriceBook
    concurrency: int = 8
    call_timeout_s: float = 60.0  # the whole call: every attempt and every wait between them
    attempt_timeout_s: float | None = None  # one attempt; None: what remains of the call's
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(4, 0.5, 30.0))
    recorder: Recorder = field(default_factory=Recorder)
    limits: Limits = field(default_factory=LocalLimits)  # shared by workers: core.limits
    _global: anyio.CapacityLimiter = field(init=False)
    _bulk: anyio.CapacityLimiter = field(init=False)  # bulk calls' share of the global ceiling
    _providers: dict[str, AdaptiveLimiter] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise PolicyError(f"concurrency must be at least 1, got {self.concurrency}")
        self._global = anyio.CapacityLimiter(self.concurrency)
        self._bulk = bulk_gate(self.concurrency)
        tune_gc()

    def price(self, model: str, usage: Usage) -> float | None:
        """One attempt's cost, cached prompt tokens at their own rate."""
        return self.prices.price(
            model,
            usage.tokens_in,
            usage.tokens_out,
            cached=usage.tokens_cached,
            cache_write=usage.tokens_cache_write,
        )

    def provider_limiter(self, provider: Provider) -> AdaptiveLimiter:
        limiter = self._providers.get(provider.name)
        if limiter is None:
            ceiling = provider.max_concurrency
            pacer = self.limits.pacer(provider.name, ceiling)
            limiter = AdaptiveLimiter(ceiling, pacer=pacer)
            self._providers[provider.name] = limiter
        return limiter

    def validate(self, request: RunRequest) -> None:
        """Everything that can be refused before a call is made or a row is written."""
        spec = request.spec
        voting.check_policy(spec.policy, spec.task.format, panel=spec.panel.n)
        spec.task.render(request.input)
        for model in spec.panel.models:
            self.registry.resolve(model)
        for branch in spec.policy.tie_breaks:
            if branch.model is not None:
                self.registry.resolve(branch.model)

    async def run(
        self,
        request: RunRequest,
        *,
        on_event: EventSink | None = None,
        prior: Mapping[tuple[str, int], CallResult] | None = None,
    ) -> RunResult:
        """Fan out, decide, apply the tie-break chain, record. ``prior`` holds calls already
        finished by an interrupted attempt of this run (resume): they are reused, not paid again."""
        self.validate(request)
        run = _Run(self, request, on_event, prior or {})
        return await run.execute()


GC_YOUNG_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation (CPython's default: 700).
A fan-out keeps thousands of objects alive across calls (tasks, connections, results), and
each young collection scans them again: at the default, collection took about a fifth of the
engine's CPU per call at 512 in flight (``benchmarks/fanout.py``)."""


def tune_gc() -> None:
    """Collect less often, and never again scan what exists before the first engine (imported
    modules, configuration): ``gc.freeze``. Left alone when the threshold was already tuned."""
    young, *older = gc.get_threshold()
    if young == 700:  # CPython's default: nobody chose it
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *older)


def cache_key(
    spec: ModelSpec,
    request: CompletionRequest,
    sample: int,
    fmt: AnswerFormat,
    *,
    fmt_json: Any = None,
) -> str:
    """Identical requests read the same way, sample-aware: five samples of one model are five
    keys, not one. The answer format is part of the key (synonyms, tolerance and the like
    change how a reply is read without changing the prompt); ``fmt_json``, when given, is
    ``fmt.model_dump(mode="json")`` made once for a run's calls."""
    blob = json.dumps(
        [
            spec.name,
            request.messages,
            request.params,
            request.schema,
            sample,
            fmt.model_dump(mode="json") if fmt_json is None else fmt_json,
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def read_reply(
    call: CallResult, raw: str, fmt: AnswerFormat, read: dict[str, Parsed] | None = None
) -> None:
    """Set ``call``'s reply and what ``fmt`` reads in it: ``ok`` with the vote, or ``invalid``
    with the reason. ``read`` remembers the replies already read with ``fmt`` (a run's votes
    mostly say the same thing, and reading one is pure)."""
    parsed = read.get(raw) if read is not None else None
    if parsed is None:
        parsed = fmt.parse(raw)
        if read is not None and len(raw) <= _REMEMBERED_REPLY:
            read[raw] = parsed  # frozen, its value a string: safe to share
    call.raw = raw
    if parsed.ok:
        call.status, call.answer, call.error = CallStatus.OK, parsed.value, None
    else:
        call.status, call.answer, call.error = CallStatus.INVALID, None, parsed.error


_REMEMBERED_REPLY = 200
"""Replies up to this long are remembered per run once read (labels, numbers, yes/no): longer
ones are seldom repeated word for word."""


def reread(call: CallResult, fmt: AnswerFormat) -> CallResult:
    """A stored call (resumed, re-voted or cached) as the current task reads it: the answer
    stored with it was read by whichever task made it, so its raw reply is read again. Calls
    that produced no reply (failed, timed out, cancelled) are returned as they are."""
    if call.raw is None or call.status not in (CallStatus.OK, CallStatus.INVALID):
        return call
    fresh = call.model_copy()
    read_reply(fresh, call.raw, fmt)
    return fresh


class _Run:
    """The state of one run while it executes."""

    def __init__(
        self,
        engine: Engine,
        request: RunRequest,
        on_event: EventSink | None,
        prior: Mapping[tuple[str, int], CallResult],
    ) -> None:
        self.engine = engine
        self.req = request
        self.spec = request.spec
        self.fmt: AnswerFormat = request.spec.task.format
        self.fmt_json = self.fmt.model_dump(mode="json")
        self.read: dict[str, Parsed] = {}  # replies read with this run's format
        self.messages = request.spec.task.render(request.input)
        self.schema = self.fmt.response_schema()
        self.on_event = on_event
        self.prior = prior
        self.calls: dict[tuple[str, int], CallResult] = {}
        self.weights = request.spec.panel.weights
        self.started = time.monotonic()
        self.next_slot = request.spec.panel.n  # expand and escalate slots continue the numbering
        self.stopped_at: float | None = None  # when an early stop or a fastest answer cut the rest

    # -- events -------------------------------------------------------------------------
    def emit(self, kind: Any, **kwargs: Any) -> None:
        if self.on_event is not None:
            self.on_event(Event(kind=kind, run_id=self.req.run_id, **kwargs))

    # -- the run ------------------------------------------------------------------------
    async def execute(self) -> RunResult:
        req = self.req
        await self.engine.recorder.run_started(req)
        spec = self.spec
        self.emit("run_started", message=f"{spec.panel.n} slots, {spec.policy.describe()}")
        try:
            await self.fan_out(spec.panel.slots(), "panel")
            decision = self.decide("panel")
            if voting.is_open(decision):
                decision = await self.break_tie(decision)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self.record_unfinished(exc)
            raise
        result = self.result(decision)
        with anyio.CancelScope(shield=True):
            await self.engine.recorder.run_finished(result, req.source)
        self.emit("decision", decision=decision, message=decision.reason)
        return result

    async def record_unfinished(self, exc: BaseException) -> None:
        """A run cancelled from outside (user, Ctrl-C) still leaves every started call recorded.
        A single run is stored ``failed`` rather than left ``running``; a batch's run stays
        ``running``, which is what tells a resumed batch to run it again."""
        for call in self.calls.values():
            if not call.status.final:
                call.status = CallStatus.CANCELLED
                call.error = call.error or RUN_CANCELLED
                await self.engine.recorder.call_finished(self.req.run_id, call, None)
        if self.req.batch_id is None:
            cancelled = isinstance(exc, (anyio.get_cancelled_exc_class(), KeyboardInterrupt))
            reason = RUN_CANCELLED if cancelled else f"run failed: {exc}"
            decision = Decision(status=DecisionStatus.FAILED, reason=reason)
            await self.engine.recorder.run_finished(self.result(decision), self.req.source)

    def panel_calls(self, phases: Sequence[str] = ("panel", "expand")) -> list[CallResult]:
        return [c for (phase, _), c in sorted(self.calls.items()) if phase in phases]

    def decide(self, *phases: str) -> Decision:
        calls = self.panel_calls(phases or ("panel", "expand"))
        return voting.decide(
            calls,
            self.spec.policy,
            self.fmt,
            self.weights,
            panel=self.spec.panel.n,
        )

    def result(self, decision: Decision) -> RunResult:
        latency_ms = (time.monotonic() - self.started) * 1000
        return build_result(
            self.req,
            self.calls.values(),
            decision,
            latency_ms=latency_ms,
            stopped_at=self.stopped_at,
            decided_at=time.time(),
        )

    # -- fan-out ------------------------------------------------------------------------
    async def fan_out(self, slots: Sequence[Slot], phase: CallPhase) -> None:
        """Run ``slots`` concurrently; cancel the rest once the outcome is known."""
        policy = self.spec.policy
        fastest = policy.aggregation == Aggregation.FASTEST
        pending: dict[int, float] = {s.index: s.model.weight for s in slots}
        queued = time.time()
        for slot in slots:
            self.calls[(phase, slot.index)] = CallResult(
                slot=slot.index,
                model=slot.model.name,
                sample=slot.sample,
                phase=phase,
                queued_at=queued,
            )
        won = anyio.Event()
        learned = self.spec.policy.posterior is not None  # is_settled reads counts, not a posterior

        async with anyio.create_task_group() as tg:

            def landed(call: CallResult) -> None:
                pending.pop(call.slot, None)
                if fastest:
                    if voting.acceptable(call, policy.accept, self.fmt):
                        won.set()
                        self.stopped_at = self.stopped_at or time.time()
                        tg.cancel_scope.cancel()
                elif policy.early_stop and pending and phase == "panel" and not learned:
                    done = [c for c in self.panel_calls() if c.status.final]
                    remaining = list(pending.values())
                    if voting.is_settled(done, remaining, policy, self.fmt, self.weights):
                        self.emit(
                            "tie_break", message=f"early stop: {len(pending)} calls cancelled"
                        )
                        self.stopped_at = self.stopped_at or time.time()
                        tg.cancel_scope.cancel()

            for group in self.request_groups(slots, phase):
                delay = policy.hedge_delay_s * group[0].index if fastest else 0.0
                tg.start_soon(self.call_group, group, phase, landed, delay, won)

        for slot in slots:  # slots the early stop or the winner made unnecessary before they began
            call = self.calls[(phase, slot.index)]
            if not call.status.final:
                call.status, call.error = (
                    CallStatus.CANCELLED,
                    "not needed: cancelled before it began",
                )
                call.tokens_in = call.tokens_out = 0
                call.cost_usd = call.cost_known_usd = 0.0
                await self.engine.recorder.call_finished(self.req.run_id, call, None)
                self.emit("call_finished", slot=call.slot, call=call)

    def request_groups(self, slots: Sequence[Slot], phase: str) -> list[list[Slot]]:
        """Samples of one model go out as one request with ``n`` where the endpoint supports
        it (the prompt is billed once). Fastest-acceptable keeps them apart so each can win."""
        if self.spec.policy.aggregation == Aggregation.FASTEST:
            return [[s] for s in slots]
        groups: dict[str, list[Slot]] = {}
        singles: list[list[Slot]] = []
        for slot in slots:
            prior = self.prior.get((phase, slot.index))
            provider = self.engine.registry.resolve(slot.model)
            if prior is None and provider.supports_n and not self.use_cache(slot.model):
                groups.setdefault(slot.model.name, []).append(slot)
            else:
                singles.append([slot])
        return [g for g in groups.values()] + singles

    def use_cache(self, spec: ModelSpec) -> bool:
        if self.req.cache is not None:
            return self.req.cache
        return spec.params.get("temperature") == 0

    def completion_request(
        self, spec: ModelSpec, provider: Provider, n: int, sample: int = 0
    ) -> CompletionRequest:
        """The request for ``n`` samples starting at ``sample``. A model given a ``seed`` asks
        sample k with seed+k: samples stay distinct, and a resumed or repeated run draws the
        same ones where the endpoint honours seeds."""
        stream = (
            self.req.stream if self.req.stream is not None else getattr(provider, "stream", False)
        )
        params = dict(spec.params)
        if isinstance(params.get("seed"), int):
            params["seed"] += sample
        return CompletionRequest(
            model=spec.model,
            messages=self.messages,
            params=params,
            schema=self.schema,
            stream=bool(stream),
            n=n,
        )

    async def call_group(
        self,
        group: list[Slot],
        phase: CallPhase,
        landed: Callable[[CallResult], None],
        delay: float,
        won: anyio.Event,
    ) -> None:
        if delay > 0:
            with anyio.move_on_after(delay):
                await won.wait()
            if won.is_set():
                return
        remaining = await self.serve_without_calling(group, phase, landed)
        while remaining:
            spec = remaining[0].model
            provider = self.engine.registry.resolve(spec)
            n = len(remaining) if provider.supports_n else 1
            batch, remaining = remaining[:n], remaining[n:]
            got = await self.call_model(batch, phase, provider)
            for slot in batch[:got]:
                landed(self.calls[(phase, slot.index)])
            # an endpoint that returned fewer choices than asked: the rest go out on their own
            remaining = batch[got:] + remaining

    async def serve_without_calling(
        self, group: list[Slot], phase: CallPhase, landed: Callable[[CallResult], None]
    ) -> list[Slot]:
        """Reuse calls a resumed run already paid for, and cached answers; return the rest."""
        todo: list[Slot] = []
        keys: dict[int, str] = {}
        for slot in group:
            prior = self.prior.get((phase, slot.index))
            if prior is not None:
                prior = reread(prior, self.fmt)
                self.calls[(phase, slot.index)] = prior
                self.emit("call_finished", slot=slot.index, call=prior, message="reused")
                landed(prior)
            elif self.use_cache(slot.model):
                provider = self.engine.registry.resolve(slot.model)
                keys[slot.index] = cache_key(
                    slot.model,
                    self.completion_request(slot.model, provider, 1, slot.sample),
                    slot.sample,
                    self.fmt,
                    fmt_json=self.fmt_json,
                )
                todo.append(slot)
            else:
                todo.append(slot)
        if keys:
            hits = await self.engine.recorder.cache_lookup(list(keys.values()))
            rest = []
            for slot in todo:
                hit = hits.get(keys.get(slot.index, ""))
                if hit is None:
                    rest.append(slot)
                    continue
                call = reread(hit, self.fmt).model_copy(
                    update={
                        "slot": slot.index,
                        "sample": slot.sample,
                        "phase": phase,
                        "cached": True,
                        "cost_usd": 0.0,  # no request: nothing paid, whatever the hit cost
                        "cost_known_usd": 0.0,
                        "retries": 0,
                    }
                )
                self.calls[(phase, slot.index)] = call
                await self.engine.recorder.call_finished(self.req.run_id, call, keys[slot.index])
                self.emit("call_finished", slot=slot.index, call=call, message="from cache")
                landed(call)
            todo = rest
        return todo

    async def call_model(self, slots: list[Slot], phase: CallPhase, provider: Provider) -> int:
        """One request for ``slots`` (n samples of one model). Returns how many slots it filled.

        A call counts as started, and its latency and its deadline run, once it holds both
        ceilings: time spent queued behind the limiters is the fan-out's, not the model's.
        ``call_timeout_s`` bounds the whole call from then on, retries, backoff and queueing
        again included; ``attempt_timeout_s``, when set, bounds each attempt too. Every
        attempt's usage is billed to the call (the first slot of an n-sample request), failed
        attempts included; a wait between attempts bills nothing.
        """
        engine = self.engine
        spec = slots[0].model
        request = self.completion_request(spec, provider, len(slots), slots[0].sample)
        key = None
        if len(slots) == 1:
            key = cache_key(spec, request, slots[0].sample, self.fmt, fmt_json=self.fmt_json)
        calls = [self.calls[(phase, s.index)] for s in slots]
        for call in calls:  # samples drawn together are one request: it goes by its first slot
            call.request_slot = slots[0].index if len(slots) > 1 else None
        spent = _Bill()  # the attempts that failed, billed to the first slot
        last = Usage()
        limiter = engine.provider_limiter(provider)
        bulk = self.req.bulk
        t0 = time.monotonic()
        deadline: float | None = None  # anyio's clock; set when the first attempt starts

        def on_retry(attempt: int, err: ProviderError, wait: float) -> None:
            now = time.time()
            for call in calls:
                call.retries = attempt
                call.retry_at.append(now)
                self.emit(
                    "call_retry", slot=call.slot, call=call, message=f"{err}; retry in {wait:.1f}s"
                )
            if err.status == 429:
                limiter.pacer.throttled(err.retry_after, getattr(provider, "rate_limits", None))
                new = limiter.on_throttle(err.retry_after)
                if new is not None:
                    self.emit(
                        "concurrency", message=f"{provider.name}: throttled, ceiling cut to {new}"
                    )

        async def attempt() -> list[Completion]:
            nonlocal t0, deadline, last
            scope = anyio.CancelScope(deadline=math.inf if deadline is None else deadline)
            with scope:
                async with (
                    Hold(limiter.bulk) if bulk else nullcontext(),
                    Hold(engine._bulk) if bulk else nullcontext(),
                    Hold(limiter.limiter),
                    engine.limits.slot(provider.name, provider.max_concurrency),
                    Hold(engine._global),
                    engine.limits.slot(GLOBAL, engine.concurrency),
                ):
                    now = anyio.current_time()
                    if deadline is None:
                        deadline = now + engine.call_timeout_s
                        scope.deadline = deadline
                        t0 = time.monotonic()
                        for call in calls:
                            call.status, call.started_at = CallStatus.RUNNING, time.time()
                            self.emit("call_started", slot=call.slot, call=call)
                    if engine.attempt_timeout_s is not None:
                        scope.deadline = min(deadline, now + engine.attempt_timeout_s)
                    last = usage = Usage()
                    await limiter.pacer.wait()
                    try:
                        return await provider.complete(engine.client, request, usage)
                    except BaseException as exc:
                        # an error reply, or a request that never reached the provider, is
                        # not billed; anything else cut or broken may have been
                        if not (isinstance(exc, ProviderError) and exc.billed is False):
                            spent.add(usage, engine.price(spec.name, usage), known=usage.reported)
                        raise
            assert deadline is not None
            if anyio.current_time() >= deadline:
                raise ProviderError(
                    f"no answer within the call's {engine.call_timeout_s:g}s", timeout=True
                )
            raise ProviderError(
                f"attempt got no answer within {engine.attempt_timeout_s:g}s",
                timeout=True,
                retryable=True,
            )

        try:
            completions, retries = await call_with_retries(
                attempt, engine.retry, on_retry=on_retry, deadline=lambda: deadline
            )
        except ProviderError as err:
            status = CallStatus.TIMEOUT if err.timeout else CallStatus.ERROR
            await self.finish(calls, status, str(err), spent, last, t0)
            return len(calls)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                started = [c for c in calls if c.status == CallStatus.RUNNING]
                await self.finish(started, CallStatus.CANCELLED, "cancelled", spent, last, t0)
            raise
        if not completions:
            spent.add(last, engine.price(spec.name, last), known=last.reported)
            await self.finish(
                calls, CallStatus.ERROR, f"{provider.name} returned no answer", spent, last, t0
            )
            return len(calls)

        tokens = (last.tokens_in or 0) + (last.tokens_out or 0)
        limiter.pacer.observe(getattr(provider, "rate_limits", None), tokens)
        changed = limiter.on_success()
        if changed is not None:
            self.emit("concurrency", message=f"{provider.name}: ceiling restored to {changed}")
        for i, (call, completion) in enumerate(zip(calls, completions, strict=False)):
            call.retries = retries
            self.fill(call, completion)
            bill = spent if i == 0 else _Bill()
            # with n samples the prompt is billed once: the provider puts it on the first one
            share = Usage(
                tokens_in=completion.tokens_in
                if completion.tokens_in is not None or i
                else last.tokens_in,
                tokens_out=completion.tokens_out,
                tokens_cached=last.tokens_cached if i == 0 else None,
                tokens_cache_write=last.tokens_cache_write if i == 0 else None,
            )
            bill.add(share, engine.price(spec.name, share), known=last.reported)
            self.stamp(call, bill, last, t0)
            await engine.recorder.call_finished(self.req.run_id, call, key)
            self.emit("call_finished", slot=call.slot, call=call)
        for call in calls[len(completions) :]:
            call.status = CallStatus.PENDING  # goes out again on its own
        return min(len(calls), len(completions))

    def fill(self, call: CallResult, completion: Completion) -> None:
        read_reply(call, completion.text, self.fmt, self.read)

    def stamp(self, call: CallResult, bill: _Bill, usage: Usage, t0: float) -> None:
        """A call's end: its latency and what its attempts consumed and cost."""
        now = time.monotonic()
        call.latency_ms = (now - t0) * 1000
        call.ended_at = time.time()
        if usage.first_token_at is not None:
            call.ttft_ms = (usage.first_token_at - t0) * 1000
        call.tokens_in, call.tokens_out = bill.tokens_in, bill.tokens_out
        call.tokens_cached = bill.tokens_cached
        call.cost_known_usd = bill.known_usd
        call.cost_usd = None if bill.unknown else bill.known_usd

    async def finish(
        self,
        calls: list[CallResult],
        status: CallStatus,
        error: str | None,
        spent: _Bill,
        usage: Usage,
        t0: float,
    ) -> None:
        """End calls that produced no answer with what their attempts consumed. An attempt cut
        while in flight may have been billed for its prompt with no usage reported: its cost
        is unknown (the known part is kept), not estimated and not zero. The request was one,
        so the other samples of an n-sample request bill nothing more."""
        for i, call in enumerate(calls):
            call.status = status
            call.error = error
            self.stamp(call, spent if i == 0 else _Bill(), usage, t0)
            await self.engine.recorder.call_finished(self.req.run_id, call, None)
            self.emit("call_finished", slot=call.slot, call=call)

    # -- tie-break chain ----------------------------------------------------------------
    async def break_tie(self, decision: Decision) -> Decision:
        """Apply the declared chain in order to an open decision (a tie, a threshold not met,
        no convergence: docs/decisions.md); every branch tried is kept on the decision."""
        for branch in self.spec.policy.tie_breaks:
            assert decision.outcome is not None
            self.emit("tie_break", message=f"{decision.outcome.value}: trying {branch}")
            if branch.kind == "expand":
                assert branch.k is not None
                slots = self.spec.panel.slots(start=self.next_slot, count=branch.k)
                self.next_slot += branch.k
                await self.fan_out(slots, "expand")
                branches = [*decision.branches, str(branch)]
                decision = self.decide().model_copy(update={"branches": branches})
                if not voting.is_open(decision):
                    return decision.model_copy(
                        update={"reason": f"{decision.reason}; after {branch}"}
                    )
                continue
            if branch.kind == "escalate":
                call = await self.escalation(branch)
                out = voting.escalated(decision, branch, call)
                why = call.status.value
            else:
                out = voting.apply_offline_branch(decision, branch, self.panel_calls(), self.fmt)
                why = "not applicable"
            if out is not None:
                return out
            decision = voting.record_branch(decision, voting.passed_on(branch, why))
        return decision

    async def escalation(self, branch: TieBreak) -> CallResult:
        """The one call an ``escalate`` branch makes, on a slot after every other."""
        assert branch.model is not None
        slot_index = self.next_slot
        self.next_slot += 1
        await self.fan_out([Slot(index=slot_index, model=branch.model, sample=0)], "escalate")
        return self.calls[("escalate", slot_index)]


_PHASE_ORDER = {"panel": 0, "expand": 1, "escalate": 2}


def reusable_calls(calls: Iterable[CallResult]) -> dict[tuple[str, int], CallResult]:
    """The calls a resumed or re-voted run takes as done, by (phase, slot): those that ended
    with a reply or a definite failure. A cancelled call was cut before it answered, so its
    slot is still to be called: a resume calls it again; a re-vote reports it missing when
    the policy needs its vote, and calls it only when asked to (``expand``)."""
    return {
        (c.phase, c.slot): c for c in calls if c.status.final and c.status != CallStatus.CANCELLED
    }


def call_order(call: CallResult) -> tuple[int, int]:
    """Where a call stands in a result: the panel's slots, then expand, then escalate."""
    return _PHASE_ORDER[call.phase], call.slot


def build_result(
    request: RunRequest,
    calls: Iterable[CallResult],
    decision: Decision,
    *,
    latency_ms: float,
    stopped_at: float | None = None,
    decided_at: float | None = None,
) -> RunResult:
    """The result of a run, however it ended: a decided run and a cancelled one are stored
    alike. Votes are counted over the calls that voted (an escalation's answer settles a tie,
    it is not a vote); the cost is every call's."""
    ordered = sorted(calls, key=call_order)
    voted = [c for c in ordered if c.phase != "escalate"]
    fmt = request.spec.task.format
    total = cost_total(ordered)
    return RunResult(
        run_id=request.run_id,
        input=request.input,
        spec=request.spec,
        decision=decision,
        votes=voting.count_votes(voted, fmt),
        field_votes=voting.field_votes(voted, fmt),
        calls=ordered,
        cost_usd=total.usd,
        cost_known_usd=total.known_usd,
        cost_unknown_calls=total.unknown_calls,
        latency_ms=latency_ms,
        batch_id=request.batch_id,
        item_id=request.item_id,
        gold=request.gold,
        stopped_at=stopped_at,
        decided_at=decided_at,
    )


@dataclass
class _Bill:
    """What a call's attempts consumed and cost, attempt by attempt: tokens summed, each
    attempt priced on its own, unknown once any attempt's usage or price is."""

    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    known_usd: float = 0.0
    unknown: bool = False

    def add(self, usage: Usage, cost: float | None, *, known: bool) -> None:
        self.tokens_in = _plus(self.tokens_in, usage.tokens_in)
        self.tokens_out = _plus(self.tokens_out, usage.tokens_out)
        self.tokens_cached = _plus(self.tokens_cached, usage.tokens_cached)
        if cost is not None:
            self.known_usd += cost
        elif usage.tokens_in or usage.tokens_out:
            self.unknown = True  # tokens without a price
        if not known:
            self.unknown = True


def _plus(total: int | None, more: int | None) -> int | None:
    return total if more is None else (total or 0) + more


def run_cost(calls: Sequence[CallResult]) -> float | None:
    """The run's cost: every call's, retries, escalations and cancelled calls included.

    Unknown when any call's cost is (see ``core.cost.cost_total``): a partial sum would read
    as a real total."""
    return cost_total(calls).usd
