"""The dashboard's ASGI fix-up: every HTML page tells Streamlit's browser code that the server is
at the root, so a first visit to ``/run`` asks no ``/run/_stcore/*`` address (no 404s)."""

from __future__ import annotations

import gzip
from typing import Any

import anyio
import pytest

from core.webapp import PIN, PinBaseUrl

INDEX = b"<!doctype html><html><head><title>x</title></head><body></body></html>"


def fake_app(body: bytes, content_type: bytes, encoding: bytes | None = None, parts: int = 1):
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        if encoding is not None:
            headers.append((b"content-encoding", encoding))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        size = max(1, len(body) // parts)
        chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
        for i, chunk in enumerate(chunks):
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1}
            )

    return app


def serve(app: Any, method: str = "GET", path: str = "/run") -> tuple[dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    anyio.run(PinBaseUrl(app), scope, receive, send)
    headers = dict(sent[0]["headers"])
    return headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("parts", [1, 3])
def test_an_html_page_gets_the_pin_first_in_its_head(parts: int) -> None:
    headers, body = serve(fake_app(INDEX, b"text/html; charset=utf-8", parts=parts))
    assert body.startswith(b"<!doctype html><html><head>" + PIN + b"<title>")
    assert int(headers[b"content-length"]) == len(body)
    assert b"BACKEND_BASE_URL:window.location.origin" in PIN


def test_a_gzipped_page_is_pinned_and_stays_gzipped() -> None:
    headers, body = serve(fake_app(gzip.compress(INDEX), b"text/html", encoding=b"gzip"))
    assert PIN in gzip.decompress(body)
    assert int(headers[b"content-length"]) == len(body)


def test_everything_else_passes_untouched() -> None:
    script = b"console.log('<head>')"
    assert serve(fake_app(script, b"application/javascript"))[1] == script
    headers, body = serve(fake_app(INDEX, b"text/html"), method="HEAD")
    assert body == INDEX and headers[b"content-length"] == str(len(INDEX)).encode()
    brotli = b"\x1b\x00not really brotli"
    assert serve(fake_app(brotli, b"text/html", encoding=b"br"))[1] == brotli
