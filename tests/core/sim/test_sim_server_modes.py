"""The sim server's capacity modes and injected faults behave as documented.

Behaviour is asserted (who was in service, what came back), never wall-clock values; the one
measurement, the contention shape, compares throughputs of the same server with each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import anyio
import httpx2
import openai
import pytest

from core.sim.faults import RETRY_AFTER_MS
from core.sim.models import SIM_MODELS
from core.sim.server import serve_in_thread

pytestmark = pytest.mark.anyio

StatsPoll = Callable[[str, Callable[[dict[str, Any]], bool]], Awaitable[dict[str, Any]]]

SYSTEM = 'Answer with exactly one label from this list: ["regression", "no regression"]'
BODY: dict[str, Any] = {
    "model": "sim-strong",
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "The footer links now open in a new tab."},
    ],
}


def body_for(i: int, model: str = "sim-strong", **extra: Any) -> dict[str, Any]:
    """A request on its own input, so each one is a first sample (no model error draws)."""
    messages = [BODY["messages"][0], {"role": "user", "content": f"Change number {i}."}]
    return {**BODY, "model": model, "messages": messages, **extra}


async def stats(client: httpx2.AsyncClient, base: str) -> dict[str, Any]:
    data: dict[str, Any] = (await client.get(f"{base}/stats")).json()
    return data


async def fire(
    base: str, count: int, model: str = "sim-strong"
) -> tuple[list[int], dict[str, Any]]:
    """``count`` concurrent requests; their statuses and the server's stats afterwards."""
    statuses: list[int] = []
    async with httpx2.AsyncClient(timeout=30) as client:

        async def one(i: int) -> None:
            response = await client.post(f"{base}/chat/completions", json=body_for(i, model))
            statuses.append(response.status_code)

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(one, i)
        return statuses, await stats(client, base)


async def test_unlimited_serves_everything_at_once() -> None:
    with serve_in_thread(time_scale=0.1) as base:
        statuses, seen = await fire(base, 8)
    assert len(statuses) == 8 and seen["served"] == 8
    assert seen["max_in_service"] >= 4 and seen["max_queued"] == 0


async def test_capacity_one_serialises() -> None:
    with serve_in_thread(time_scale=0.05, capacity=1) as base:
        statuses, seen = await fire(base, 8)
    assert len(statuses) == 8 and seen["served"] == 8
    assert seen["max_in_service"] == 1
    assert seen["max_in_flight"] >= 4 and seen["max_queued"] >= 3
    assert seen["in_flight"] == seen["in_service"] == seen["queued"] == 0


async def test_capacity_k_bounds_the_requests_in_service() -> None:
    with serve_in_thread(time_scale=0.05, capacity=3) as base:
        _, seen = await fire(base, 9)
    assert seen["max_in_service"] == 3 and seen["served"] == 9


async def test_requests_cancelled_in_service_and_in_the_queue_are_counted(
    poll_stats: StatsPoll,
) -> None:
    # Real-time latency, so both are still waiting when their clients give up.
    with serve_in_thread(time_scale=1.0, capacity=1) as base:
        async with httpx2.AsyncClient(timeout=30) as client:

            async def post(i: int) -> None:
                await client.post(f"{base}/chat/completions", json=body_for(i))

            async with anyio.create_task_group() as tg:
                tg.start_soon(post, 1)
                await poll_stats(base, lambda s: s["in_service"] >= 1)
                tg.start_soon(post, 2)
                await poll_stats(base, lambda s: s["queued"] >= 1)
                tg.cancel_scope.cancel()
            seen = await poll_stats(base, lambda s: s["disconnects"] >= 2 and not s["in_flight"])
    assert seen["served"] == 0 and seen["max_in_service"] == 1
    assert seen["in_flight"] == seen["in_service"] == seen["queued"] == 0


