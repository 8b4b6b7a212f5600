"""The engine with scripted providers: fan-out, ceilings, retries, deadlines, early stop,
fastest-acceptable cancellation, n-sampling, the tie-break chain, resume and the cache."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import httpx2
import pytest

from core.engine import Engine, Recorder, RunRequest, build_result, cache_key, run_cost
from core.errors import ConfigError, PolicyError, ProviderError
from core.formats import parse_format
from core.panel import ModelSpec, Panel
from core.policy import Acceptance, Aggregation, Policy, TieBreak
from core.providers.base import Completion, CompletionRequest, Usage
from core.result import CallResult, CallStatus, Decision, DecisionStatus, Event, RunResult
from core.retry import RetryPolicy
from core.spec import RunSpec
from core.task import Task

pytestmark = pytest.mark.anyio

LABELS = ["regression", "no regression"]


def task(conservative: bool = False) -> Task:
    fmt: dict[str, Any] = {"kind": "label", "labels": LABELS}
    if conservative:
        fmt["conservative_order"] = LABELS
    return Task(format=parse_format(fmt))


Script = Callable[[CompletionRequest, int], Any]


class Billed(ProviderError):
    """A failed attempt the provider billed and reported: a 200 with usage but no choices."""

    def __init__(self, tokens_in: int) -> None:
        super().__init__("reply has no choices", retryable=True)
        self.tokens_in = tokens_in


@dataclass
class FakeProvider:
    """Answers from a script: a string, a list of strings (n samples), an exception, or a
    coroutine-producing delay via ``delays``."""

    name: str
    answers: dict[str, list[Any]]
    delays: dict[str, float] = field(default_factory=dict)
    kind: str = "openai"
    base_url: str = "http://fake"
    max_concurrency: int = 8
    supports_n: bool = False
    stream: bool = False
    requests: list[CompletionRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0

    async def complete(
        self, client: httpx2.AsyncClient, request: CompletionRequest, usage: Usage
    ) -> list[Completion]:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            usage.tokens_in = 10
            queue = self.answers[request.model]
            item = queue.pop(0) if len(queue) > 1 else queue[0]
            delay = self.delays.get(request.model, 0.0)
            if isinstance(item, tuple):
                delay, item = item
            try:
                await anyio.sleep(delay)
            except anyio.get_cancelled_exc_class():
                self.cancelled += 1
                usage.tokens_out = 3  # streamed so far
                raise
            if isinstance(item, BaseException):
                if isinstance(item, Billed):
                    usage.tokens_in, usage.tokens_out, usage.reported = item.tokens_in, 1, True
                raise item
            texts = item if isinstance(item, list) else [item]
            usage.tokens_out, usage.reported = 2 * len(texts), True
            return [
                Completion(
                    text=t, finish_reason="stop", tokens_in=10 if i == 0 else 0, tokens_out=2
                )
                for i, t in enumerate(texts)
            ]
        finally:
            self.in_flight -= 1

    async def list_models(self, client: httpx2.AsyncClient) -> list[str]:
        return list(self.answers)


class FakeRegistry:
    def __init__(self, *providers: FakeProvider) -> None:
        self.providers = {p.name: p for p in providers}

    def resolve(self, spec: ModelSpec) -> FakeProvider:
        if spec.provider not in self.providers:
            raise ConfigError(f"unknown provider {spec.provider!r}")
        return self.providers[spec.provider]


class FlatPrices:
    def price(
        self, model: str, tokens_in: int | None, tokens_out: int | None, **cache: int | None
    ) -> float | None:
        if model.endswith("unpriced"):
            return None
        if tokens_in is None and tokens_out is None:
            return None
        return (tokens_in or 0) * 1e-6 + (tokens_out or 0) * 2e-6


class MemoryRecorder(Recorder):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.calls: list[tuple[str, CallResult, str | None]] = []
        self.finished: list[RunResult] = []
        self.cache: dict[str, CallResult] = {}

    async def run_started(self, request: RunRequest) -> None:
        self.started.append(request.run_id)

    async def call_finished(self, run_id: str, call: CallResult, cache_key: str | None) -> None:
        self.calls.append((run_id, call.model_copy(), cache_key))
        if cache_key and call.status == CallStatus.OK:
            self.cache[cache_key] = call.model_copy()

    async def run_finished(self, result: RunResult, source: str) -> None:
        self.finished.append(result)

    async def cache_lookup(self, keys: Sequence[str]) -> Mapping[str, CallResult]:
        return {k: self.cache[k] for k in keys if k in self.cache}


def make_engine(*providers: FakeProvider, concurrency: int = 8, timeout: float = 5.0) -> Engine:
    return Engine(
        registry=FakeRegistry(*providers),  # type: ignore[arg-type]
        client=httpx2.AsyncClient(),
        prices=FlatPrices(),  # type: ignore[arg-type]
        concurrency=concurrency,
        call_timeout_s=timeout,
        retry=RetryPolicy(max_attempts=3, base_s=0.001, max_s=0.01),
        recorder=MemoryRecorder(),
    )


def request(models: list[str], n: int | None = None, **policy: Any) -> RunRequest:
    return RunRequest(
        run_id="r1",
        input="the checkout button moved off screen",
        spec=RunSpec(
            task=policy.pop("task", task()), panel=Panel.build(models, n), policy=Policy(**policy)
        ),
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_majority_over_a_mixed_panel_records_every_call() -> None:
    p = FakeProvider("f", {"a": ["regression"], "b": ["regression"], "c": ["no regression"]})
    engine = make_engine(p)
    events: list[Event] = []
    result = await engine.run(request(["f:a", "f:b", "f:c"]), on_event=events.append)
    assert result.decision.status == DecisionStatus.DECIDED
    assert result.decision.label == "regression"
    assert result.votes == {"regression": 2, "no regression": 1}
    assert [c.status for c in result.calls] == [CallStatus.OK] * 3
    assert result.cost_usd == pytest.approx(3 * (10e-6 + 4e-6))
    recorder = engine.recorder
    assert isinstance(recorder, MemoryRecorder)
    assert len(recorder.calls) == 3 and recorder.finished[0].run_id == "r1"
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "decision"
    assert kinds.count("call_started") == 3 and kinds.count("call_finished") == 3


async def test_invalid_and_failed_calls_are_kept_not_dropped() -> None:
    p = FakeProvider(
        "f",
        {
            "a": ["regression"],
            "b": ["banana"],
            "c": [ProviderError("HTTP 400: bad request", status=400)],
        },
    )
    result = await make_engine(p).run(request(["f:a", "f:b", "f:c"]))
    by_model = {c.model: c for c in result.calls}
    assert by_model["f:b"].status == CallStatus.INVALID and by_model["f:b"].raw == "banana"
    assert by_model["f:c"].status == CallStatus.ERROR and "400" in (by_model["f:c"].error or "")
    assert by_model["f:c"].retries == 0  # a 400 is never retried
    assert result.decision.label == "regression"


async def test_retryable_errors_are_retried_then_answer() -> None:
    p = FakeProvider(
        "f", {"a": [ProviderError("HTTP 503", status=503, retryable=True), "regression"]}
    )
    result = await make_engine(p).run(request(["f:a"]))
    assert result.calls[0].status == CallStatus.OK
    assert result.calls[0].retries == 1
    assert len(p.requests) == 2


async def test_attempts_are_bounded() -> None:
    p = FakeProvider("f", {"a": [ProviderError("HTTP 500", status=500, retryable=True)]})
    result = await make_engine(p).run(request(["f:a"]))
    assert result.calls[0].status == CallStatus.ERROR
    assert len(p.requests) == 3  # max_attempts
    assert result.decision.status == DecisionStatus.FAILED


async def test_deadline_ends_a_stalled_call_as_timeout() -> None:
    p = FakeProvider("f", {"a": ["regression"], "slow": [(30.0, "regression")]})
    engine = make_engine(p, timeout=0.05)
    engine.retry = RetryPolicy(max_attempts=1, base_s=0.001, max_s=0.01)
    result = await engine.run(request(["f:a", "f:slow"]))
    slow = next(c for c in result.calls if c.model == "f:slow")
    assert slow.status == CallStatus.TIMEOUT
    assert slow.tokens_in == 10  # what was known when it was cut


async def test_usage_is_summed_over_every_attempt_failed_ones_included() -> None:
    p = FakeProvider("f", {"a": [Billed(tokens_in=7), "regression"]})
    result = await make_engine(p).run(request(["f:a"]))
    (call,) = result.calls
    assert call.status == CallStatus.OK and call.retries == 1
    assert (call.tokens_in, call.tokens_out) == (7 + 10, 1 + 2)
    billed = (7e-6 + 1 * 2e-6) + (10e-6 + 2 * 2e-6)  # each attempt priced on its own
    assert call.cost_usd == pytest.approx(billed) and result.cost_usd == pytest.approx(billed)


async def test_an_attempt_cut_without_usage_makes_the_cost_unknown_not_lower() -> None:
    p = FakeProvider("f", {"a": [(30.0, "regression"), "regression"]})
    engine = make_engine(p)
    engine.attempt_timeout_s = 0.05
    result = await engine.run(request(["f:a"]))
    (call,) = result.calls
    assert call.status == CallStatus.OK and call.retries == 1
    assert call.tokens_in == 20  # both prompts: the cut one may well have been billed
    assert call.cost_usd is None  # the cut attempt's usage was never reported
    assert call.cost_known_usd == pytest.approx((10e-6 + 3 * 2e-6) + (10e-6 + 2 * 2e-6))
    assert (result.cost_usd, result.cost_unknown_calls) == (None, 1)
    assert result.cost_known_usd == pytest.approx(call.cost_known_usd)


async def test_a_call_cancelled_while_waiting_to_retry_is_not_billed_for_the_wait() -> None:
    refused = ProviderError("HTTP 503", status=503, retryable=True, retry_after=30.0, billed=False)
    p = FakeProvider("f", {"a": [refused, "regression"]})
    engine = make_engine(p, timeout=120.0)
    with anyio.move_on_after(0.3):
        await engine.run(request(["f:a"]))
    assert len(p.requests) == 1  # cancelled in the wait, before a second attempt
    assert isinstance(engine.recorder, MemoryRecorder)
    ((_, call, _),) = engine.recorder.calls
    assert call.status == CallStatus.CANCELLED
    assert (call.tokens_in, call.cost_usd) == (None, 0.0)  # an error reply bills nothing
    assert engine.recorder.finished[0].cost_usd == 0.0


async def test_call_timeout_bounds_the_whole_call_not_each_attempt() -> None:
    p = FakeProvider("f", {"a": [(30.0, "regression")]})
    engine = make_engine(p, timeout=0.2)  # three attempts allowed, no per-attempt limit
    result = await engine.run(request(["f:a"]))
    (call,) = result.calls
    assert call.status == CallStatus.TIMEOUT
    assert len(p.requests) == 1  # the deadline ended the call; it did not start again
    assert "0.2s" in (call.error or "")


async def test_attempt_timeout_retries_within_the_call_deadline() -> None:
    p = FakeProvider("f", {"a": [(30.0, "regression")]})
    engine = make_engine(p, timeout=0.5)
    engine.attempt_timeout_s = 0.05
    engine.retry = RetryPolicy(max_attempts=20, base_s=0.0, max_s=0.0)
    result = await engine.run(request(["f:a"]))
    (call,) = result.calls
    assert call.status == CallStatus.TIMEOUT
    assert 1 <= len(p.requests) < 20  # retried, but never past the call's deadline


async def test_a_retry_after_past_the_deadline_ends_the_call_as_timeout_at_once() -> None:
    throttled = ProviderError("HTTP 429", status=429, retryable=True, retry_after=60.0)
    p = FakeProvider("f", {"a": [throttled, "regression"]})
    result = await make_engine(p, timeout=5.0).run(request(["f:a"]))
    (call,) = result.calls
    assert call.status == CallStatus.TIMEOUT
    assert "would pass the call's deadline" in (call.error or "")
    assert len(p.requests) == 1


async def test_global_ceiling_bounds_calls_in_flight() -> None:
    p = FakeProvider("f", {"a": [(0.02, "regression")]})
    engine = make_engine(p, concurrency=3)
    result = await engine.run(request(["f:a"], n=12))
    assert len(result.calls) == 12
    assert p.max_in_flight == 3


async def test_provider_ceiling_bounds_calls_in_flight() -> None:
    p = FakeProvider("f", {"a": [(0.02, "regression")]}, max_concurrency=2)
    await make_engine(p, concurrency=8).run(request(["f:a"], n=6))
    assert p.max_in_flight == 2


async def test_early_stop_cancels_calls_that_cannot_change_the_winner() -> None:
    p = FakeProvider(
        "f",
        {"fast": ["regression"], "slow": [(5.0, "no regression")]},
    )
    req = request(["f:fast", "f:fast", "f:fast", "f:slow", "f:slow"], early_stop=True)
    result = await make_engine(p).run(req)
    assert result.decision.label == "regression"
    cancelled = [c for c in result.calls if c.status == CallStatus.CANCELLED]
    assert len(cancelled) == 2
    assert all(c.tokens_in == 10 and c.tokens_out == 3 for c in cancelled)
    # cut in flight, no usage reported: what they cost is unknown, what is known is kept
    assert all(c.cost_usd is None and (c.cost_known_usd or 0) > 0 for c in cancelled)
    assert result.cost_usd is None and result.cost_unknown_calls == 2
    assert result.cost_known_usd == pytest.approx(
        sum(c.cost_usd if c.cost_usd is not None else c.cost_known_usd or 0 for c in result.calls)
    )
    assert p.cancelled == 2


async def test_fastest_acceptable_wins_and_cancels_the_rest() -> None:
    p = FakeProvider(
        "f",
        {
            "quick": [(0.0, "banana")],
            "mid": [(0.05, "no regression")],
            "slow": [(5.0, "regression")],
        },
    )
    req = request(["f:quick", "f:mid", "f:slow"], aggregation=Aggregation.FASTEST)
    result = await make_engine(p).run(req)
    # the fast invalid answer did not cancel the slower valid one
    assert result.decision.status == DecisionStatus.DECIDED
    assert result.decision.label == "no regression"
    slow = next(c for c in result.calls if c.model == "f:slow")
    assert slow.status == CallStatus.CANCELLED


async def test_fastest_respects_the_acceptance_check() -> None:
    p = FakeProvider("f", {"a": [(0.0, "no regression")], "b": [(0.05, "regression")]})
    req = request(
        ["f:a", "f:b"],
        aggregation=Aggregation.FASTEST,
        accept=Acceptance(labels=("regression",)),
    )
    result = await make_engine(p).run(req)
    assert result.decision.label == "regression"


async def test_hedging_delay_skips_calls_once_an_answer_came() -> None:
    p = FakeProvider("f", {"a": [(0.0, "regression")]})
    req = request(["f:a"], n=4, aggregation=Aggregation.FASTEST, hedge_delay_s=1.0)
    result = await make_engine(p).run(req)
    assert len(p.requests) == 1
    assert sum(c.status == CallStatus.CANCELLED for c in result.calls) == 3
    assert all(c.cost_usd == 0 for c in result.calls if c.status == CallStatus.CANCELLED)


async def test_a_tie_without_a_tie_break_stays_a_tie() -> None:
    p = FakeProvider("f", {"a": ["regression"], "b": ["no regression"]})
    result = await make_engine(p).run(request(["f:a", "f:b"]))
    assert result.decision.status == DecisionStatus.TIE
    assert result.decision.label is None
    assert result.decision.branches == []


async def test_tie_break_chain_expand_then_conservative() -> None:
    # expand draws two more votes that tie again; conservative then picks regression
    p = FakeProvider("f", {"a": ["regression"], "b": ["no regression"]})
    req = request(
        ["f:a", "f:b"],
        task=task(conservative=True),
        tie_breaks=(TieBreak(kind="expand", k=2), TieBreak(kind="conservative")),
    )
    result = await make_engine(p).run(req)
    assert result.decision.status == DecisionStatus.DECIDED
    assert result.decision.label == "regression"
    assert result.decision.branches == ["expand:2", "conservative"]
    assert [c.phase for c in result.calls].count("expand") == 2
    assert result.votes == {"regression": 2, "no regression": 2}


async def test_expand_that_breaks_the_tie_stops_the_chain() -> None:
    # slot 2 continues the round-robin on model a, whose second answer differs
    p = FakeProvider("f", {"a": ["regression", "no regression"], "b": ["no regression"]})
    req = request(
        ["f:a", "f:b"],
        n=2,
        tie_breaks=(TieBreak(kind="expand", k=1), TieBreak(kind="human")),
    )
    result = await make_engine(p).run(req)
    assert result.decision.status == DecisionStatus.DECIDED
    assert result.decision.label == "no regression"
    assert result.decision.branches == ["expand:1"]


async def test_escalate_asks_the_stronger_model() -> None:
    p = FakeProvider("f", {"a": ["regression"], "b": ["no regression"], "big": ["no regression"]})
    req = request(
        ["f:a", "f:b"], tie_breaks=(TieBreak(kind="escalate", model=ModelSpec.parse("f:big")),)
    )
    result = await make_engine(p).run(req)
    assert result.decision.status == DecisionStatus.ESCALATED
    assert result.decision.label == "no regression"
    assert result.decision.branches == ["escalate:f:big"]
    escalated = [c for c in result.calls if c.phase == "escalate"]
    assert len(escalated) == 1 and escalated[0].cost_usd is not None
    assert result.votes == {"regression": 1, "no regression": 1}  # escalation is not a vote


async def test_failed_escalation_falls_through_to_human() -> None:
    p = FakeProvider(
        "f",
        {
            "a": ["regression"],
            "b": ["no regression"],
            "big": [ProviderError("HTTP 401", status=401)],
        },
    )
    req = request(
        ["f:a", "f:b"],
        tie_breaks=(
            TieBreak(kind="escalate", model=ModelSpec.parse("f:big")),
            TieBreak(kind="human"),
        ),
    )
    result = await make_engine(p).run(req)
    assert result.decision.status == DecisionStatus.NEEDS_REVIEW
    assert result.decision.branches[0].startswith("escalate:f:big")
    assert result.decision.branches[-1] == "human"


async def test_n_samples_go_out_as_one_request_when_supported() -> None:
    p = FakeProvider("f", {"a": [["regression", "regression", "no regression"]]}, supports_n=True)
    result = await make_engine(p).run(request(["f:a"], n=3))
    assert len(p.requests) == 1 and p.requests[0].n == 3
    assert result.votes == {"regression": 2, "no regression": 1}
    assert [c.tokens_in for c in result.calls] == [10, 0, 0]  # prompt billed once
    assert [c.sample for c in result.calls] == [0, 1, 2]


async def test_n_falls_back_to_separate_calls_when_fewer_choices_come_back() -> None:
    p = FakeProvider("f", {"a": [["regression"], "regression"]}, supports_n=True)
    result = await make_engine(p).run(request(["f:a"], n=3))
    assert all(c.status == CallStatus.OK for c in result.calls)
    assert len(result.calls) == 3
    assert len(p.requests) >= 2


async def test_resume_reuses_finished_calls() -> None:
    p = FakeProvider("f", {"a": ["regression"]})
    prior = {
        ("panel", 0): CallResult(
            slot=0,
            model="f:a",
            status=CallStatus.OK,
            answer="no regression",
            raw="no regression",
            tokens_in=5,
            tokens_out=1,
            cost_usd=0.5,
        )
    }
    result = await make_engine(p).run(request(["f:a"], n=3), prior=prior)
    assert len(p.requests) == 2
    assert result.calls[0].answer == "no regression"
    assert result.cost_usd == pytest.approx(0.5 + 2 * 14e-6)


async def test_cache_serves_temperature_zero_but_keeps_samples_apart() -> None:
    spec = ModelSpec(provider="f", model="a", params={"temperature": 0})
    p = FakeProvider("f", {"a": ["regression"]})
    engine = make_engine(p)
    req = RunRequest(
        run_id="r1",
        input="x",
        spec=RunSpec(task=task(), panel=Panel.build([spec], 5), policy=Policy()),
    )
    await engine.run(req)
    assert len(p.requests) == 5  # five samples stay five
    second = await engine.run(
        RunRequest(
            run_id="r2",
            input="x",
            spec=RunSpec(task=task(), panel=Panel.build([spec], 5), policy=Policy()),
        )
    )
    assert len(p.requests) == 5  # all served from the cache
    assert all(c.cached for c in second.calls)
    assert second.cost_usd == 0


async def test_cache_key_is_sample_aware() -> None:
    spec = ModelSpec.parse("f:a")
    req = CompletionRequest(model="a", messages=[{"role": "user", "content": "x"}])
    fmt = task().format
    assert cache_key(spec, req, 0, fmt) != cache_key(spec, req, 1, fmt)
    assert cache_key(spec, req, 0, fmt) == cache_key(spec, req, 0, fmt)


async def test_bad_input_is_refused_before_anything_is_recorded() -> None:
    p = FakeProvider("f", {"a": ["regression"]})
    engine = make_engine(p)
    with pytest.raises(ConfigError):
        await engine.run(request(["nope:a"]))
    text_task = Task(format=parse_format({"kind": "text"}))
    with pytest.raises(PolicyError):
        await engine.run(request(["f:a"], task=text_task))
    assert isinstance(engine.recorder, MemoryRecorder)
    assert engine.recorder.started == [] and p.requests == []


async def test_cancelling_a_run_records_every_started_call() -> None:
    p = FakeProvider("f", {"a": [(5.0, "regression")]})
    engine = make_engine(p)
    with anyio.move_on_after(0.05):
        await engine.run(request(["f:a"], n=3))
    assert isinstance(engine.recorder, MemoryRecorder)
    statuses = [c.status for _, c, _ in engine.recorder.calls]
    assert statuses == [CallStatus.CANCELLED] * 3
    (ended,) = engine.recorder.finished  # stored failed, not left running
    assert ended.decision.status == DecisionStatus.FAILED
    assert ended.decision.reason == "run cancelled"
    assert [c.status for c in ended.calls] == [CallStatus.CANCELLED] * 3


async def test_a_cancelled_batch_run_is_left_for_the_resume() -> None:
    p = FakeProvider("f", {"a": [(5.0, "regression")]})
    engine = make_engine(p)
    req = replace(request(["f:a"], n=3), batch_id="b1", item_index=0)
    with anyio.move_on_after(0.05):
        await engine.run(req)
    assert isinstance(engine.recorder, MemoryRecorder)
    assert len(engine.recorder.calls) == 3 and engine.recorder.finished == []


async def test_throttling_cuts_the_provider_ceiling() -> None:
    p = FakeProvider(
        "f",
        {
            "a": [
                ProviderError("HTTP 429", status=429, retryable=True, retry_after=0.0),
                "regression",
            ]
        },
        max_concurrency=8,
    )
    engine = make_engine(p)
    events: list[Event] = []
    await engine.run(request(["f:a"]), on_event=events.append)
    assert any(e.kind == "concurrency" and "cut to 4" in e.message for e in events)
    # a throttle window of Retry-After 0 has passed by the next success: the ceiling is back
    assert any(e.kind == "concurrency" and "restored to 8" in e.message for e in events)
    assert engine.provider_limiter(p).limit == 8  # type: ignore[arg-type]


def test_run_cost_is_unknown_when_a_paid_call_has_no_price() -> None:
    calls = [
        CallResult(
            slot=0, model="f:a", status=CallStatus.OK, tokens_in=5, tokens_out=1, cost_usd=0.1
        ),
        CallResult(slot=1, model="f:unpriced", status=CallStatus.OK, tokens_in=5, tokens_out=1),
    ]
    assert run_cost(calls) is None
    assert run_cost(calls[:1]) == pytest.approx(0.1)
    refused = CallResult(slot=2, model="f:a", status=CallStatus.ERROR)
    assert run_cost([calls[0], refused]) == pytest.approx(0.1)


def test_a_result_lists_calls_by_phase_and_counts_only_the_voters() -> None:
    req = replace(request(["f:a", "f:b"]), batch_id="b1", item_id="i1", gold="regression")

    def call(phase: Any, slot: int, answer: str | None, cost: float | None) -> CallResult:
        status = CallStatus.OK if answer is not None else CallStatus.CANCELLED
        return CallResult(
            slot=slot,
            model="f:a",
            phase=phase,
            status=status,
            answer=answer,
            tokens_in=5,
            tokens_out=1,
            cost_usd=cost,
        )

    calls = [
        call("escalate", 3, "no regression", 0.5),
        call("expand", 2, "regression", 0.1),
        call("panel", 1, None, 0.05),
        call("panel", 0, "regression", 0.1),
    ]
    decision = Decision(status=DecisionStatus.DECIDED, label="regression")
    result = build_result(req, calls, decision, latency_ms=12.5)
    assert [(c.phase, c.slot) for c in result.calls] == [
        ("panel", 0),
        ("panel", 1),
        ("expand", 2),
        ("escalate", 3),
    ]
    assert result.votes == {"regression": 2}  # the escalation's answer is not a vote
    assert result.field_votes is None
    assert result.cost_usd == pytest.approx(0.75)  # the cancelled and escalate calls included
    assert result.latency_ms == 12.5
    assert result.decision == decision
    assert result.spec.slot_names == ["f:a", "f:b"]
    assert (result.batch_id, result.item_id, result.gold) == ("b1", "i1", "regression")
    unpriced = [*calls[:1], call("panel", 0, "regression", None)]
    assert build_result(req, unpriced, decision, latency_ms=0.0).cost_usd is None


def test_a_json_result_counts_votes_per_field() -> None:
    schema = {"type": "object", "properties": {"qty": {"type": "integer"}}}
    json_task = Task(format=parse_format({"kind": "json", "schema": schema}))
    req = request(["f:a"], 2, task=json_task)
    calls = [
        CallResult(slot=i, model="f:a", status=CallStatus.OK, answer='{"qty": 2}') for i in range(2)
    ]
    result = build_result(req, calls, Decision(status=DecisionStatus.DECIDED), latency_ms=1.0)
    assert result.field_votes == {"qty": {"2": 2}}


def synonym_task(broken_means: str) -> Task:
    """Two tasks that ask the same question (same prompt) but read a reply differently."""
    fmt = {"kind": "label", "labels": LABELS, "synonyms": {"broken": broken_means}}
    return Task(format=parse_format(fmt))


def cached_request(run_id: str, task: Task) -> RunRequest:
    spec = ModelSpec(provider="f", model="a", params={"temperature": 0})
    return RunRequest(
        run_id=run_id,
        input="the checkout button moved",
        spec=RunSpec(task=task, panel=Panel.build([spec], 1), policy=Policy()),
    )


async def test_a_cached_reply_is_never_read_under_another_task_s_format() -> None:
    p = FakeProvider("f", {"a": ["broken"]})
    engine = make_engine(p)
    first = await engine.run(cached_request("r1", synonym_task("no regression")))
    assert first.calls[0].answer == "no regression"
    second = await engine.run(cached_request("r2", synonym_task("regression")))
    assert second.calls[0].answer == "regression"
    assert second.decision.label == "regression"


async def test_the_cache_key_includes_the_answer_format() -> None:
    spec = ModelSpec.parse("f:a")
    req = CompletionRequest(model="a", messages=[{"role": "user", "content": "x"}])
    one, other = synonym_task("regression").format, synonym_task("no regression").format
    assert cache_key(spec, req, 0, one) != cache_key(spec, req, 0, other)
    assert cache_key(spec, req, 0, one) == cache_key(
        spec, req, 0, synonym_task("regression").format
    )


async def test_a_cache_hit_re_reads_the_stored_raw_reply() -> None:
    """The answer stored with a cached call is what an older reading made of it: the raw reply
    is read again under the current task."""
    p = FakeProvider("f", {"a": ["broken"]})
    engine = make_engine(p)
    recorder = engine.recorder
    assert isinstance(recorder, MemoryRecorder)
    await engine.run(cached_request("r1", synonym_task("regression")))
    (key,) = recorder.cache
    recorder.cache[key] = recorder.cache[key].model_copy(update={"answer": "no regression"})
    again = await engine.run(cached_request("r2", synonym_task("regression")))
    assert len(p.requests) == 1 and again.calls[0].cached
    assert again.calls[0].answer == "regression"


async def test_a_resumed_call_is_read_again_under_the_current_task() -> None:
    p = FakeProvider("f", {"a": ["broken"]})
    req = cached_request("r1", synonym_task("regression"))
    old = CallResult(
        slot=0, model="f:a", status=CallStatus.OK, answer="no regression", raw="broken"
    )
    invalid = old.model_copy(update={"slot": 1, "status": CallStatus.INVALID, "answer": None})
    req = RunRequest(
        run_id="r1",
        input=req.input,
        spec=req.spec.model_copy(update={"panel": Panel.build(["f:a"], 2)}),
    )
    result = await make_engine(p).run(req, prior={("panel", 0): old, ("panel", 1): invalid})
    assert p.requests == []  # nothing paid again
    assert [(c.status, c.answer) for c in result.calls] == [(CallStatus.OK, "regression")] * 2


async def test_a_call_throttled_with_retry_after_inside_its_deadline_never_gives_up() -> None:
    throttled = ProviderError("HTTP 429", status=429, retryable=True, retry_after=0.001)
    p = FakeProvider("f", {"a": [throttled] * 8 + ["regression"]}, max_concurrency=8)
    engine = make_engine(p)  # three attempts at most: 429s with Retry-After do not count
    result = await engine.run(request(["f:a"]))
    assert [c.status for c in result.calls] == [CallStatus.OK]
    assert result.calls[0].retries == 8


async def test_a_provider_that_keeps_throttling_ends_the_call_at_its_deadline() -> None:
    throttled = ProviderError("HTTP 429", status=429, retryable=True, retry_after=0.05)
    p = FakeProvider("f", {"a": [throttled] * 1000}, max_concurrency=8)
    engine = make_engine(p, timeout=0.3)
    result = await engine.run(request(["f:a"]))
    assert [c.status for c in result.calls] == [CallStatus.TIMEOUT]
