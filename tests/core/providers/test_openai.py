"""The OpenAI-compatible protocol against ``httpx2.MockTransport``: what is sent, plain and
streamed replies, usage, ``n`` and its fallback, structured output, and every way a reply
can fail."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx2
import pytest

from core.errors import ProviderError
from core.providers.base import CompletionRequest, Usage
from core.providers.openai import OpenAIProvider
from tests.core.providers.wire import client_for, settled

pytestmark = pytest.mark.anyio

BASE = "https://api.example.com/v1"
KEY = "sk-test-abcdefghijklmnop0123"
MESSAGES = [
    {"role": "system", "content": "Answer with one label."},
    {"role": "user", "content": "Is this a regression?"},
]

Handler = Callable[[httpx2.Request], httpx2.Response]


class Server:
    """A MockTransport that records requests and answers with ``handler``."""

    def __init__(self, handler: Handler) -> None:
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


def reply(
    choices: list[tuple[str, str | None]],
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
            }
            for i, (text, reason) in enumerate(choices)
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def sse(*chunks: dict[str, Any] | str, done: bool = True) -> bytes:
    lines = [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def delta(text: str | None, index: int = 0, finish: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {} if text is None else {"content": text}
    return {"choices": [{"index": index, "delta": d, "finish_reason": finish}]}


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


def sse_response(body: bytes, status: int = 200) -> httpx2.Response:
    return httpx2.Response(status, content=body, headers={"content-type": "text/event-stream"})


def provider(**kwargs: Any) -> OpenAIProvider:
    kwargs.setdefault("api_key", KEY)
    return OpenAIProvider("test", BASE + "/", max_concurrency=4, **kwargs)


def request(**kwargs: Any) -> CompletionRequest:
    return CompletionRequest(model="gpt-test", messages=MESSAGES, **kwargs)


async def complete(
    server: Server, prov: OpenAIProvider, req: CompletionRequest, usage: Usage | None = None
) -> list[Any]:
    async with server.client() as client:
        return await prov.complete(client, req, usage or Usage())


# --- plain replies --------------------------------------------------------------------------


async def test_plain_reply_and_usage() -> None:
    server = Server(
        lambda r: httpx2.Response(
            200, json=reply([("regression", "stop")], {"prompt_tokens": 21, "completion_tokens": 2})
        )
    )
    usage = Usage()
    req = request(params={"temperature": 0.2, "max_tokens": 8, "seed": 7, "top_p": None})
    out = await complete(server, provider(), req, usage)
    assert [(c.text, c.finish_reason, c.tokens_in, c.tokens_out) for c in out] == [
        ("regression", "stop", 21, 2)
    ]
    assert (usage.tokens_in, usage.tokens_out) == (21, 2)
    sent = server.requests[0]
    assert str(sent.url) == f"{BASE}/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert server.body == {
        "model": "gpt-test",
        "messages": MESSAGES,
        "temperature": 0.2,
        "max_tokens": 8,
        "seed": 7,
    }


async def test_no_key_no_authorization_header() -> None:
    server = Server(lambda r: httpx2.Response(200, json=reply([("a", "stop")])))
    out = await complete(server, provider(api_key=None, headers={"X-Team": "t"}), request())
    assert "authorization" not in server.requests[0].headers
    assert server.requests[0].headers["x-team"] == "t"
    assert out[0].tokens_in is None  # no usage reported: unknown, not 0


async def test_content_parts_and_null_content() -> None:
    body = reply([("", "stop"), ("", "content_filter")])
    body["choices"][0]["message"]["content"] = [{"type": "text", "text": "yes"}]
    body["choices"][1]["message"]["content"] = None
    server = Server(lambda r: httpx2.Response(200, json=body))
    out = await complete(server, provider(), request(n=2))
    assert [(c.text, c.finish_reason) for c in out] == [("yes", "stop"), ("", "content_filter")]


async def test_schema_sends_response_format() -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["a", "b"]}},
        "required": ["label"],
        "additionalProperties": False,
    }
    server = Server(lambda r: httpx2.Response(200, json=reply([('{"label": "a"}', "stop")])))
    out = await complete(server, provider(), request(schema=schema))
    assert server.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    assert out[0].text == '{"label": "a"}'


async def test_non_object_schema_is_wrapped_and_unwrapped() -> None:
    schema = {"type": "string", "enum": ["a", "b"]}
    server = Server(lambda r: httpx2.Response(200, json=reply([('{"answer": "b"}', "stop")])))
    out = await complete(server, provider(), request(schema=schema))
    sent = server.body["response_format"]["json_schema"]["schema"]
    assert sent["type"] == "object"
    assert sent["properties"] == {"answer": schema}
    assert out[0].text == '"b"'


# --- n samples ------------------------------------------------------------------------------


async def test_n_samples_bill_the_prompt_once() -> None:
    server = Server(
        lambda r: httpx2.Response(
            200,
            json=reply(
                [("a", "stop"), ("b", "stop"), ("a", "length")],
                {"prompt_tokens": 30, "completion_tokens": 7},
            ),
        )
    )
    prov = provider()
    usage = Usage()
    out = await complete(server, prov, request(n=3), usage)
    assert server.body["n"] == 3
    assert [c.text for c in out] == ["a", "b", "a"]
    assert [c.tokens_in for c in out] == [30, 0, 0]
    assert [c.tokens_out for c in out] == [3, 2, 2]  # 7 split evenly, summing to 7
    assert (usage.tokens_in, usage.tokens_out) == (30, 7)
    assert prov.supports_n


async def test_choices_out_of_order_are_sorted() -> None:
    body = reply([("first", "stop"), ("second", "stop")])
    body["choices"].reverse()
    server = Server(lambda r: httpx2.Response(200, json=body))
    out = await complete(server, provider(), request(n=2))
    assert [c.text for c in out] == ["first", "second"]


async def test_fewer_choices_than_n_turns_n_off() -> None:
    server = Server(
        lambda r: httpx2.Response(
            200, json=reply([("a", "stop")], {"prompt_tokens": 10, "completion_tokens": 1})
        )
    )
    prov = provider()
    out = await complete(server, prov, request(n=4))
    assert len(out) == 1
    assert prov.supports_n is False
    await complete(server, prov, request(n=4))
    assert "n" not in server.body  # the engine's separate calls go out without n


async def test_n_not_sent_when_unsupported() -> None:
    server = Server(lambda r: httpx2.Response(200, json=reply([("a", "stop")])))
    out = await complete(server, provider(supports_n=False), request(n=5, params={"n": 9}))
    assert "n" not in server.body
    assert len(out) == 1


# --- streaming ------------------------------------------------------------------------------


async def test_streamed_reply_with_usage_chunk() -> None:
    body = sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        delta("no "),
        delta("regr"),
        delta("ession"),
        delta(None, finish="stop"),
        usage_chunk(40, 3),
    )
    server = Server(lambda r: sse_response(body))
    usage = Usage()
    before = time.monotonic()
    out = await complete(server, provider(), request(stream=True), usage)
    assert [(c.text, c.finish_reason, c.tokens_in, c.tokens_out) for c in out] == [
        ("no regression", "stop", 40, 3)
    ]
    assert (usage.tokens_in, usage.tokens_out) == (40, 3)
    assert usage.first_token_at is not None and usage.first_token_at >= before
    assert server.body["stream"] is True
    assert server.body["stream_options"] == {"include_usage": True}
    assert server.requests[0].headers["accept"] == "text/event-stream"


async def test_provider_level_streaming() -> None:
    body = sse(delta("a"), delta(None, finish="stop"))
    server = Server(lambda r: sse_response(body))
    out = await complete(server, provider(stream=True), request())
    assert out[0].text == "a"
    assert server.body["stream"] is True


async def test_stream_without_usage_chunk_counts_chunks() -> None:
    body = sse(delta("a"), delta("b"), delta("c", finish="stop"))
    server = Server(lambda r: sse_response(body))
    usage = Usage()
    out = await complete(server, provider(), request(stream=True), usage)
    assert out[0].text == "abc"
    assert usage.tokens_out == 3  # estimate: one token per chunk
    assert usage.tokens_in is None
    assert out[0].tokens_out == 3


async def test_streamed_n_samples_interleaved() -> None:
    body = sse(
        delta("ye", 0),
        delta("n", 1),
        delta("s", 0, "stop"),
        delta("o", 1, "stop"),
        usage_chunk(12, 5),
    )
    server = Server(lambda r: sse_response(body))
    prov = provider()
    out = await complete(server, prov, request(stream=True, n=2))
    assert [c.text for c in out] == ["yes", "no"]
    assert [c.tokens_in for c in out] == [12, 0]
    assert [c.tokens_out for c in out] == [3, 2]
    assert prov.supports_n


async def test_streamed_fewer_choices_turns_n_off() -> None:
    server = Server(lambda r: sse_response(sse(delta("a", 0, "stop"))))
    prov = provider()
    out = await complete(server, prov, request(stream=True, n=3))
    assert len(out) == 1
    assert prov.supports_n is False


async def test_truncated_stream_is_a_failed_call_that_keeps_its_usage() -> None:
    body = sse(delta("reg"), delta("ress"), done=False)
    server = Server(lambda r: sse_response(body))
    usage = Usage()
    with pytest.raises(ProviderError, match="ended without a finish reason") as info:
        await complete(server, provider(), request(stream=True), usage)
    assert info.value.retryable
    assert usage.tokens_out == 2  # what the cut call consumed, as far as known
    assert usage.first_token_at is not None


async def test_done_without_finish_reason_is_still_truncated() -> None:
    server = Server(lambda r: sse_response(sse(delta("a"))))
    with pytest.raises(ProviderError, match="ended without a finish reason"):
        await complete(server, provider(), request(stream=True))


async def test_one_unfinished_sample_fails_the_request() -> None:
    body = sse(delta("a", 0, "stop"), delta("b", 1))
    server = Server(lambda r: sse_response(body))
    with pytest.raises(ProviderError, match="ended without a finish reason"):
        await complete(server, provider(), request(stream=True, n=2))


async def test_empty_stream() -> None:
    server = Server(lambda r: sse_response(b""))
    with pytest.raises(ProviderError, match="ended without a finish reason") as info:
        await complete(server, provider(), request(stream=True))
    assert info.value.retryable


async def test_corrupted_chunk() -> None:
    body = sse(delta("a"), '{"choices": [{"index": 0, "delta": {"cont', delta(None, finish="stop"))
    server = Server(lambda r: sse_response(body))
    with pytest.raises(ProviderError, match="corrupted stream chunk") as info:
        await complete(server, provider(), request(stream=True))
    assert info.value.retryable


async def test_error_object_inside_the_stream() -> None:
    body = sse(delta("a"), {"error": {"message": "upstream overloaded", "code": 503}})
    server = Server(lambda r: sse_response(body))
    with pytest.raises(ProviderError, match="upstream overloaded") as info:
        await complete(server, provider(), request(stream=True))
    assert info.value.retryable


async def test_server_that_ignores_stream_gets_read_as_plain() -> None:
    server = Server(lambda r: httpx2.Response(200, json=reply([("a", "stop")])))
    out = await complete(server, provider(), request(stream=True))
    assert out[0].text == "a"


async def test_connection_dropped_mid_stream() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield sse(delta("a"), done=False)
        raise httpx2.RemoteProtocolError("peer closed connection")

    server = Server(
        lambda r: httpx2.Response(
            200, content=chunks(), headers={"content-type": "text/event-stream"}
        )
    )
    with pytest.raises(ProviderError, match="broke") as info:
        await complete(server, provider(), request(stream=True))
    assert info.value.retryable


class SlowStream(httpx2.AsyncByteStream):
    """A reply that sends one chunk and then hangs, recording whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield sse(delta("a"), done=False)
        await anyio.sleep(30)
        yield sse(delta(None, finish="stop"))

    async def aclose(self) -> None:
        self.closed = True


