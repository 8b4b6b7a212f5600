"""Shared fixtures of the sim tests: the anyio backend, and reading the sim server's stats."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest

StatsPoll = Callable[[str, str, int], Awaitable[dict[str, Any]]]


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
    """``await poll_stats(base, key, at_least)``: the server's stats once ``stats[key]`` has
    reached ``at_least`` (the server notices a hang-up a moment after it happens)."""

    async def poll(base: str, key: str, at_least: int) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for _ in range(500):
            seen = await read_stats(base)
            if seen[key] >= at_least:
                return seen
            await anyio.sleep(0.01)
        raise AssertionError(f"stats[{key!r}] stayed below {at_least}: {seen}")

    return poll
