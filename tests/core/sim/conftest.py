"""Shared fixtures of the sim tests: the anyio backend, and reading the sim server's stats."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest

Stats = dict[str, Any]
StatsPoll = Callable[[str, Callable[[Stats], bool]], Awaitable[Stats]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def read_stats(base: str) -> dict[str, Any]:
    async with httpx2.AsyncClient() as client:
        response = await client.get(f"{base}/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


@pytest.fixture
def poll_stats() -> StatsPoll:
    """``await poll_stats(base, until)``: the server's stats once ``until(stats)`` holds (the
    server notices a hang-up, and lets the request go, a moment after it happens)."""

    async def poll(base: str, until: Callable[[Stats], bool]) -> Stats:
        seen: Stats = {}
        for _ in range(500):
            seen = await read_stats(base)
            if until(seen):
                return seen
            await anyio.sleep(0.01)
        raise AssertionError(f"the sim server's stats never got there: {seen}")

    return poll
