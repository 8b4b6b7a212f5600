"""The Models page's connection test: can Tally reach a provider, and what does it serve?

It lists the provider's models over the session's own HTTP client, so it checks exactly the
path a run takes (base URL, key header, proxy settings, the in-process sim mount). A missing
key is reported without a request: the answer would only be a 401 that says less.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import httpx2

from core.errors import TallyError
from core.http import build_client

if TYPE_CHECKING:
    from core.api import Tally

TIMEOUT_S = 15.0
"""Long enough for a cold TLS handshake to a far region; a listing that takes longer is down
as far as a person waiting at the page is concerned."""


@dataclass(frozen=True)
class ConnectionResult:
    provider: str
    ok: bool
    models: list[str] = field(default_factory=list)
    latency_ms: float | None = None
    error: str | None = None


async def test_connection(
    tally: Tally,
    provider_name: str,
    *,
    client: httpx2.AsyncClient | None = None,
    timeout_s: float = TIMEOUT_S,
) -> ConnectionResult:
    """List ``provider_name``'s models; every failure becomes ``ok=False`` with one line.

    ``client`` defaults to the session's own; pass one when calling from another event loop.
    Error lines come from the provider layer, which already strips keys from them.
    """
    try:
        provider = tally.registry.provider(provider_name)
        env = tally.registry.config(provider_name).api_key_env
    except TallyError as err:
        return ConnectionResult(provider_name, ok=False, error=str(err))
    if env is not None and not tally.registry.key_status().get(provider_name):
        return ConnectionResult(provider_name, ok=False, error=f"{env} is not set")
    started = time.perf_counter()
    try:
        with anyio.fail_after(timeout_s):
            models = await provider.list_models(client or tally.engine.client)
    except TimeoutError:
        return ConnectionResult(provider_name, ok=False, error=f"no answer within {timeout_s:g} s")
    except TallyError as err:
        return ConnectionResult(
            provider_name,
            ok=False,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=str(err),
        )
    return ConnectionResult(
        provider_name,
        ok=True,
        models=sorted(models),
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def test_connection_blocking(
    tally: Tally, provider_name: str, *, timeout_s: float = TIMEOUT_S
) -> ConnectionResult:
    """The test from a thread without an event loop (the dashboard's script thread).

    It runs in a short loop of its own with a fresh client built like the session's (same
    settings, the in-process sim mounted when the registry uses it): an ``httpx2`` client
    belongs to the loop that opened it, so the session's client cannot be borrowed here.
    """

    async def main() -> ConnectionResult:
        sim_app = None
        if tally.registry.uses_in_process_sim:
            from core.sim.server import create_app

            sim_app = create_app(
                seed=tally.settings.sim_seed, time_scale=tally.settings.sim_time_scale
            )
        async with build_client(tally.settings, max_connections=2, sim_app=sim_app) as client:
            return await test_connection(tally, provider_name, client=client, timeout_s=timeout_s)

    return anyio.run(main)


# product functions whose names pytest would otherwise collect as tests
test_connection.__test__ = False  # type: ignore[attr-defined]
test_connection_blocking.__test__ = False  # type: ignore[attr-defined]
