"""The connection test: lists a provider's models over the session's client, and turns every
failure (missing key, HTTP error, no answer) into one line without the key in it."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import httpx2
import pytest

from core import connection
from core.api import Tally

SECRET = "sk-test-SECRET-123456"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0")


def check(
    provider: str,
    handler: Callable[[httpx2.Request], httpx2.Response] | None = None,
    *,
    timeout_s: float = connection.TIMEOUT_S,
) -> connection.ConnectionResult:
    async def main() -> connection.ConnectionResult:
        transport = httpx2.MockTransport(handler) if handler else None
        async with Tally.open(persist=False, transport=transport) as tally:
            return await connection.test_connection(tally, provider, timeout_s=timeout_s)

    return anyio.run(main)


def test_the_in_process_sim_lists_its_models() -> None:
    result = check("sim")
    assert result.ok, result.error
    assert "sim-strong" in result.models
    assert result.models == sorted(result.models)
    assert result.latency_ms is not None and result.latency_ms >= 0


def test_a_missing_key_is_reported_without_a_request() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"data": []})

    result = check("openai", handler)
    assert not result.ok
    assert result.error == "OPENAI_API_KEY is not set"
    assert seen == []


def test_a_listing_with_the_key_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"data": [{"id": "gpt-b"}, {"id": "gpt-a"}]})

    result = check("openai", handler)
    assert result.ok, result.error
    assert result.models == ["gpt-a", "gpt-b"]
    assert seen[0].url.path.endswith("/models")
    assert seen[0].headers["authorization"] == f"Bearer {SECRET}"


def test_a_refused_key_is_one_line_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = {"error": {"message": f"Incorrect API key provided: {SECRET}"}}
        return httpx2.Response(401, content=json.dumps(body).encode())

    result = check("openai", handler)
    assert not result.ok
    assert result.error and "\n" not in result.error
    assert SECRET not in result.error
    assert "401" in result.error or "key" in result.error.lower()


def test_no_answer_in_time_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    async def slow(request: httpx2.Request) -> httpx2.Response:
        await anyio.sleep(5)
        return httpx2.Response(200, json={"data": []})

    async def main() -> connection.ConnectionResult:
        async with Tally.open(persist=False, transport=httpx2.MockTransport(slow)) as tally:
            return await connection.test_connection(tally, "openai", timeout_s=0.05)

    result = anyio.run(main)
    assert not result.ok
    assert result.error == "no answer within 0.05 s"


def test_an_unknown_provider() -> None:
    result = check("nowhere")
    assert not result.ok
    assert result.error and "unknown provider 'nowhere'" in result.error


def test_from_a_thread_without_a_loop_with_a_client_of_its_own() -> None:
    async def main() -> connection.ConnectionResult:
        async with Tally.open(persist=False) as tally:
            return await anyio.to_thread.run_sync(connection.test_connection_blocking, tally, "sim")

    result = anyio.run(main)
    assert result.ok, result.error
    assert "sim-oracle" in result.models


def test_from_a_thread_a_missing_key_is_still_a_line() -> None:
    async def main() -> connection.ConnectionResult:
        async with Tally.open(persist=False) as tally:
            return await anyio.to_thread.run_sync(
                connection.test_connection_blocking, tally, "anthropic"
            )

    result = anyio.run(main)
    assert not result.ok
    assert result.error == "ANTHROPIC_API_KEY is not set"
