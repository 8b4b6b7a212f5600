"""The engine's per-provider ceiling runs on ``core.analysis.AIMD``: a burst of 429s is one
cut in half, a round of successes at the cut ceiling brings one slot back, and both changes
are reported as events of the run."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx2
import pytest

from core.analysis import AIMD
from core.engine import AdaptiveLimiter, Engine, RunRequest
from core.errors import ProviderError
from core.formats import parse_format
from core.panel import ModelSpec, Panel
from core.policy import Policy
from core.providers.base import Completion, CompletionRequest, Usage
from core.result import CallStatus, Event
from core.retry import RetryPolicy
from core.spec import RunSpec
from core.task import Task


def test_the_limiter_follows_aimd_step_for_step() -> None:
    limiter = AdaptiveLimiter(8)
    reference = AIMD(8, maximum=8)
    for throttled in [True] + [False] * 40 + [True] * 3 + [False] * 30:
        before = limiter.limit
        expected = reference.on_throttle() if throttled else reference.on_success()
        changed = limiter.on_throttle() if throttled else limiter.on_success()
        assert limiter.limit == expected == limiter.limiter.total_tokens
        assert changed == (expected if expected != before else None)


def test_one_burst_is_one_cut_and_successes_restore_the_ceiling() -> None:
    limiter = AdaptiveLimiter(8)
    assert limiter.on_throttle() == 4
    # the seven other calls in flight at the cut come back throttled too: no second cut
    assert [limiter.on_throttle() for _ in range(7)] == [None] * 7
    assert limiter.limit == 4
    steps = [n for n in (limiter.on_success() for _ in range(40)) if n is not None]
    assert steps == [5, 6, 7, 8]
    assert limiter.on_success() is None  # never above the configured ceiling
    assert limiter.limit == 8


@dataclass
class ThrottledOnce:
    """Answers every request, except that the first ``throttles`` requests get a 429."""

    throttles: int
    name: str = "f"
    kind: str = "openai"
    base_url: str = "http://fake"
    max_concurrency: int = 2
    supports_n: bool = False
    stream: bool = False
    seen: list[int] = field(default_factory=list)

    async def complete(
        self, client: httpx2.AsyncClient, request: CompletionRequest, usage: Usage
    ) -> list[Completion]:
        self.seen.append(1)
        if len(self.seen) <= self.throttles:
            raise ProviderError("HTTP 429", status=429, retryable=True, retry_after=0.0)
        usage.tokens_in = 5
        return [Completion(text="regression", finish_reason="stop", tokens_in=5, tokens_out=1)]

    async def list_models(self, client: httpx2.AsyncClient) -> list[str]:
        return ["a"]


@dataclass
class OneProvider:
    provider: ThrottledOnce

    def resolve(self, spec: ModelSpec) -> ThrottledOnce:
        return self.provider


class FreePrices:
    def price(
        self, model: str, tokens_in: int | None, tokens_out: int | None, **cache: int | None
    ) -> float:
        return 0.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_run_reports_the_cut_and_the_restore_as_events() -> None:
    provider = ThrottledOnce(throttles=1)
    engine = Engine(
        registry=OneProvider(provider),  # type: ignore[arg-type]
        client=httpx2.AsyncClient(),
        prices=FreePrices(),  # type: ignore[arg-type]
        concurrency=4,
        retry=RetryPolicy(max_attempts=3, base_s=0.0, max_s=0.0, jitter=False),
    )
    task = Task(format=parse_format({"kind": "label", "labels": ["regression", "fine"]}))
    events: list[Event] = []
    for index in range(3):  # separate runs, one after another: outcomes arrive in order
        result = await engine.run(
            RunRequest(
                run_id=f"r{index}",
                input="the checkout button moved",
                spec=RunSpec(task=task, panel=Panel.build(["f:a"], 1), policy=Policy()),
            ),
            on_event=events.append,
        )
        assert [c.status for c in result.calls] == [CallStatus.OK]
    notes = [e.message for e in events if e.kind == "concurrency"]
    assert notes == ["f: throttled, ceiling cut to 1", "f: ceiling restored to 2"]
