"""The loopback server the provider tests run on for the network path (see conftest.py)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2

from core.http import HttpClient, build_client

Handler = Callable[[httpx2.Request], Any]


class Loopback:
    """A real server answering with a MockTransport handler (one request per connection)."""

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.root = ""
        self.served = 0
        self.open = 0
        self.clients: list[HttpClient] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            await self.answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.open -= 1

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = [tuple(p.strip() for p in line.split(":", 1)) for line in head[1:] if line]
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        body = await reader.readexactly(length)
        request = httpx2.Request(method, self.root + target, headers=headers, content=body)
        assert self.handler is not None
        response = self.handler(request)
        if inspect.isawaitable(response):
            response = await response
        self.served += 1
        lines = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
        skip = ("content-length", "transfer-encoding", "connection")
        lines += [f"{k}: {v}" for k, v in response.headers.multi_items() if k.lower() not in skip]
        lines += ["transfer-encoding: chunked", "connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1"))

        async def chunks() -> AsyncIterator[bytes]:
            try:
                yield response.content  # a reply made with content= is read already
            except httpx2.ResponseNotRead:
                async for chunk in response.aiter_raw():
                    yield chunk

        async def pump() -> None:
            try:
                async for chunk in chunks():
                    if chunk:
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await writer.drain()
            except httpx2.HTTPError:  # the handler's stream broke: so does the connection
                writer.transport.abort()
                return
            writer.write(b"0\r\n\r\n")
            await writer.drain()

        sending = asyncio.ensure_future(pump())
        hung_up = asyncio.ensure_future(reader.read())  # b"" once the client closes
        await asyncio.wait({sending, hung_up}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sending, hung_up):
            task.cancel()
        await asyncio.gather(sending, hung_up, return_exceptions=True)
        await response.aclose()

    def client(self, handler: Handler) -> HttpClient:
        self.handler = handler
        client = build_client(None, max_connections=8)
        assert client.direct is not None, "the loopback tests are for the direct path"
        self.clients.append(client)
        return client


ACTIVE: list[Loopback] = []
"""The loopback server of the running test, if it runs on the network path."""


def client_for(handler: Handler) -> httpx2.AsyncClient:
    """The client a test's ``Server`` hands out: MockTransport, or the loopback server's."""
    if ACTIVE:
        return ACTIVE[-1].client(handler)
    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


async def settled() -> None:
    """Once the loopback server has seen every connection end (it notices a hang-up a moment
    after the client's side of it); at once on MockTransport."""
    for _ in range(1000):
        if not ACTIVE or ACTIVE[-1].open == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the loopback server still holds a connection")