async def throughput(client: httpx2.AsyncClient, base: str, concurrency: int, rounds: int) -> float:
    """Completions per second of ``concurrency`` clients sharing ``concurrency * rounds``
    requests (shared, so one slow reply does not hold its client's whole share back)."""
    total = concurrency * rounds
    taken = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal taken
        while taken < total:
            taken += 1
            await client.post(f"{base}/chat/completions", json=body_for(taken, "sim-steady"))

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return total / (time.perf_counter() - start)


STEADY = replace(
    SIM_MODELS["sim-fast"],
    name="sim-steady",
    latency_median_ms=80.0,
    latency_p95_ms=80.0,
    ttft_ms=20.0,
    error_rate=0.0,
)
"""Always 80 ms (a median equal to its p95 leaves no spread): the shape shows in few calls."""


async def test_contention_throughput_rises_to_the_ceiling_then_falls() -> None:
    # Best of two passes per level: other work on the machine only ever slows a pass down.
    levels = (2, 8, 32)
    best = dict.fromkeys(levels, 0.0)
    with serve_in_thread(contention=8, models={"sim-steady": STEADY}) as base:
        limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx2.AsyncClient(timeout=30, limits=limits) as client:
            for _ in range(2):
                for level in levels:
                    best[level] = max(best[level], await throughput(client, base, level, 2))
            seen = await stats(client, base)
    print(f"\ncompletions/s by concurrency: { {c: round(v, 1) for c, v in best.items()} }")
    assert best[8] > 1.8 * best[2]  # below the ceiling, more in flight is more done
    assert best[32] < 0.8 * best[8]  # past it, more in flight is less done
    assert seen["max_in_service"] >= 24  # all in service: the slowdown is contention, not a queue


async def test_429_carries_retry_after() -> None:
    with serve_in_thread(time_scale=0.01, faults=["429:1"]) as base:
        async with openai.AsyncOpenAI(base_url=base, api_key="sim", max_retries=0) as client:
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(**BODY)
        async with httpx2.AsyncClient() as raw:
            response = await raw.post(f"{base}/chat/completions", json=BODY)
            seen = await stats(raw, base)
    headers = caught.value.response.headers
    assert float(headers["retry-after"]) == pytest.approx(RETRY_AFTER_MS * 0.01 / 1000)
    assert int(headers["retry-after-ms"]) == round(RETRY_AFTER_MS * 0.01)
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert seen["faults"] == {"429": 2} and seen["statuses"] == {"429": 2}


@pytest.mark.parametrize("kind", ["500", "503"])
async def test_server_errors(kind: str) -> None:
    with serve_in_thread(time_scale=0.01, faults=[f"{kind}:1"]) as base:
        async with openai.AsyncOpenAI(base_url=base, api_key="sim", max_retries=0) as client:
            with pytest.raises(openai.InternalServerError) as caught:
                await client.chat.completions.create(**BODY)
    assert caught.value.status_code == int(kind)
    assert set(caught.value.response.json()["error"]) == {"message", "type", "param", "code"}


async def test_faults_apply_per_model() -> None:
    with serve_in_thread(time_scale=0.01, faults=["sim-flaky:500:1"]) as base:
        async with httpx2.AsyncClient() as client:
            flaky = await client.post(f"{base}/chat/completions", json=body_for(1, "sim-flaky"))
            other = await client.post(f"{base}/chat/completions", json=body_for(1, "sim-mid"))
    assert flaky.status_code == 500 and other.status_code == 200


async def test_model_error_rates_inject_500_and_503() -> None:
    with serve_in_thread(time_scale=0) as base:
        _, seen = await fire(base, 300, "sim-flaky")
    assert seen["statuses"]["200"] > 240
    assert seen["statuses"].get("500", 0) > 0 and seen["statuses"].get("503", 0) > 0


async def test_stall_never_answers_and_the_hang_up_is_counted(poll_stats: StatsPoll) -> None:
    with serve_in_thread(time_scale=0.01, faults=["stall:1"]) as base:
        async with httpx2.AsyncClient(timeout=0.3) as client:
            with pytest.raises(httpx2.ReadTimeout):
                await client.post(f"{base}/chat/completions", json=BODY)
        seen = await poll_stats(base, lambda s: s["disconnects"] >= 1 and not s["in_flight"])
    assert seen["served"] == 0 and seen["in_flight"] == 0


