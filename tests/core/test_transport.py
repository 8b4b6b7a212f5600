"""The network transport over a real loopback server: connections reused, a cancelled call's
connection closed (the server sees it go) and never leaked from the pool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from core.api import Tally, build_policy, build_task
from core.http import build_client
from core.result import CallStatus, DecisionStatus
from core.spec import RunSpec

pytestmark = pytest.mark.anyio

LABELS = ["regression", "no regression"]
REPLY = json.dumps(
    {
        "choices": [{"index": 0, "message": {"content": "regression"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1},
    }
).encode()


class Loopback:
    """An OpenAI-compatible endpoint on 127.0.0.1: model ``fast`` answers once ``slow_per_run``
    ``slow`` requests are waiting, ``slow`` never answers and counts its client's disconnect."""

    def __init__(self, slow_per_run: int) -> None:
        self.slow_per_run = slow_per_run
        self.waiting_slow = 0
        self.connections = 0
        self.disconnects = 0
        self.changed = asyncio.Condition()
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                model = json.loads(await reader.readexactly(length))["model"]
                if model == "slow":
                    await self.note(slow=1)
                    await reader.read()  # b"" once the client closes the connection
                    await self.note(slow=-1, disconnects=1)
                    return
                async with self.changed:
                    await self.changed.wait_for(lambda: self.waiting_slow >= self.slow_per_run)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(REPLY), REPLY)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def note(self, slow: int, disconnects: int = 0) -> None:
        async with self.changed:
            self.waiting_slow += slow
            self.disconnects += disconnects
            self.changed.notify_all()


@asynccontextmanager
async def loopback(slow_per_run: int) -> AsyncIterator[Loopback]:
    server = Loopback(slow_per_run)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/v1"
    async with listener:
        yield server


def config_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "tally.toml"
    path.write_text(
        f'[providers.p]\nkind = "openai"\nbase_url = "{url}"\nmax_concurrency = 4\n'
        "supports_n = false\n"
    )
    return path


async def test_cancelled_fastest_losers_close_their_connections_and_the_pool_serves_the_next(
    tmp_path: Path,
) -> None:
    losers, runs = 3, 4
    async with loopback(slow_per_run=losers) as server:
        async with Tally.open(
            config=config_for(tmp_path, server.url), persist=False, concurrency=4
        ) as tally:
            pool = tally.engine.client._transport.limits.max_connections  # type: ignore[attr-defined]
            assert losers * runs > pool  # leaked connections would exhaust the pool
            spec = RunSpec(
                task=build_task(labels=LABELS),
                panel=tally.panel(["p:fast"] + ["p:slow"] * losers),
                policy=build_policy(aggregate="fastest"),
            )
            for _ in range(runs):
                with anyio.fail_after(30):  # a leaked pool hangs; fail instead
                    result = await tally.vote("the header moved", spec)
                assert result.decision.status == DecisionStatus.DECIDED
                cancelled = [c for c in result.calls if c.status == CallStatus.CANCELLED]
                assert len(cancelled) == losers
                with anyio.fail_after(10):  # the server sees every loser's connection go
                    async with server.changed:
                        await server.changed.wait_for(lambda: server.waiting_slow == 0)
        assert server.disconnects == losers * runs
        # the fast calls shared connections: one per run at most, never one per loser
        assert server.connections <= losers * runs + runs


async def test_connections_are_kept_alive_between_calls() -> None:
    async with loopback(slow_per_run=0) as server, build_client(None, max_connections=4) as client:
        for _ in range(5):
            reply = await client.post(
                f"{server.url}/chat/completions", json={"model": "fast", "messages": []}
            )
            assert reply.json()["choices"][0]["message"]["content"] == "regression"
    assert server.connections == 1