async def test_cancelled_call_closes_its_stream() -> None:
    stream = SlowStream()
    server = Server(
        lambda r: httpx2.Response(200, stream=stream, headers={"content-type": "text/event-stream"})
    )
    usage = Usage()
    with anyio.move_on_after(0.2) as scope:
        await complete(server, provider(), request(stream=True), usage)
    assert scope.cancelled_caught
    await settled()
    assert stream.closed
    assert usage.tokens_out == 1


# --- failures -------------------------------------------------------------------------------


def error_response(status: int, headers: dict[str, str] | None = None) -> Handler:
    return lambda r: httpx2.Response(
        status, json={"error": {"message": f"status {status}"}}, headers=headers or {}
    )


async def test_429_with_retry_after_seconds() -> None:
    server = Server(error_response(429, {"retry-after": "3"}))
    with pytest.raises(ProviderError) as info:
        await complete(server, provider(), request())
    assert (info.value.status, info.value.retryable, info.value.retry_after) == (429, True, 3.0)


async def test_429_with_retry_after_date() -> None:
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    server = Server(error_response(429, {"retry-after": date}))
    with pytest.raises(ProviderError) as info:
        await complete(server, provider(), request(stream=True))
    assert info.value.retry_after is not None
    assert 15 <= info.value.retry_after <= 21


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_retry(status: int) -> None:
    server = Server(error_response(status))
    with pytest.raises(ProviderError, match=f"HTTP {status} from api.example.com") as info:
        await complete(server, provider(), request())
    assert info.value.retryable


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_do_not_retry(status: int) -> None:
    server = Server(error_response(status))
    with pytest.raises(ProviderError, match=f"status {status}") as info:
        await complete(server, provider(), request(stream=True))
    assert not info.value.retryable
    assert info.value.status == status


