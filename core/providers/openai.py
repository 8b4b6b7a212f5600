"""OpenAI-compatible chat completions: OpenAI, Ollama, vLLM, llama.cpp, OpenRouter, Groq, the
sim server... Plain and streamed (SSE) replies, usage, ``response_format`` json_schema, and
``n`` samples in one request with the prompt billed once.

Every request goes through ``client.stream(...)`` inside ``async with``: a call cancelled by
the engine (early stop, fastest-acceptable) closes its connection at once, so the server sees
the disconnect and stops generating.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2

from core.errors import ProviderError
from core.http import (
    DEFAULT_READ_TIMEOUT_S,
    Reply,
    aiter_sse,
    error_in_body,
    redact,
)
from core.providers import (
    ANSWER_TOOL,
    as_count,
    model_ids,
    object_schema,
    split_evenly,
    unwrap_answer,
)
from core.providers.base import Completion, CompletionRequest, Usage
from core.providers.endpoint import Endpoint


class OpenAIProvider(Endpoint):
    """One OpenAI-compatible endpoint. The key is held here only and never shown by ``repr``."""

    kind: str = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        *,
        max_concurrency: int = 8,
        supports_n: bool = True,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        super().__init__(
            name,
            base_url,
            api_key,
            max_concurrency=max_concurrency,
            stream=stream,
            headers=headers,
            timeout_s=timeout_s,
        )
        self.supports_n = supports_n

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def build_body(self, request: CompletionRequest) -> tuple[dict[str, Any], bool, int, bool]:
        """The JSON body, whether the schema was wrapped, the choices expected, and whether
        the reply streams. Tally's own fields win over same-named params."""
        body: dict[str, Any] = {k: v for k, v in request.params.items() if v is not None}
        body["model"] = request.model
        body["messages"] = request.messages
        body.pop("n", None)
        expected = 1
        if request.n > 1 and self.supports_n:
            body["n"] = expected = request.n
        wrapped = False
        if request.schema is not None:
            schema, wrapped = object_schema(request.schema)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": ANSWER_TOOL, "schema": schema, "strict": True},
            }
        streaming = request.stream or self.stream
        if streaming:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body, wrapped, expected, streaming

    async def complete(
        self, client: httpx2.AsyncClient, request: CompletionRequest, usage: Usage
    ) -> list[Completion]:
        """One request; ``request.n`` completions when ``n`` is honoured, else what came back
        (fewer choices than asked turns ``supports_n`` off: the engine calls for the rest)."""
        body, wrapped, expected, streaming = self.build_body(request)
        completions = await self.post(
            client,
            "chat/completions",
            body,
            streaming=streaming,
            read_stream=lambda response: self._read_stream(response, usage, expected),
            read_reply=lambda data, host: self._parse_reply(data, host, usage),
        )
        if expected > 1 and len(completions) < expected:
            self.supports_n = False
        if wrapped:
            for completion in completions:
                completion.text = unwrap_answer(completion.text, wrapped)
        return completions

    def _parse_reply(self, data: Any, host: str, usage: Usage) -> list[Completion]:
        """A whole reply. Its usage is kept before anything else is checked: a reply cut or
        broken on the way (no choices, a choice without a finish reason) was billed all the
        same, and is a failed attempt to retry, exactly as a stream cut short is."""
        if not isinstance(data, dict):
            raise ProviderError(f"unexpected reply from {host}: not a JSON object")
        _read_usage(data.get("usage"), usage)
        choices = data.get("choices")
        if data.get("error") and not choices:
            raise error_in_body(data, host, secrets=(self._api_key,))
        if not isinstance(choices, list) or not choices:
            raise ProviderError(f"reply from {host} has no choices", retryable=True)
        ordered = sorted(
            (c for c in choices if isinstance(c, dict)), key=lambda c: as_count(c.get("index")) or 0
        )
        if not ordered:
            raise ProviderError(f"reply from {host} has no readable choices", retryable=True)
        if any(_reason(choice.get("finish_reason")) is None for choice in ordered):
            raise ProviderError(f"reply from {host} ended without a finish reason", retryable=True)
        shares = split_evenly(usage.tokens_out, len(ordered))
        out: list[Completion] = []
        for i, choice in enumerate(ordered):
            message = choice.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            out.append(
                Completion(
                    text=_text(content),
                    finish_reason=_reason(choice.get("finish_reason")),
                    tokens_in=_prompt_share(usage.tokens_in, i),
                    tokens_out=shares[i],
                )
            )
        return out

    async def _read_stream(self, response: Reply, usage: Usage, expected: int) -> list[Completion]:
        """Accumulate ``data:`` chunks per choice index until ``[DONE]``.

        ``usage.tokens_out`` counts content chunks as an estimate while the reply streams (one
        chunk is about one token), so a call cut short still shows what it used; the final
        usage chunk (``stream_options.include_usage``) replaces the estimate with the real
        numbers. Every choice must end with a finish reason, or the call failed.
        """
        host = self._host
        texts: dict[int, list[str]] = {}
        finish: dict[int, str] = {}
        chunks: dict[int, int] = {}
        reported = False
        async for _event, data in aiter_sse(response):
            payload = data.strip()
            if payload == "[DONE]":
                break
            if not payload:
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                chunk = None
            if not isinstance(chunk, dict):
                snippet = redact(payload[:60], (self._api_key,))
                raise ProviderError(
                    f"corrupted stream chunk from {host}: {snippet!r}", retryable=True
                )
            if chunk.get("error"):
                raise error_in_body(chunk, host, secrets=(self._api_key,))
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                index = as_count(choice.get("index")) or 0
                parts = texts.setdefault(index, [])
                delta = choice.get("delta")
                content = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(content, str) and content:
                    usage.mark_first_token()
                    parts.append(content)
                    chunks[index] = chunks.get(index, 0) + 1
                    if not reported:
                        usage.tokens_out = sum(chunks.values())
                reason = _reason(choice.get("finish_reason"))
                if reason:
                    finish[index] = reason
            if isinstance(chunk.get("usage"), dict):
                reported = True
                _read_usage(chunk["usage"], usage)
        unfinished = [i for i in sorted(texts) if i not in finish]
        if not texts or unfinished:
            raise ProviderError(f"stream from {host} ended without a finish reason", retryable=True)
        indices = sorted(texts)[: max(expected, 1)]
        if reported:
            shares = split_evenly(usage.tokens_out, len(indices))
        else:
            shares = [chunks.get(i, 0) for i in indices]
        return [
            Completion(
                text="".join(texts[index]),
                finish_reason=finish[index],
                tokens_in=_prompt_share(usage.tokens_in, i),
                tokens_out=shares[i],
            )
            for i, index in enumerate(indices)
        ]

    async def list_models(self, client: httpx2.AsyncClient) -> list[str]:
        """``GET {base_url}/models``: the ids the endpoint serves."""
        data, host = await self.get_json(client, "models")
        return model_ids(data, host)


def _read_usage(counts: Any, usage: Usage) -> None:
    """``usage`` from a reply's (or the last chunk's) ``usage`` object, cached prompt tokens
    (``prompt_tokens_details.cached_tokens``, part of ``prompt_tokens``) included. It counts
    as the provider's report only when both sides are there."""
    if not isinstance(counts, dict):
        return
    usage.tokens_in = as_count(counts.get("prompt_tokens"))
    usage.tokens_out = as_count(counts.get("completion_tokens"))
    details = counts.get("prompt_tokens_details")
    if isinstance(details, dict):
        usage.tokens_cached = as_count(details.get("cached_tokens"))
    usage.reported = usage.tokens_in is not None and usage.tokens_out is not None


def _prompt_share(tokens_in: int | None, index: int) -> int | None:
    """The prompt is billed once per request: all of it on the first sample, none on the rest
    (unknown stays unknown)."""
    if tokens_in is None or index == 0:
        return tokens_in
    return 0


def _reason(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""