async def test_timeout_answers_only_long_after_the_usual_latency() -> None:
    # sim-fast answers within ~10 ms at this scale; the fault answers after >= 300 ms.
    with serve_in_thread(time_scale=0.01, faults=["timeout:1"]) as base:
        async with httpx2.AsyncClient(timeout=0.1) as impatient:
            with pytest.raises(httpx2.ReadTimeout):
                await impatient.post(f"{base}/chat/completions", json=body_for(1, "sim-fast"))
        async with httpx2.AsyncClient(timeout=10) as patient:
            response = await patient.post(f"{base}/chat/completions", json=body_for(2, "sim-fast"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["finish_reason"] == "stop"


async def sse(base: str, body: dict[str, Any]) -> list[str]:
    """The ``data:`` payloads of a stream, raw."""
    async with (
        httpx2.AsyncClient(timeout=10) as client,
        client.stream("POST", f"{base}/chat/completions", json={**body, "stream": True}) as resp,
    ):
        assert resp.status_code == 200
        return [line[6:] async for line in resp.aiter_lines() if line.startswith("data: ")]


async def test_cut_streams_end_without_a_finish_reason() -> None:
    with serve_in_thread(time_scale=0.01, faults=["cut:1"]) as base:
        data = await sse(base, BODY)
        async with httpx2.AsyncClient() as client:
            plain = (await client.post(f"{base}/chat/completions", json=BODY)).json()
    assert data and "[DONE]" not in data
    chunks = [json.loads(d) for d in data]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert plain["choices"][0]["finish_reason"] is None


async def test_corrupt_streams_carry_a_chunk_that_is_not_json() -> None:
    with serve_in_thread(time_scale=0.01, faults=["corrupt:1"]) as base:
        data = await sse(base, BODY)
        async with httpx2.AsyncClient() as client:
            plain = await client.post(f"{base}/chat/completions", json=BODY)
    broken = 0
    for payload in data:
        try:
            json.loads(payload)
        except ValueError:
            broken += payload != "[DONE]"
    assert broken == 1
    with pytest.raises(ValueError):
        plain.json()


async def test_html_error_pages() -> None:
    with serve_in_thread(time_scale=0.01, faults=["html:1"]) as base:
        async with httpx2.AsyncClient() as client:
            response = await client.post(f"{base}/chat/completions", json=BODY)
        async with openai.AsyncOpenAI(base_url=base, api_key="sim", max_retries=0) as sdk:
            with pytest.raises(openai.APIStatusError) as caught:
                await sdk.chat.completions.create(**BODY)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>")
    assert caught.value.status_code == 502


async def test_wrong_shapes_have_no_choices() -> None:
    with serve_in_thread(time_scale=0.01, faults=["shape:1"]) as base:
        data = await sse(base, BODY)
        async with httpx2.AsyncClient() as client:
            plain = (await client.post(f"{base}/chat/completions", json=BODY)).json()
    assert "choices" not in plain and plain["usage"]["completion_tokens"] > 0
    chunks = [json.loads(d) for d in data if d != "[DONE]"]
    assert chunks and all("choices" not in c for c in chunks)


async def test_faults_are_reproducible_by_seed() -> None:
    outcomes = []
    for seed in (1, 1, 2):
        with serve_in_thread(seed=seed, time_scale=0, faults=["429:0.3", "html:0.3"]) as base:
            async with httpx2.AsyncClient() as client:
                codes = []
                for i in range(40):
                    response = await client.post(f"{base}/chat/completions", json=body_for(i))
                    codes.append(response.status_code)
        outcomes.append(codes)
    assert outcomes[0] == outcomes[1] != outcomes[2]
    assert {429, 502, 200} <= set(outcomes[0])