async def test_key_never_in_an_error_message() -> None:
    server = Server(
        lambda r: httpx2.Response(
            401,
            json={"error": {"message": f"Incorrect API key provided: {KEY}. Bearer {KEY}"}},
        )
    )
    with pytest.raises(ProviderError) as info:
        await complete(server, provider(), request())
    assert KEY not in str(info.value)
    assert KEY[:12] not in str(info.value)


@pytest.mark.mock_only
async def test_read_timeout() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    with pytest.raises(ProviderError, match=r"timed out waiting for api\.example\.com") as info:
        await complete(Server(handler), provider(), request())
    assert info.value.timeout
    assert info.value.retryable


@pytest.mark.mock_only
async def test_connect_error() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    with pytest.raises(ProviderError, match="cannot connect") as info:
        await complete(Server(handler), provider(), request())
    assert info.value.retryable
    assert not info.value.timeout


async def test_malformed_json_body() -> None:
    server = Server(
        lambda r: httpx2.Response(
            200, content=b'{"choices": [', headers={"content-type": "application/json"}
        )
    )
    with pytest.raises(ProviderError, match="malformed JSON") as info:
        await complete(server, provider(), request())
    assert info.value.retryable


async def test_missing_choices_is_a_retryable_failure_that_keeps_its_usage() -> None:
    body = {
        "id": "x",
        "object": "chat.completion",
        "usage": {"prompt_tokens": 9, "completion_tokens": 0},
    }
    server = Server(lambda r: httpx2.Response(200, json=body))
    usage = Usage()
    with pytest.raises(ProviderError, match="has no choices") as info:
        await complete(server, provider(), request(), usage)
    assert info.value.retryable  # a cut reply, as a cut stream is: never the model's vote
    assert (usage.tokens_in, usage.tokens_out, usage.reported) == (
        9,
        0,
        True,
    )  # billed all the same


