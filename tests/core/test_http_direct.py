"""The direct aiohttp path of ``core.http`` where MockTransport cannot reach: when it is taken,
real transport failures on a socket, compressed bodies, and SSE lines split anywhere."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest

from core.config import Settings
from core.errors import ProviderError
from core.http import DirectReply, build_client
from core.providers.base import CompletionRequest, Usage
from core.providers.openai import OpenAIProvider

pytestmark = pytest.mark.anyio

REQUEST = CompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
REPLY = {
    "choices": [{"index": 0, "message": {"content": "regression"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()
        await server.wait_closed()


async def complete(base: str, **kwargs: Any) -> list[Any]:
    provider = OpenAIProvider("t", base, **kwargs)
    async with build_client(None, max_connections=4) as client:
        assert client.direct is not None
        return await provider.complete(client, REQUEST, Usage())


def test_the_direct_path_is_taken_only_on_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert build_client(None, max_connections=2).direct is not None
    mock = httpx2.MockTransport(lambda r: httpx2.Response(200))
    assert build_client(None, max_connections=2, transport=mock).direct is None
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert build_client(None, max_connections=2).direct is None  # httpx2's proxy transport
    assert build_client(Settings(trust_env=False), max_connections=2).direct is not None


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderError, match=r"cannot connect to 127\.0\.0\.1") as info:
        await complete(f"http://127.0.0.1:{port}/v1")
    assert info.value.retryable
    assert info.value.billed is False


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with serving(silent) as base:
        with pytest.raises(ProviderError, match=r"timed out waiting for 127\.0\.0\.1") as info:
            await complete(base, timeout_s=0.3)
    assert info.value.timeout
    assert info.value.retryable


async def test_a_compressed_reply_is_decoded() -> None:
    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = gzip.compress(json.dumps(REPLY).encode())
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()

    async with serving(gzipped) as base:
        [completion] = await complete(base)
    assert completion.text == "regression"


async def test_a_reply_cut_short_is_a_broken_connection() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{"choices": [')
        await writer.drain()

    async with serving(cut) as base:
        with pytest.raises(ProviderError, match="broke") as info:
            await complete(base)
    assert info.value.retryable


class _Chunks:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


class _Response:
    status, reason, headers = 200, "OK", {"content-type": "text/event-stream"}

    def __init__(self, chunks: list[bytes]) -> None:
        self.content = _Chunks(chunks)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
async def test_sse_lines_split_anywhere_read_as_httpx2_reads_them(newline: bytes) -> None:
    text = 'data: {"a": "é"}' + newline.decode() + newline.decode() + "data: [DONE]"
    raw = text.encode()
    expected = [line async for line in httpx2.Response(200, content=raw).aiter_lines()]
    for size in (1, 2, 3, 7, len(raw)):
        chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
        reply = DirectReply(_Response(chunks), "http://x/v1", lambda: httpx2.Request("GET", "/"))  # type: ignore[arg-type]
        assert [line async for line in reply.aiter_lines()] == expected, size
