"""The Messages API against ``httpx2.MockTransport``: headers and body, plain and streamed
replies, the forced tool for structured output, error events and failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import pytest

from core.errors import ProviderError
from core.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider
from core.providers.base import Completion, CompletionRequest, Usage
from tests.core.providers.wire import client_for, settled

pytestmark = pytest.mark.anyio

BASE = "https://api.anthropic.example/v1"
KEY = "sk-ant-api03-secretsecretsecret"
MESSAGES = [
    {"role": "system", "content": "You label pages."},
    {"role": "system", "content": "Answer with one label."},
    {"role": "user", "content": "Is this a regression?"},
]
SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["regression", "no regression"]}},
    "required": ["label"],
}


class Server:
    def __init__(self, handler: Callable[[httpx2.Request], httpx2.Response]) -> None:
        self.handler = handler
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.requests[-1].content)
        return data

    def client(self) -> httpx2.AsyncClient:
        return client_for(self)


def message(
    content: list[dict[str, Any]], stop: str | None = "end_turn", usage: tuple[int, int] = (25, 4)
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def events(*items: tuple[str, dict[str, Any]] | str) -> bytes:
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        else:
            name, data = item
            out.append(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n")
    return "".join(out).encode()


def start(input_tokens: int = 30) -> tuple[str, dict[str, Any]]:
    return (
        "message_start",
        {"message": {"id": "m", "usage": {"input_tokens": input_tokens, "output_tokens": 1}}},
    )


def text_delta(text: str, index: int = 0) -> tuple[str, dict[str, Any]]:
    return ("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": text}})


def json_delta(part: str, index: int = 0) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_delta",
        {"index": index, "delta": {"type": "input_json_delta", "partial_json": part}},
    )


def message_delta(stop: str | None, output_tokens: int) -> tuple[str, dict[str, Any]]:
    return (
        "message_delta",
        {"delta": {"stop_reason": stop}, "usage": {"output_tokens": output_tokens}},
    )


STOP: tuple[str, dict[str, Any]] = ("message_stop", {})


def stream_response(body: bytes) -> httpx2.Response:
    return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})


def provider(**kwargs: Any) -> AnthropicProvider:
    kwargs.setdefault("api_key", KEY)
    return AnthropicProvider("anthropic", BASE, max_concurrency=2, **kwargs)


def request(**kwargs: Any) -> CompletionRequest:
    return CompletionRequest(model="claude-test", messages=MESSAGES, **kwargs)


async def complete(
    server: Server, req: CompletionRequest, usage: Usage | None = None, **kwargs: Any
) -> list[Completion]:
    async with server.client() as client:
        return await provider(**kwargs).complete(client, req, usage or Usage())


async def test_plain_reply_headers_and_body() -> None:
    server = Server(
        lambda r: httpx2.Response(200, json=message([{"type": "text", "text": "regression"}]))
    )
    usage = Usage()
    out = await complete(
        server,
        request(params={"temperature": 0, "seed": 3, "stop": "\n", "presence_penalty": 1}),
        usage,
    )
    assert [(c.text, c.finish_reason, c.tokens_in, c.tokens_out) for c in out] == [
        ("regression", "end_turn", 25, 4)
    ]
    assert (usage.tokens_in, usage.tokens_out) == (25, 4)
    sent = server.requests[0]
    assert str(sent.url) == f"{BASE}/messages"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert server.body == {
        "model": "claude-test",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "temperature": 0,
        "stop_sequences": ["\n"],
        "system": "You label pages.\n\nAnswer with one label.",
        "messages": [{"role": "user", "content": "Is this a regression?"}],
    }


async def test_max_tokens_from_params() -> None:
    server = Server(lambda r: httpx2.Response(200, json=message([{"type": "text", "text": "a"}])))
    await complete(server, request(params={"max_tokens": 16}))
    assert server.body["max_tokens"] == 16
    await complete(server, request(params={"max_completion_tokens": 12}))
    assert server.body["max_tokens"] == 12
    assert "max_completion_tokens" not in server.body


async def test_no_system_field_without_system_messages() -> None:
    server = Server(lambda r: httpx2.Response(200, json=message([{"type": "text", "text": "a"}])))
    req = CompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    async with server.client() as client:
        await provider(api_key=None).complete(client, req, Usage())
    assert "system" not in server.body
    assert "x-api-key" not in server.requests[0].headers


async def test_n_is_one_completion() -> None:
    server = Server(lambda r: httpx2.Response(200, json=message([{"type": "text", "text": "a"}])))
    out = await complete(server, request(n=5))
    assert len(out) == 1
    assert "n" not in server.body
    assert provider().supports_n is False


async def test_schema_forces_the_answer_tool() -> None:
    tool_reply = message(
        [{"type": "tool_use", "id": "t1", "name": "answer", "input": {"label": "regression"}}],
        stop="tool_use",
    )
    server = Server(lambda r: httpx2.Response(200, json=tool_reply))
    out = await complete(server, request(schema=SCHEMA))
    assert server.body["tools"][0]["name"] == "answer"
    assert server.body["tools"][0]["input_schema"] == SCHEMA
    assert server.body["tool_choice"] == {"type": "tool", "name": "answer"}
    assert json.loads(out[0].text) == {"label": "regression"}
    assert out[0].finish_reason == "tool_use"


async def test_non_object_schema_is_wrapped_and_unwrapped() -> None:
    schema = {"type": "number"}
    tool_reply = message(
        [{"type": "tool_use", "id": "t1", "name": "answer", "input": {"answer": 4.5}}]
    )
    server = Server(lambda r: httpx2.Response(200, json=tool_reply))
    out = await complete(server, request(schema=schema))
    assert server.body["tools"][0]["input_schema"]["properties"] == {"answer": schema}
    assert out[0].text == "4.5"


async def test_streamed_reply() -> None:
    body = events(
        start(30),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {}),
        text_delta("no "),
        text_delta("regression"),
        ("content_block_stop", {"index": 0}),
        message_delta("end_turn", 3),
        STOP,
    )
    server = Server(lambda r: stream_response(body))
    usage = Usage()
    out = await complete(server, request(stream=True), usage)
    assert [(c.text, c.finish_reason, c.tokens_in, c.tokens_out) for c in out] == [
        ("no regression", "end_turn", 30, 3)
    ]
    assert usage.first_token_at is not None
    assert server.body["stream"] is True
    assert server.requests[0].headers["accept"] == "text/event-stream"


async def test_streamed_tool_input() -> None:
    body = events(
        start(),
        (
            "content_block_start",
            {"index": 0, "content_block": {"type": "tool_use", "name": "answer", "input": {}}},
        ),
        json_delta(""),
        json_delta('{"label": "no '),
        json_delta('regression"}'),
        ("content_block_stop", {"index": 0}),
        message_delta("tool_use", 9),
        STOP,
    )
    server = Server(lambda r: stream_response(body))
    out = await complete(server, request(stream=True, schema=SCHEMA))
    assert json.loads(out[0].text) == {"label": "no regression"}
    assert out[0].tokens_out == 9


async def test_stream_without_message_stop_fails_but_keeps_usage() -> None:
    body = events(start(30), text_delta("reg"), text_delta("ress"))
    server = Server(lambda r: stream_response(body))
    usage = Usage()
    with pytest.raises(ProviderError, match="ended without a finish reason") as info:
        await complete(server, request(stream=True), usage)
    assert info.value.retryable
    assert (usage.tokens_in, usage.tokens_out) == (30, 2)


async def test_stream_without_stop_reason_fails() -> None:
    body = events(start(), text_delta("a"), message_delta(None, 1), STOP)
    server = Server(lambda r: stream_response(body))
    with pytest.raises(ProviderError, match="ended without a finish reason"):
        await complete(server, request(stream=True))


@pytest.mark.parametrize(
    ("kind", "retryable"),
    [("overloaded_error", True), ("api_error", True), ("invalid_request_error", False)],
)
async def test_error_event(kind: str, retryable: bool) -> None:
    body = events(
        start(), text_delta("a"), ("error", {"error": {"type": kind, "message": f"{kind}!"}})
    )
    server = Server(lambda r: stream_response(body))
    with pytest.raises(ProviderError, match=f"{kind}!") as info:
        await complete(server, request(stream=True))
    assert info.value.retryable is retryable


async def test_corrupted_event() -> None:
    body = events(start(), 'event: content_block_delta\ndata: {"type": "content_bl\n\n')
    server = Server(lambda r: stream_response(body))
    with pytest.raises(ProviderError, match="corrupted stream event") as info:
        await complete(server, request(stream=True))
    assert info.value.retryable


async def test_overloaded_status() -> None:
    server = Server(
        lambda r: httpx2.Response(
            529,
            json={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            headers={"retry-after": "2"},
        )
    )
    with pytest.raises(ProviderError, match=r"HTTP 529 .*Overloaded") as info:
        await complete(server, request())
    assert info.value.retryable
    assert info.value.retry_after == 2.0


async def test_authentication_error_does_not_retry_or_leak() -> None:
    server = Server(
        lambda r: httpx2.Response(
            401,
            json={
                "type": "error",
                "error": {"type": "authentication_error", "message": f"invalid x-api-key {KEY}"},
            },
        )
    )
    with pytest.raises(ProviderError) as info:
        await complete(server, request(stream=True))
    assert not info.value.retryable
    assert KEY not in str(info.value)


async def test_error_body_with_200() -> None:
    server = Server(
        lambda r: httpx2.Response(
            200, json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
        )
    )
    with pytest.raises(ProviderError, match="busy") as info:
        await complete(server, request())
    assert info.value.retryable


async def test_missing_content() -> None:
    server = Server(lambda r: httpx2.Response(200, json={"type": "message", "id": "m"}))
    with pytest.raises(ProviderError, match="has no content"):
        await complete(server, request())


@pytest.mark.mock_only
async def test_read_timeout() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    with pytest.raises(ProviderError) as info:
        await complete(Server(handler), request())
    assert info.value.timeout
    assert info.value.retryable


async def test_malformed_json() -> None:
    server = Server(lambda r: httpx2.Response(200, content=b'{"content": [{'))
    with pytest.raises(ProviderError, match="malformed JSON") as info:
        await complete(server, request())
    assert info.value.retryable


async def test_cancelled_stream_is_closed() -> None:
    closed: list[bool] = []

    class Hanging(httpx2.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield events(start(), text_delta("a"))
            await anyio.sleep(30)

        async def aclose(self) -> None:
            closed.append(True)

    server = Server(
        lambda r: httpx2.Response(
            200, stream=Hanging(), headers={"content-type": "text/event-stream"}
        )
    )
    usage = Usage()
    with anyio.move_on_after(0.2):
        await complete(server, request(stream=True), usage)
    await settled()
    assert closed == [True]
    assert (usage.tokens_in, usage.tokens_out) == (30, 1)


async def test_list_models_follows_pages() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.params.get("after_id") == "claude-b":
            return httpx2.Response(
                200, json={"data": [{"id": "claude-c"}], "has_more": False, "last_id": "claude-c"}
            )
        return httpx2.Response(
            200,
            json={
                "data": [{"id": "claude-b"}, {"id": "claude-a"}],
                "has_more": True,
                "last_id": "claude-b",
            },
        )

    server = Server(handler)
    async with server.client() as client:
        models = await provider().list_models(client)
    assert models == ["claude-a", "claude-b", "claude-c"]
    assert len(server.requests) == 2
    assert server.requests[0].headers["x-api-key"] == KEY


def test_repr_hides_the_key() -> None:
    prov = provider()
    assert KEY not in repr(prov)
    assert "key=set" in repr(prov)
    assert prov.has_key


async def test_a_reply_without_content_or_stop_reason_is_a_retryable_failure() -> None:
    no_content = message([])
    del no_content["content"]
    for body, match in (
        (no_content, "no content"),
        (message([{"type": "text", "text": "x"}], stop=None), "stop reason"),
    ):
        server = Server(lambda r, body=body: httpx2.Response(200, json=body))
        usage = Usage()
        with pytest.raises(ProviderError, match=match) as info:
            await complete(server, request(), usage)
        assert info.value.retryable  # never an invalid vote of the model
        assert (usage.tokens_in, usage.tokens_out) == (25, 4)  # billed all the same


async def test_prompt_cache_reads_and_writes_are_part_of_the_prompt() -> None:
    body = message([{"type": "text", "text": "yes"}])
    body["usage"] = {
        "input_tokens": 10,
        "cache_read_input_tokens": 3000,
        "cache_creation_input_tokens": 500,
        "output_tokens": 2,
    }
    server = Server(lambda r: httpx2.Response(200, json=body))
    usage = Usage()
    (out,) = await complete(server, request(), usage)
    assert (usage.tokens_in, usage.tokens_cached, usage.tokens_cache_write) == (3510, 3000, 500)
    assert out.tokens_in == 3510 and usage.reported


async def test_a_cut_stream_keeps_its_prompt_but_is_no_report() -> None:
    started = (
        "message_start",
        {"message": {"id": "m", "usage": {"input_tokens": 7, "cache_read_input_tokens": 20}}},
    )
    server = Server(lambda r: stream_response(events(started, text_delta("regr"))))
    usage = Usage()
    with pytest.raises(ProviderError, match="without a finish reason"):
        await complete(server, request(stream=True), usage)
    assert (usage.tokens_in, usage.tokens_cached, usage.tokens_out) == (27, 20, 1)
    assert not usage.reported  # the output count is an estimate: the attempt's usage is unknown
