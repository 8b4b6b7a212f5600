"""Every provider test on both paths of ``core.http``: ``httpx2.MockTransport`` (the httpx2
path) and, over a real socket, the network path (direct aiohttp requests).

``Loopback`` is an HTTP/1.1 server on 127.0.0.1 that answers with the same handler a test
gives its MockTransport: the handler gets an ``httpx2.Request`` and its ``httpx2.Response`` is
written back on the socket, chunk by chunk as its stream yields them. A stream that raises
drops the connection mid-reply; a client that hangs up closes the stream (as a server stops
generating). Tests whose handler raises a transport error itself (a connect error, a read
timeout) only make sense on MockTransport: they are marked ``mock_only`` and run once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.core.providers.wire import ACTIVE, Loopback


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mock_only: the handler fakes a transport failure")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each async test of a module with a ``BASE`` URL runs once per path."""
    if not inspect.iscoroutinefunction(metafunc.function) or not hasattr(metafunc.module, "BASE"):
        return
    metafunc.fixturenames.append("wire")
    mock_only = metafunc.definition.get_closest_marker("mock_only") is not None
    metafunc.parametrize("wire", ["mock"] if mock_only else ["mock", "loopback"], indirect=True)


@pytest.fixture
async def wire(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """``mock`` or ``loopback``; on loopback the test module's ``BASE`` points at the server."""
    if request.param == "mock":
        yield "mock"
        return
    loopback = Loopback()
    server = await asyncio.start_server(loopback.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loopback.root = f"http://127.0.0.1:{port}"
    module = request.module
    path = httpx2.URL(module.BASE).path
    monkeypatch.setattr(module, "BASE", loopback.root + path.rstrip("/"))
    ACTIVE.append(loopback)
    try:
        yield "loopback"
    finally:
        ACTIVE.remove(loopback)
        server.close()
        await server.wait_closed()
    assert loopback.served or not loopback.clients, "a loopback test sent nothing"
