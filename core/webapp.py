"""The dashboard as an ASGI app: Streamlit's own, with one fix for pages opened by their address.

Streamlit's browser code does not know, on a first visit to ``/run``, whether ``run`` is a page
or the path the server is mounted under, so it asks ``/run/_stcore/health`` and
``/run/_stcore/host-config`` first and gets two 404s before it tries ``/`` (streamlit#7074).
Tally is always served at the root, so the page tells the browser code so before it starts:
``window.__streamlit.BACKEND_BASE_URL``, the setting Streamlit reads for exactly this, is set
to the page's origin in every HTML page served. No 404s, and nothing else changes.
"""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PIN = (
    b"<script>window.__streamlit=Object.assign({},window.__streamlit,"
    b'{BACKEND_BASE_URL:window.location.origin+"/"});</script>'
)


def pinned(html: bytes) -> bytes:
    """``html`` with the base-URL pin as the first thing in its head."""
    at = html.find(b"<head>")
    if at < 0:
        return html
    at += len(b"<head>")
    return html[:at] + PIN + html[at:]


def pinned_body(body: bytes, encoding: bytes) -> bytes | None:
    """The pinned body in its own encoding (plain or gzip, what Streamlit sends), or None for
    an encoding this does not read (the body then goes out as it was)."""
    if encoding in (b"", b"identity"):
        return pinned(body)
    if encoding == b"gzip":
        return gzip.compress(pinned(gzip.decompress(body)), mtime=0)
    return None


class PinBaseUrl:
    """ASGI middleware: every ``text/html`` answer to a GET gets the pin (the index page,
    whichever page address it is served under); every other response passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                kind = dict(message.get("headers", [])).get(b"content-type", b"")
                if not kind.startswith(b"text/html"):
                    await send(message)
                    return
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            raw = b"".join(body)
            encoding = dict(start.get("headers", [])).get(b"content-encoding", b"")
            html = pinned_body(raw, encoding)
            if html is None:
                html = raw
            headers = [
                (k, str(len(html)).encode() if k == b"content-length" else v)
                for k, v in start.get("headers", [])
            ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": html, "more_body": False})

        await self.app(scope, receive, capture)