@pytest.mark.parametrize("reason", [None, ""])
async def test_a_reply_without_a_finish_reason_is_a_retryable_failure(reason: str | None) -> None:
    body = reply(
        [("regression", "stop"), ("regr", reason)],
        usage={"prompt_tokens": 5, "completion_tokens": 3},
    )
    server = Server(lambda r: httpx2.Response(200, json=body))
    usage = Usage()
    with pytest.raises(ProviderError, match="without a finish reason") as info:
        await complete(server, provider(), request(n=2), usage)
    assert info.value.retryable
    assert (usage.tokens_in, usage.tokens_out) == (5, 3)


async def test_cached_prompt_tokens_are_read() -> None:
    counts = {
        "prompt_tokens": 2000,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 1536},
    }
    server = Server(lambda r: httpx2.Response(200, json=reply([("yes", "stop")], usage=counts)))
    usage = Usage()
    await complete(server, provider(), request(), usage)
    assert (usage.tokens_in, usage.tokens_cached, usage.tokens_out) == (2000, 1536, 4)
    assert usage.reported
    streamed = Server(
        lambda r: sse_response(sse(delta("yes", finish="stop"), {"choices": [], "usage": counts}))
    )
    usage = Usage()
    await complete(streamed, provider(), request(stream=True), usage)
    assert (usage.tokens_in, usage.tokens_cached, usage.reported) == (2000, 1536, True)


