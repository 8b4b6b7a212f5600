"""What both wire protocols keep about an endpoint, and the one way they talk to it.

The key is held here only, never shown by ``repr`` and redacted from every error. A request
runs inside ``async with client.stream(...)`` whether or not it streams, so a call the engine
cancels (early stop, fastest-acceptable) closes its connection at once and the server stops
generating. Error replies and transport failures become ``ProviderError`` through
``core.http``, the same for every protocol. What every request of an endpoint shares (its
headers, its timeout, its host) is built once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx2

from core.http import (
    DEFAULT_READ_TIMEOUT_S,
    RateLimitInfo,
    Reply,
    error_from_exception,
    error_from_response,
    host_of,
    open_reply,
    parse_json_body,
    read_rate_limits,
    request_timeout,
)

T = TypeVar("T")


class Endpoint:
    """A base URL, its key and its limits; subclasses speak the protocol."""

    kind: str = ""
    supports_n: bool = False

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        *,
        max_concurrency: int = 8,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.stream = stream
        self.headers = dict(headers or {})
        self.timeout_s = timeout_s
        self._api_key = api_key or None
        self._timeout = request_timeout(timeout_s)  # built once: it is on every call's path
        self._host = host_of(self.base_url)
        self._accept_headers: dict[str, dict[str, str]] = {}
        self.rate_limits: RateLimitInfo | None = None  # the last reply's rate-limit headers

    @property
    def has_key(self) -> bool:
        return self._api_key is not None

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, key={key})"

    def _auth_headers(self) -> dict[str, str]:
        """The protocol's own headers: its version, and the key the way it expects it."""
        raise NotImplementedError

    def _headers(self, accept: str) -> dict[str, str]:
        """The request headers for ``accept``, built once (the key does not change)."""
        headers = self._accept_headers.get(accept)
        if headers is None:
            headers = {**self.headers, "accept": accept, **self._auth_headers()}
            self._accept_headers[accept] = headers
        return headers

    async def post(
        self,
        client: httpx2.AsyncClient,
        path: str,
        body: dict[str, Any],
        *,
        streaming: bool,
        read_stream: Callable[[Reply], Awaitable[T]],
        read_reply: Callable[[Any, str], T],
    ) -> T:
        """POST ``body`` to ``path``; a stream is read by ``read_stream``, a JSON reply (also
        from a server that ignored ``stream``) by ``read_reply`` with the host for messages."""
        secrets = (self._api_key,)
        try:
            async with open_reply(
                client,
                f"{self.base_url}/{path}",
                body,
                self._headers("text/event-stream" if streaming else "application/json"),
                self._timeout,
            ) as response:
                self.rate_limits = read_rate_limits(response.headers) or self.rate_limits
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response, secrets=secrets)
                content_type = response.headers.get("content-type", "").lower()
                if streaming and "json" not in content_type and "html" not in content_type:
                    return await read_stream(response)
                await response.aread()
                data = parse_json_body(response, secrets=secrets)
                return read_reply(data, self._host)
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise error_from_exception(exc, secrets=secrets) from exc

    async def get_json(
        self,
        client: httpx2.AsyncClient,
        path: str,
        params: Mapping[str, str | int] | None = None,
    ) -> tuple[Any, str]:
        """GET ``path``: the JSON body and the host it came from."""
        secrets = (self._api_key,)
        try:
            response = await client.get(
                f"{self.base_url}/{path}",
                params=params,
                headers=self._headers("application/json"),
                timeout=self._timeout,
            )
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise error_from_exception(exc, secrets=secrets) from exc
        if response.status_code >= 400:
            raise error_from_response(response, secrets=secrets)
        return parse_json_body(response, secrets=secrets), host_of(response.url)
