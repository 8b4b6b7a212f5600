"""The sim's rate-limit mode over HTTP, and the engine pacing itself against it on loopback:
every call answered, hardly any throttled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import pytest

from core.api import Tally, build_policy, build_task
from core.http import parse_retry_after, read_rate_limits
from core.result import CallStatus
from core.sim.ratelimits import RateLimits
from core.sim.server import serve_in_thread
from core.spec import RunSpec

pytestmark = pytest.mark.anyio


async def read_stats(base: str) -> dict[str, Any]:
    async with httpx2.AsyncClient() as client:
        data: dict[str, Any] = (await client.get(f"{base}/stats")).json()
        return data


MESSAGES = [{"role": "user", "content": "Is the header moving 4px a regression?"}]


async def test_over_the_limit_is_429_with_retry_after_and_every_reply_says_what_is_left() -> None:
    limits = RateLimits(requests_per_minute=120, burst_s=1.0)  # 2/s, a bucket of 2
    with serve_in_thread(time_scale=0.0, rate_limits=limits) as url:
        async with httpx2.AsyncClient() as client:
            replies = [
                await client.post(
                    f"{url}/chat/completions", json={"model": "sim-fast", "messages": MESSAGES}
                )
                for _ in range(3)
            ]
        stats = await read_stats(url)
    assert [r.status_code for r in replies] == [200, 200, 429]
    for reply in replies:
        info = read_rate_limits(reply.headers)
        assert info is not None and info.requests_limit == 120
        assert reply.headers["anthropic-ratelimit-requests-limit"] == "120"
    assert read_rate_limits(replies[0].headers).requests_remaining == 1  # type: ignore[union-attr]
    wait = parse_retry_after(replies[2].headers)
    assert wait is not None and 0 < wait <= 0.5
    assert replies[2].json()["error"]["type"] == "rate_limit_error"
    assert stats["throttled"] == 1 and stats["statuses"]["429"] == 1


async def test_the_token_limit_refuses_too() -> None:
    limits = RateLimits(tokens_per_minute=60, burst_s=1.0)  # a bucket of one token
    with serve_in_thread(time_scale=0.0, rate_limits=limits) as url:
        async with httpx2.AsyncClient() as client:
            first = await client.post(
                f"{url}/chat/completions", json={"model": "sim-fast", "messages": MESSAGES}
            )
            second = await client.post(
                f"{url}/chat/completions", json={"model": "sim-fast", "messages": MESSAGES}
            )
    assert first.status_code == 200  # a request costs at most the bucket
    assert second.status_code == 429
    info = read_rate_limits(second.headers)
    assert info is not None and info.tokens_limit == 60 and info.tokens_remaining == 0


async def test_the_engine_paces_itself_to_the_limit_and_every_call_is_answered(
    tmp_path: Path,
) -> None:
    limits = RateLimits(requests_per_minute=600, burst_s=1.0)  # 10/s, a bucket of 10
    with serve_in_thread(time_scale=0.01, rate_limits=limits) as url:
        config = tmp_path / "tally.toml"
        config.write_text(
            f'[providers.local]\nkind = "openai"\nbase_url = "{url}"\nmax_concurrency = 8\n'
            "supports_n = false\n"
        )
        async with Tally.open(config=config, persist=False, concurrency=8) as tally:
            spec = RunSpec(
                task=build_task(labels=["regression", "no regression"]),
                panel=tally.panel(["local:sim-fast"], 8),
                policy=build_policy(),
            )
            results = [await tally.vote(f"item {i}", spec) for i in range(4)]
        stats = await read_stats(url)
    calls = [c for r in results for c in r.calls]
    assert len(calls) == 32
    assert all(c.status in (CallStatus.OK, CallStatus.INVALID) for c in calls)
    # 32 calls over a bucket of 10 at 10/s: unpaced, a third would come back 429
    assert stats["throttled"] <= 3, stats