async def test_a_reply_without_usage_is_not_a_report() -> None:
    server = Server(lambda r: httpx2.Response(200, json=reply([("yes", "stop")])))
    usage = Usage()
    await complete(server, provider(), request(), usage)
    assert not usage.reported and usage.tokens_in is None


async def test_json_that_is_not_an_object() -> None:
    server = Server(lambda r: httpx2.Response(200, json=["a"]))
    with pytest.raises(ProviderError, match="not a JSON object"):
        await complete(server, provider(), request())


async def test_error_inside_a_200_reply() -> None:
    server = Server(
        lambda r: httpx2.Response(200, json={"error": {"message": "no provider", "code": 502}})
    )
    with pytest.raises(ProviderError, match="no provider") as info:
        await complete(server, provider(), request())
    assert info.value.retryable


async def test_html_error_page() -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    server = Server(
        lambda r: httpx2.Response(502, text=page, headers={"content-type": "text/html"})
    )
    with pytest.raises(ProviderError) as info:
        await complete(server, provider(), request(stream=True))
    assert str(info.value) == "HTTP 502 from api.example.com: HTML error page (502 Bad Gateway)"
    assert info.value.retryable


async def test_html_page_with_200() -> None:
    page = "<!doctype html><html><head><title>Log in</title></head></html>"
    server = Server(
        lambda r: httpx2.Response(200, text=page, headers={"content-type": "text/html"})
    )
    with pytest.raises(ProviderError, match=r"HTML error page \(Log in\)") as info:
        await complete(server, provider(), request(stream=True))
    assert not info.value.retryable


# --- models and repr ------------------------------------------------------------------------


async def test_list_models() -> None:
    server = Server(
        lambda r: httpx2.Response(
            200, json={"object": "list", "data": [{"id": "b-model"}, {"id": "a-model"}]}
        )
    )
    async with server.client() as client:
        models = await provider().list_models(client)
    assert models == ["a-model", "b-model"]
    assert str(server.requests[0].url) == f"{BASE}/models"
    assert server.requests[0].method == "GET"


async def test_list_models_errors() -> None:
    async with Server(error_response(401)).client() as client:
        with pytest.raises(ProviderError, match="HTTP 401"):
            await provider().list_models(client)
    async with Server(lambda r: httpx2.Response(200, json={"nothing": 1})).client() as client:
        with pytest.raises(ProviderError, match="not in the expected shape"):
            await provider().list_models(client)


def test_repr_hides_the_key() -> None:
    prov = provider()
    assert KEY not in repr(prov)
    assert KEY not in str(prov)
    assert "key=set" in repr(prov)
    assert prov.has_key
    assert "key=none" in repr(provider(api_key=None))
    assert KEY not in repr(vars(prov).keys())


def test_empty_key_counts_as_none() -> None:
    assert not provider(api_key="").has_key
