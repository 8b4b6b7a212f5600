"""The shared client's limits and timeouts, the in-process sim mount, error translation
(retryable or not, Retry-After, HTML bodies, no keys in messages) and the SSE reader."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx2
import pytest

from core.config import Settings
from core.errors import ProviderError
from core.http import (
    CONNECT_TIMEOUT_S,
    POOL_TIMEOUT_S,
    AiohttpTransport,
    aiter_sse,
    build_client,
    client_limits,
    error_from_exception,
    error_from_response,
    error_in_body,
    parse_json_body,
    parse_retry_after,
    redact,
    translate,
)

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/v1/chat/completions"
KEY = "sk-test-0123456789abcdefghij"


def response(
    status: int,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
    url: str = URL,
) -> httpx2.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx2.Response(
        status, content=content, headers=headers or {}, request=httpx2.Request("POST", url)
    )


# --- the client -----------------------------------------------------------------------------


def pool_of(client: httpx2.AsyncClient) -> Any:
    transport: Any = client._transport
    assert isinstance(transport, AiohttpTransport)
    return transport.session().connector


async def test_limits_sized_above_the_ceiling() -> None:
    async with build_client(None, max_connections=64) as client:
        pool = pool_of(client)
        assert pool.limit == 64 + 16
        assert pool.limit_per_host == 0  # one provider may take the whole pool
        timeout = client.timeout
        assert timeout.pool == POOL_TIMEOUT_S
        assert timeout.connect == CONNECT_TIMEOUT_S
        assert timeout.read == 60.0


async def test_small_ceiling_still_gets_headroom() -> None:
    limits = client_limits(8)
    assert limits.max_connections == 12
    assert limits.max_keepalive_connections == 12
    async with build_client(None, max_connections=8, read_timeout_s=5) as client:
        assert client.timeout.read == 5
        assert client.timeout.connect == 5  # never longer than the read timeout


async def test_never_the_hidden_default_cap() -> None:
    async with build_client(None, max_connections=256) as client:
        assert pool_of(client).limit > 256


def test_bad_ceiling() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        build_client(None, max_connections=0)


async def test_trust_env_from_settings() -> None:
    async with build_client(Settings(trust_env=False), max_connections=4) as client:
        assert client.trust_env is False
    async with build_client(None, max_connections=4) as client:
        assert client.trust_env is True


async def test_sim_app_is_mounted_and_the_rest_uses_the_transport() -> None:
    seen: list[str] = []

    async def sim_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        seen.append(scope["path"])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"from": "sim"}'})

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"from": "mock", "host": request.url.host})

    transport = httpx2.MockTransport(handler)
    async with build_client(
        None, max_connections=4, sim_app=sim_app, transport=transport
    ) as client:
        sim = await client.get("http://sim.invalid/v1/models")
        other = await client.get("https://api.example.com/v1/models")
    assert sim.json() == {"from": "sim"}
    assert seen == ["/v1/models"]
    assert other.json() == {"from": "mock", "host": "api.example.com"}


# --- Retry-After ----------------------------------------------------------------------------


def test_retry_after_seconds() -> None:
    assert parse_retry_after(httpx2.Headers({"retry-after": "7"})) == 7.0
    assert parse_retry_after(httpx2.Headers({"retry-after": "1.5"})) == 1.5


def test_retry_after_http_date() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    wait = parse_retry_after(httpx2.Headers({"retry-after": date}), now=now)
    assert wait is not None
    assert 29 <= wait <= 31


def test_retry_after_date_in_the_past_is_zero() -> None:
    date = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert parse_retry_after(httpx2.Headers({"retry-after": date})) == 0.0


def test_retry_after_ms_wins() -> None:
    headers = httpx2.Headers({"retry-after-ms": "250", "retry-after": "9"})
    assert parse_retry_after(headers) == 0.25


@pytest.mark.parametrize("value", ["soon", "-3", "nan", ""])
def test_retry_after_unreadable(value: str) -> None:
    assert parse_retry_after(httpx2.Headers({"retry-after": value})) is None


def test_retry_after_absent() -> None:
    assert parse_retry_after(httpx2.Headers()) is None


# --- error responses ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 529, 520])
def test_retryable_statuses(status: int) -> None:
    error = error_from_response(response(status, '{"error": {"message": "busy"}}'))
    assert error.retryable
    assert error.status == status
    assert str(error) == f"HTTP {status} from api.example.com: busy"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 501])
def test_client_errors_do_not_retry(status: int) -> None:
    error = error_from_response(response(status, '{"error": {"message": "no"}}'))
    assert not error.retryable
    assert error.status == status


def test_429_carries_retry_after() -> None:
    error = error_from_response(
        response(429, '{"error": {"message": "slow down"}}', {"retry-after": "12"})
    )
    assert error.retryable
    assert error.retry_after == 12.0


def test_should_retry_header_overrides_the_status() -> None:
    assert not error_from_response(response(503, headers={"x-should-retry": "false"})).retryable
    assert error_from_response(response(400, headers={"x-should-retry": "true"})).retryable


def test_anthropic_overloaded_body() -> None:
    body = '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    error = error_from_response(response(529, body))
    assert error.retryable
    assert str(error) == "HTTP 529 from api.example.com: Overloaded"


def test_html_error_page_is_summarised() -> None:
    page = (
        "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
        "<body><h1>Bad Gateway</h1>" + "<p>x</p>" * 500 + "</body></html>"
    )
    error = error_from_response(response(502, page, {"content-type": "text/html"}))
    assert str(error) == "HTTP 502 from api.example.com: HTML error page (502 Bad Gateway)"
    assert error.retryable


def test_html_without_title_uses_the_reason() -> None:
    error = error_from_response(response(503, "<html><body>down</body></html>"))
    assert str(error) == "HTTP 503 from api.example.com: HTML error page (Service Unavailable)"


def test_empty_body_uses_the_reason() -> None:
    assert str(error_from_response(response(404))) == "HTTP 404 from api.example.com: Not Found"


def test_plain_text_body_is_one_short_line() -> None:
    error = error_from_response(response(500, "line one\nline two\n" + "x" * 1000))
    message = str(error)
    assert "\n" not in message
    assert message.startswith("HTTP 500 from api.example.com: line one line two")
    assert len(message) < 400


def test_ollama_error_shape() -> None:
    error = error_from_response(response(404, '{"error": "model \\"x\\" not found"}'))
    assert str(error) == 'HTTP 404 from api.example.com: model "x" not found'


def test_host_only_never_the_query() -> None:
    error = error_from_response(response(400, url="https://gen.example.com/v1?key=AIzaSecretKey"))
    assert "AIzaSecretKey" not in str(error)
    assert "gen.example.com" in str(error)


def test_port_is_shown() -> None:
    error = error_from_response(response(500, url="http://127.0.0.1:8001/v1/chat/completions"))
    assert str(error).startswith("HTTP 500 from 127.0.0.1:8001:")


def test_key_quoted_in_a_body_is_redacted() -> None:
    body = (
        '{"error": {"message": "Incorrect API key provided: '
        + KEY
        + ". Authorization: Bearer "
        + KEY
        + '"}}'
    )
    error = error_from_response(response(401, body), secrets=[KEY])
    assert KEY not in str(error)
    assert "sk-test" not in str(error)
    assert "[redacted]" in str(error)
    assert not error.retryable


def test_masked_key_is_redacted_too() -> None:
    body = '{"error": {"message": "Incorrect API key provided: sk-proj-********abcd."}}'
    assert "sk-proj" not in str(error_from_response(response(401, body)))


def test_unread_streamed_response_still_translates() -> None:
    stream_response = httpx2.Response(
        503,
        stream=httpx2.ByteStream(b"busy"),
        request=httpx2.Request("POST", URL),
    )
    error = error_from_response(stream_response)
    assert error.retryable
    assert str(error) == "HTTP 503 from api.example.com: Service Unavailable"


# --- transport exceptions -------------------------------------------------------------------

REQUEST = httpx2.Request("POST", URL)


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (httpx2.ConnectTimeout("t", request=REQUEST), "timed out connecting to api.example.com"),
        (httpx2.ReadTimeout("t", request=REQUEST), "timed out waiting for api.example.com"),
        (httpx2.WriteTimeout("t", request=REQUEST), "timed out sending the request"),
        (httpx2.PoolTimeout("t", request=REQUEST), "timed out waiting for a free connection"),
    ],
)
def test_timeouts(exc: Exception, text: str) -> None:
    error = error_from_exception(exc)
    assert error.timeout
    assert error.retryable
    assert str(error).startswith(text)


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (httpx2.ConnectError("refused", request=REQUEST), "cannot connect to api.example.com"),
        (httpx2.ReadError("reset", request=REQUEST), "connection to api.example.com broke"),
        (
            httpx2.RemoteProtocolError("peer closed", request=REQUEST),
            "connection to api.example.com broke",
        ),
    ],
)
def test_broken_connections_retry(exc: Exception, text: str) -> None:
    error = error_from_exception(exc)
    assert error.retryable
    assert not error.timeout
    assert str(error).startswith(text)


@pytest.mark.parametrize(
    "exc",
    [
        httpx2.UnsupportedProtocol("ftp", request=REQUEST),
        httpx2.LocalProtocolError("bad header", request=REQUEST),
        httpx2.TooManyRedirects("loop", request=REQUEST),
        httpx2.InvalidURL("no host"),
    ],
)
def test_request_mistakes_do_not_retry(exc: Exception) -> None:
    assert not error_from_exception(exc).retryable


def test_exception_without_a_request() -> None:
    error = error_from_exception(httpx2.ConnectError("refused"))
    assert str(error).startswith("cannot connect to the server")


def test_exception_message_is_redacted() -> None:
    error = error_from_exception(
        httpx2.ConnectError(f"proxy said Authorization: Bearer {KEY}", request=REQUEST),
        secrets=[KEY],
    )
    assert KEY not in str(error)


def test_translate_dispatches() -> None:
    assert translate(response(429)).status == 429
    assert translate(httpx2.ReadTimeout("t", request=REQUEST)).timeout
    original = ProviderError("kept")
    assert translate(original) is original


def test_error_in_a_200_body() -> None:
    error = error_in_body({"error": {"message": "upstream down", "code": 502}}, "openrouter.ai")
    assert error.retryable
    assert error.status == 502
    assert str(error) == "error from openrouter.ai: upstream down"
    stream_error = error_in_body(
        {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}, "h"
    )
    assert not stream_error.retryable


# --- JSON bodies ----------------------------------------------------------------------------


def test_parse_json_body() -> None:
    assert parse_json_body(response(200, '{"a": 1}')) == {"a": 1}


def test_malformed_json_is_retryable() -> None:
    with pytest.raises(ProviderError, match=r"malformed JSON from api\.example\.com") as info:
        parse_json_body(response(200, '{"choices": [{"mess'))
    assert info.value.retryable


def test_html_instead_of_json_is_not_retryable() -> None:
    page = "<html><head><title>Sign in</title></head></html>"
    with pytest.raises(ProviderError, match=r"HTML error page \(Sign in\) instead of JSON") as e:
        parse_json_body(response(200, page, {"content-type": "text/html; charset=utf-8"}))
    assert not e.value.retryable


# --- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"key {KEY} leaked",
        "Authorization: Bearer abc.def.ghi",
        "x-api-key: sk-ant-api03-abcdef",
        "https://host/v1?key=AIzaSyA1234567890abcdefghij",
        '"api_key": "hunter2hunter2"',
    ],
)
def test_redact(text: str) -> None:
    cleaned = redact(text, [KEY])
    for secret in (KEY, "abc.def.ghi", "sk-ant", "AIzaSy", "hunter2"):
        assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_redact_leaves_ordinary_text() -> None:
    text = "max_tokens: 16 is too small for this task-level request"
    assert redact(text) == text


# --- SSE ------------------------------------------------------------------------------------


async def collect(body: bytes, chunk: int = 7) -> list[tuple[str, str]]:
    async def stream() -> Any:
        for i in range(0, len(body), chunk):
            yield body[i : i + chunk]

    resp = httpx2.Response(200, content=stream(), request=REQUEST)
    return [event async for event in aiter_sse(resp)]


async def test_sse_events_across_chunk_boundaries() -> None:
    body = (
        b": keep-alive\n\n"
        b'data: {"a": 1}\n\n'
        b'event: message_start\r\ndata: {"b": 2}\r\n\r\n'
        b"data: line one\ndata: line two\n\n"
        b"data: [DONE]\n\n"
    )
    events = await collect(body)
    assert events == [
        ("message", '{"a": 1}'),
        ("message_start", '{"b": 2}'),
        ("message", "line one\nline two"),
        ("message", "[DONE]"),
    ]


async def test_sse_last_event_without_blank_line() -> None:
    assert await collect(b'data: {"a": 1}\n\ndata: tail') == [
        ("message", '{"a": 1}'),
        ("message", "tail"),
    ]


@pytest.mark.parametrize(
    ("failure", "billed"),
    [
        (response(429, '{"error": {"message": "slow down"}}'), False),  # an error reply
        (response(500), False),
        (httpx2.ConnectError("refused", request=REQUEST), False),  # never reached it
        (httpx2.ConnectTimeout("t", request=REQUEST), False),
        (httpx2.PoolTimeout("t", request=REQUEST), False),
        (httpx2.ReadTimeout("t", request=REQUEST), None),  # sent: it may have been billed
        (httpx2.ReadError("reset", request=REQUEST), None),
        (httpx2.RemoteProtocolError("peer closed", request=REQUEST), None),
    ],
)
def test_whether_a_failed_attempt_can_have_been_billed(
    failure: httpx2.Response | Exception, billed: bool | None
) -> None:
    assert translate(failure).billed is billed
