"""Anthropic's Messages API, spoken natively (not through a compatibility layer): the system
prompt as its own field, ``max_tokens`` always sent, structured output as one forced tool,
and the named SSE events of its stream.

Like the OpenAI-compatible protocol, every request runs inside ``async with client.stream``
so a cancelled call closes its connection at once.
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
from core.providers import ANSWER_TOOL, as_count, model_ids, object_schema, unwrap_answer
from core.providers.base import Completion, CompletionRequest, Usage
from core.providers.endpoint import Endpoint

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
"""The Messages API requires ``max_tokens``; a vote needs few, this leaves room for a reason."""

OPENAI_ONLY_PARAMS = frozenset(
    {
        "seed",
        "n",
        "frequency_penalty",
        "presence_penalty",
        "response_format",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "stream_options",
        "user",
    }
)
"""Chat-completions knobs the Messages API refuses with a 400. A panel may set them for all
its models; they are left out for Anthropic models rather than failing the call."""

_MAX_LIST_PAGES = 20


class AnthropicProvider(Endpoint):
    """One Messages API endpoint. The key is held here only and never shown by ``repr``."""

    kind: str = "anthropic"

    def __init__(
        self,
        name: str,
        base_url: str = "https://api.anthropic.com/v1",
        api_key: str | None = None,
        *,
        max_concurrency: int = 8,
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
        self.supports_n = False  # the Messages API draws one sample per request

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def build_body(self, request: CompletionRequest) -> tuple[dict[str, Any], bool, bool]:
        """The JSON body, whether the schema was wrapped, and whether the reply streams."""
        body: dict[str, Any] = {
            k: v for k, v in request.params.items() if v is not None and k not in OPENAI_ONLY_PARAMS
        }
        if "stop" in body:
            stop = body.pop("stop")
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if "max_completion_tokens" in body:
            body.setdefault("max_tokens", body.pop("max_completion_tokens"))
        body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        body["model"] = request.model
        system = [m["content"] for m in request.messages if m.get("role") == "system"]
        if system:
            body["system"] = "\n\n".join(system)
        body["messages"] = [
            {"role": m["role"], "content": m["content"]}
            for m in request.messages
            if m.get("role") != "system"
        ]
        wrapped = False
        if request.schema is not None:
            schema, wrapped = object_schema(request.schema)
            body["tools"] = [
                {
                    "name": ANSWER_TOOL,
                    "description": "Give the answer in the required structure.",
                    "input_schema": schema,
                }
            ]
            body["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        streaming = request.stream or self.stream
        if streaming:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body, wrapped, streaming

    async def complete(
        self, client: httpx2.AsyncClient, request: CompletionRequest, usage: Usage
    ) -> list[Completion]:
        """One request, one completion whatever ``request.n`` asks (``supports_n`` is off)."""
        body, wrapped, streaming = self.build_body(request)
        completion = await self.post(
            client,
            "messages",
            body,
            streaming=streaming,
            read_stream=lambda response: self._read_stream(response, usage),
            read_reply=lambda data, host: self._parse_reply(data, host, usage),
        )
        completion.text = unwrap_answer(completion.text, wrapped)
        return [completion]

    def _parse_reply(self, data: Any, host: str, usage: Usage) -> Completion:
        """A whole reply; its usage is kept first, since a reply without content or without a
        stop reason was billed all the same and is a failed attempt to retry."""
        if not isinstance(data, dict):
            raise ProviderError(f"unexpected reply from {host}: not a JSON object")
        if data.get("type") == "error" or (data.get("error") and "content" not in data):
            raise error_in_body(data, host, secrets=(self._api_key,))
        _read_prompt(data.get("usage"), usage)
        _read_output(data.get("usage"), usage)
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise ProviderError(f"reply from {host} has no content", retryable=True)
        stop = data.get("stop_reason")
        if not isinstance(stop, str) or not stop:
            raise ProviderError(f"reply from {host} ended without a stop reason", retryable=True)
        text_parts: list[str] = []
        tool_input: str | None = None
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                text_parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use" and block.get("name") == ANSWER_TOOL:
                tool_input = json.dumps(block.get("input"))
        return Completion(
            text=tool_input if tool_input is not None else "".join(text_parts),
            finish_reason=stop,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
        )

    async def _read_stream(self, response: Reply, usage: Usage) -> Completion:
        """Follow the event sequence ``message_start``, ``content_block_*``, ``message_delta``,
        ``message_stop``. Deltas are counted into ``usage.tokens_out`` as an estimate until
        ``message_delta`` reports the real count. A stream that stops before ``message_stop``
        with a stop reason failed, whatever text it carried."""
        host = self._host
        texts: list[str] = []
        tool_json: list[str] = []
        tool_blocks: set[int] = set()
        deltas = 0
        reported = False
        stop_reason: str | None = None
        stopped = False
        async for event_name, data in aiter_sse(response):
            if not data.strip():
                continue
            try:
                event = json.loads(data)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                snippet = redact(data[:60], (self._api_key,))
                raise ProviderError(
                    f"corrupted stream event from {host}: {snippet!r}", retryable=True
                )
            kind = event.get("type") or event_name
            if kind == "error":
                raise error_in_body(event, host, secrets=(self._api_key,))
            if kind == "message_start":
                message = event.get("message")
                _read_prompt(message.get("usage") if isinstance(message, dict) else None, usage)
            elif kind == "content_block_start":
                block = event.get("content_block")
                if (
                    isinstance(block, dict)
                    and block.get("type") == "tool_use"
                    and block.get("name") == ANSWER_TOOL
                ):
                    tool_blocks.add(as_count(event.get("index")) or 0)
            elif kind == "content_block_delta":
                delta = event.get("delta")
                if not isinstance(delta, dict):
                    continue
                piece: str | None = None
                if delta.get("type") == "text_delta":
                    piece = str(delta.get("text", ""))
                    texts.append(piece)
                elif (
                    delta.get("type") == "input_json_delta"
                    and (as_count(event.get("index")) or 0) in tool_blocks
                ):
                    piece = str(delta.get("partial_json", ""))
                    tool_json.append(piece)
                if piece:
                    usage.mark_first_token()
                    deltas += 1
                    if not reported:
                        usage.tokens_out = deltas
            elif kind == "message_delta":
                delta = event.get("delta")
                reason = delta.get("stop_reason") if isinstance(delta, dict) else None
                if isinstance(reason, str) and reason:
                    stop_reason = reason
                counts = event.get("usage")
                if isinstance(counts, dict) and as_count(counts.get("output_tokens")) is not None:
                    reported = True
                    if as_count(counts.get("input_tokens")) is not None:
                        _read_prompt(counts, usage)  # the final count, where the API sends it
                    _read_output(counts, usage)
            elif kind == "message_stop":
                stopped = True
                break
        if not stopped or stop_reason is None:
            raise ProviderError(f"stream from {host} ended without a finish reason", retryable=True)
        if tool_blocks:
            raw = "".join(tool_json)
            try:
                text = json.dumps(json.loads(raw or "{}"))
            except ValueError:
                text = raw  # the format will judge it invalid, with the raw text kept
        else:
            text = "".join(texts)
        return Completion(
            text=text,
            finish_reason=stop_reason,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
        )

    async def list_models(self, client: httpx2.AsyncClient) -> list[str]:
        """``GET {base_url}/models``, following ``has_more`` pages."""
        ids: list[str] = []
        params: dict[str, str | int] = {"limit": 1000}
        for _ in range(_MAX_LIST_PAGES):
            data, host = await self.get_json(client, "models", params)
            ids += model_ids(data, host)
            last = data.get("last_id") if isinstance(data, dict) else None
            if not (isinstance(data, dict) and data.get("has_more") and isinstance(last, str)):
                break
            params = {"limit": 1000, "after_id": last}
        return sorted(set(ids))


def _read_prompt(counts: Any, usage: Usage) -> None:
    """The prompt side of Anthropic's ``usage``. ``input_tokens`` leaves out the prompt cache,
    so the cache reads and writes are added back: ``tokens_in`` is the whole prompt, as
    genai-prices counts it, with the cached parts priced at their own rates."""
    if not isinstance(counts, dict):
        return
    fresh = as_count(counts.get("input_tokens"))
    read = as_count(counts.get("cache_read_input_tokens"))
    written = as_count(counts.get("cache_creation_input_tokens"))
    usage.tokens_in = None if fresh is None else fresh + (read or 0) + (written or 0)
    usage.tokens_cached = read
    usage.tokens_cache_write = written


def _read_output(counts: Any, usage: Usage) -> None:
    """The output side; with the prompt known too, the usage is the provider's own report."""
    if not isinstance(counts, dict):
        return
    usage.tokens_out = as_count(counts.get("output_tokens"))
    usage.reported = usage.tokens_in is not None and usage.tokens_out is not None
