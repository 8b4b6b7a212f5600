"""What every wire protocol implements, and the request and reply shapes they share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2


@dataclass
class Usage:
    """One attempt's usage, filled in by the provider while the attempt goes on, so an attempt
    that fails or is cut still shows what it had consumed (tokens streamed so far, and the
    prompt once it is known).

    ``tokens_in`` is the whole prompt, cached tokens included (genai-prices counts it that
    way); ``tokens_cached`` is the part read from the provider's prompt cache and
    ``tokens_cache_write`` the part written to it. ``reported`` is set once the provider's own
    final count arrived: until then the counts are at most a lower bound.
    """

    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    tokens_cache_write: int | None = None
    reported: bool = False
    first_token_at: float | None = None  # time.monotonic() of the first streamed token

    def mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()


@dataclass(frozen=True)
class CompletionRequest:
    model: str  # the provider's own model id (no ``provider:`` prefix)
    messages: list[dict[str, str]]  # [{"role": "system"|"user", "content": ...}]
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, ...
    schema: dict[str, Any] | None = None  # JSON schema for structured output, if the format has one
    stream: bool = False
    n: int = 1  # samples in one request, where the endpoint supports it


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    tokens_in: int | None = None
    tokens_out: int | None = None


class Provider(Protocol):
    """One configured endpoint speaking one wire protocol."""

    name: str
    kind: str  # "openai" | "anthropic"
    base_url: str
    max_concurrency: int
    supports_n: bool  # may be turned off at run time when the endpoint ignores ``n``

    async def complete(
        self, client: httpx2.AsyncClient, request: CompletionRequest, usage: Usage
    ) -> list[Completion]:
        """Send one request; return ``request.n`` completions (one unless n>1 is supported).

        Raises ``core.errors.ProviderError`` for every failure, with ``retryable`` and
        ``retry_after`` set from the status and headers. A reply that ends without a finish
        reason, streamed or not, raises (retryable): it is a failed attempt, not an answer.
        ``usage`` keeps what the attempt consumed, also when it raises.
        """
        ...

    async def list_models(self, client: httpx2.AsyncClient) -> list[str]:
        """The models the endpoint offers (the connection test of the Models page)."""
        ...
