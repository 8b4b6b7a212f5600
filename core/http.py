"""The one place the HTTP client is built and its failures turned into ``ProviderError``.

Limits and timeouts are set on purpose here, because httpx's defaults are wrong for a fan-out:
a hidden cap of 100 connections with only 20 kept alive (so a fan-out of 64 keeps reconnecting)
and a 5 s pool timeout that fails calls queued behind slow ones. Tally's engine owns
concurrency with its own limiters, so the pool is sized above the engine's ceiling and a
request never waits for the pool, only for the engine.

A provider's request goes out through ``open_reply``. On the network it is sent straight over
aiohttp (``DirectSession``): httpx2's own pool costs more CPU per request the more connections
it holds (4-5 ms a call at 1,024 in flight), and even over aiohttp's pool httpx2's request and
response objects cost about as much as aiohttp itself (``benchmarks/fanout.py``). Everything
else goes through httpx2 (``HttpClient``): a ``httpx2.MockTransport`` in tests, the in-process
sim mounted on ``http://sim.invalid``, proxies from the environment, and the rare requests
(model listings), whose network transport is aiohttp's pool too (``AiohttpTransport``). Both
paths give the provider the same reply shape (``Reply``) and the same httpx2 errors, so
``translate`` reads them alike; provider tests run both (MockTransport, and a loopback server).
"""

from __future__ import annotations

import codecs
import datetime
import email.utils
import html
import json
import re
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import httpx2
import yarl

from core.errors import ProviderError

if TYPE_CHECKING:
    from core.config import Settings

CONNECT_TIMEOUT_S = 10.0
"""Opening a connection: long enough for TLS to a far region, short enough to fail fast."""
WRITE_TIMEOUT_S = 30.0
"""Sending a request body; prompts are small, so a stall here is a dead connection."""
POOL_TIMEOUT_S = 300.0
"""Waiting for a free connection. The pool is larger than the engine's ceiling, so this only
fires when something leaks connections; the engine's per-call deadline comes first."""
KEEPALIVE_EXPIRY_S = 15.0
"""Idle connections kept this long, so the gaps between the runs of a batch reuse them."""
DEFAULT_READ_TIMEOUT_S = 60.0
"""Longest silence inside a reply (between bytes), not the whole call: the engine's deadline
bounds the call."""

SIM_HOST = "http://sim.invalid"
"""Where the in-process sim is mounted (``core.config.SIM_IN_PROCESS_URL`` is under it)."""

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
"""Statuses another attempt may fix. Other 5xx are retried too (proxies invent 520-599),
except 501 and 505, which never change. Every other 4xx is the request's own fault."""

_MAX_DETAIL = 300


def connection_headroom(ceiling: int) -> int:
    """Connections beyond the engine's ceiling: a cancelled call's connection takes a moment to
    close while its slot is already reused, and model listings run beside the fan-out."""
    return max(4, ceiling // 4)


def client_limits(max_connections: int) -> httpx2.Limits:
    """Pool limits for an engine ceiling of ``max_connections`` concurrent calls."""
    total = max_connections + connection_headroom(max_connections)
    return httpx2.Limits(
        max_connections=total,
        max_keepalive_connections=total,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )


def request_timeout(read_s: float = DEFAULT_READ_TIMEOUT_S) -> httpx2.Timeout:
    """Per-request timeouts; providers pass their own ``timeout_s`` as the read timeout."""
    return httpx2.Timeout(
        connect=min(CONNECT_TIMEOUT_S, read_s),
        read=read_s,
        write=WRITE_TIMEOUT_S,
        pool=POOL_TIMEOUT_S,
    )


def build_client(
    settings: Settings | None = None,
    *,
    max_connections: int,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    sim_app: Any | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> HttpClient:
    """The shared client for every provider call.

    ``max_connections`` is the engine's global concurrency ceiling; the pool gets headroom on
    top (see ``client_limits``) and keeps all of it alive. ``sim_app`` (the sim's ASGI app) is
    mounted on ``http://sim.invalid`` so the simulated panel runs without a socket.
    ``transport`` replaces the network transport (tests pass ``httpx2.MockTransport``); without
    one, provider requests take the direct aiohttp path. ``settings.trust_env`` decides whether
    proxy and certificate variables apply (with a proxy in the environment every request goes
    through httpx2, whose proxy transport honours ``NO_PROXY``). HTTP/2 is off: one stream per
    connection keeps the server's view of a cancelled call simple (its connection closes)
    and matches what the compatible servers speak.
    """
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    trust_env = True if settings is None else settings.trust_env
    limits = client_limits(max_connections)
    mounts: dict[str, httpx2.AsyncBaseTransport | None] = {}
    if sim_app is not None:
        mounts[SIM_HOST] = httpx2.ASGITransport(app=sim_app)
    network = AiohttpTransport(limits, trust_env=trust_env)
    proxied = trust_env and bool(urllib.request.getproxies())
    direct = None if transport is not None or proxied else DirectSession(network)
    return HttpClient(
        direct,
        limits=limits,
        timeout=request_timeout(read_timeout_s),
        http1=True,
        http2=False,
        follow_redirects=False,
        trust_env=trust_env,
        transport=transport or network,
        mounts=mounts or None,
        headers={"user-agent": USER_AGENT},
    )


USER_AGENT = "tally"


class HttpClient(httpx2.AsyncClient):
    """httpx2's client, with the direct aiohttp path for provider requests when there is one
    (``direct``: none when a test's transport or a proxy stands in for the network)."""

    def __init__(self, direct: DirectSession | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct = direct

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            if self.direct is not None:
                await self.direct.aclose()

    async def __aexit__(
        self,
        kind: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        try:
            await super().__aexit__(kind, exc, tb)
        finally:
            if self.direct is not None:
                await self.direct.aclose()


class Reply(Protocol):
    """What a provider reads of a reply: ``httpx2.Response`` has it, and so does
    ``DirectReply``."""

    @property
    def status_code(self) -> int: ...
    @property
    def url(self) -> httpx2.URL | str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def reason_phrase(self) -> str: ...
    @property
    def content(self) -> bytes: ...
    async def aread(self) -> bytes: ...
    def aiter_lines(self) -> AsyncIterator[str]: ...


def open_reply(
    client: httpx2.AsyncClient,
    url: str,
    body: Any,
    headers: Mapping[str, str],
    timeout: httpx2.Timeout,
) -> _ReplyContext:
    """``async with open_reply(...) as reply``: POST ``body`` as JSON; leaving the block before
    the reply was read to its end (a cancelled call) closes the connection, so the server
    sees the disconnect and stops generating. Failures raise the httpx2 errors either way."""
    direct = client.direct if isinstance(client, HttpClient) else None
    if direct is not None and not url.startswith(SIM_HOST):
        return direct.post(url, body, headers, timeout)
    # the path of MockTransport tests, the sim mount and proxies
    return client.stream("POST", url, json=body, headers=headers, timeout=timeout)


class _ReplyContext(Protocol):
    async def __aenter__(self) -> Reply: ...
    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None: ...


class DirectSession:
    """Provider requests straight over aiohttp: URLs parsed once, timeouts built once, the
    body encoded once, and no httpx2 request or response on the way. Its own aiohttp session
    (decompressing, unlike the transport's, whose bodies httpx2 decodes) on the same limits."""

    def __init__(self, network: AiohttpTransport) -> None:
        self._network = network
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}

    def session(self) -> aiohttp.ClientSession:
        """Made on first use: aiohttp binds a session to the running event loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=self._network.connector(),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"user-agent": USER_AGENT},
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def url(self, url: str) -> yarl.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) > 1024:  # a caller building URLs per request: stay bounded
                self._urls.clear()
            parsed = self._urls[url] = yarl.URL(url)
        return parsed

    def post(
        self, url: str, body: Any, headers: Mapping[str, str], timeout: httpx2.Timeout
    ) -> DirectCall:
        return DirectCall(self, url, json.dumps(body).encode(), headers, timeout)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class DirectCall:
    """One request of ``DirectSession.post``, as an async context manager."""

    __slots__ = ("_body", "_headers", "_owner", "_reply", "_timeout", "_url")

    def __init__(
        self,
        owner: DirectSession,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: httpx2.Timeout,
    ) -> None:
        self._owner, self._url, self._body = owner, url, body
        self._headers, self._timeout = headers, timeout
        self._reply: DirectReply | None = None

    def request(self) -> httpx2.Request:
        """The httpx2 request an error carries, built only when there is an error."""
        return httpx2.Request("POST", self._url)

    async def __aenter__(self) -> DirectReply:
        owner = self._owner
        timeout = self._timeout
        with _httpx_errors(self.request):
            response = await owner.session().request(
                "POST",
                owner.url(self._url),
                data=self._body,
                headers={**self._headers, "content-type": "application/json"},
                allow_redirects=False,
                timeout=owner._network.timeout(timeout.connect, timeout.read, timeout.pool),
            )
        self._reply = DirectReply(response, self._url, self.request)
        return self._reply

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reply is not None:
            self._reply.finish()


_NEWLINE = re.compile(r"\r\n|\r|\n")


class DirectReply:
    """An aiohttp response read the way providers read an ``httpx2.Response``."""

    __slots__ = (
        "_content",
        "_request",
        "_response",
        "headers",
        "reason_phrase",
        "status_code",
        "url",
    )

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        url: str,
        request: Callable[[], httpx2.Request],
    ) -> None:
        self._response, self._request = response, request
        self.status_code: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self.reason_phrase: str = response.reason or ""
        self.url = url
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise httpx2.ResponseNotRead()
        return self._content

    async def aread(self) -> bytes:
        if self._content is None:
            with _httpx_errors(self._request):
                self._content = await self._response.read()
        return self._content

    async def aiter_lines(self) -> AsyncIterator[str]:
        """Lines as httpx2 splits them (``\\n``, ``\\r\\n`` or ``\\r``), decoded as UTF-8, with no
        limit on a line's length."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        with _httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                pending += decoder.decode(chunk)
                # a trailing "\r" may be the first half of "\r\n": keep it for the next chunk
                cut = len(pending) - 1 if pending.endswith("\r") else len(pending)
                *lines, rest = _NEWLINE.split(pending[:cut])
                pending = rest + pending[cut:]
                for line in lines:
                    yield line
        pending += decoder.decode(b"", final=True)
        if pending:
            *lines, rest = _NEWLINE.split(pending)
            for line in lines:
                yield line
            if rest:
                yield rest

    def finish(self) -> None:
        """Back to the pool when read to the end; otherwise the connection goes."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """httpx2 requests sent over one aiohttp session (its pool: ``limits.max_connections``).

    aiohttp's failures come back as the httpx2 errors they stand for, so ``translate`` reads
    them the same way. A response whose body was not read to the end when it is closed (a
    call cancelled mid-stream) closes its connection rather than returning it to the pool:
    the server sees the disconnect and stops generating. Bodies are passed on undecoded;
    httpx2 decodes them.
    """

    def __init__(self, limits: httpx2.Limits, *, trust_env: bool = True) -> None:
        self.limits = limits
        self.ssl_context: ssl.SSLContext = httpx2.create_ssl_context(trust_env=trust_env)
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def connector(self) -> aiohttp.TCPConnector:
        """A pool on these limits, made in the running event loop."""
        return aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=self.limits.keepalive_expiry or KEEPALIVE_EXPIRY_S,
            ssl=self.ssl_context,
        )

    def session(self) -> aiohttp.ClientSession:
        """Made on first use: aiohttp binds a session to the running event loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=self.connector(),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx2 keeps the cookies
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    def timeout(
        self, connect: float | None, read: float | None, pool: float | None
    ) -> aiohttp.ClientTimeout:
        """httpx2's timeouts as aiohttp's, built once per set of values."""
        key = (connect, read, pool)
        cached = self._timeouts.get(key)
        if cached is None:
            # aiohttp's ``connect`` is the wait for a pooled connection, a new one included
            cached = aiohttp.ClientTimeout(sock_connect=connect, sock_read=read, connect=pool)
            self._timeouts[key] = cached
        return cached

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        content = await request.aread()
        timeout = request.extensions.get("timeout", {})
        with _httpx_errors(lambda: request):
            response = await self.session().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=content or None,
                allow_redirects=False,
                compress=False,
                timeout=self.timeout(
                    timeout.get("connect"), timeout.get("read"), timeout.get("pool")
                ),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx2.Response(
            response.status,
            headers=response.raw_headers,
            stream=_AiohttpBody(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AiohttpBody(httpx2.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response, self._request = response, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(lambda: self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # back to the pool
        else:
            self._response.close()  # cut short: the connection goes


_AIOHTTP_ERRORS: tuple[tuple[type[BaseException], type[httpx2.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx2.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx2.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx2.ProxyError),
    (aiohttp.ClientConnectorError, httpx2.ConnectError),
    (aiohttp.ClientPayloadError, httpx2.RemoteProtocolError),
    (aiohttp.ServerDisconnectedError, httpx2.RemoteProtocolError),
    (aiohttp.InvalidUrlClientError, httpx2.UnsupportedProtocol),
    (aiohttp.ClientError, httpx2.ReadError),
    (OSError, httpx2.ReadError),
)
"""Most specific first: an aiohttp failure becomes the first httpx2 error it matches."""


@contextmanager
def _httpx_errors(request: Callable[[], httpx2.Request]) -> Iterator[None]:
    """aiohttp's failures as httpx2's, carrying ``request()`` (built only on failure)."""
    try:
        yield
    except (aiohttp.ClientError, OSError) as exc:
        for theirs, ours in _AIOHTTP_ERRORS:
            if isinstance(exc, theirs):
                raise ours(str(exc) or type(exc).__name__, request=request()) from exc
        raise  # pragma: no cover - OSError and ClientError are both in the table


# --- errors ---------------------------------------------------------------------------------

_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{16,}"),
    re.compile(r"(?i)\bbearer\s+[^\s\"',;]+"),
    re.compile(r"(?i)\b((?:x-)?api[_-]?key|authorization|token)(\"?\s*[:=]\s*\"?)[^\s\"',;&]+"),
    re.compile(r"(?i)([?&](?:key|api_key|apikey|token|access_token)=)[^&\s\"']+"),
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets and anything shaped like a key replaced, on one line.

    Error bodies quote keys back (OpenAI's 401 shows a masked key; a proxy may echo headers),
    and these messages end up on screens and in the store.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)}[redacted]", text)
        else:
            text = pattern.sub("[redacted]", text)
    text = " ".join(text.split())
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3].rstrip() + "..."
    return text


def host_of(url: httpx2.URL | str) -> str:
    """Host and port only: a URL's path or query may carry a key (``?key=``), a host never."""
    url = httpx2.URL(url) if isinstance(url, str) else url
    host = url.host or "?"
    return f"{host}:{url.port}" if url.port else host


def _request_host(exc: httpx2.HTTPError) -> str:
    try:
        return host_of(exc.request.url)
    except RuntimeError:  # an exception raised without a request attached
        return "the server"


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or (500 <= status < 600 and status not in (501, 505))


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI, Anthropic), else ``Retry-After`` as
    seconds or as an HTTP date. ``None`` when absent or unreadable; never negative."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0 and value == value:  # rejects NaN
            return value
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" zones parse naive; HTTP dates are always GMT
        when = when.replace(tzinfo=datetime.UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    """OpenAI and Anthropic say outright whether to retry with ``x-should-retry``."""
    value = headers.get("x-should-retry", "").strip().lower()
    return {"true": True, "false": False}.get(value)


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HEADING = re.compile(r"<h1[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


def looks_like_html(body: bytes | str, content_type: str = "") -> bool:
    if "html" in content_type.lower():
        return True
    head = body[:512].lstrip()
    head_text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    return head_text.lower().startswith(("<!doctype html", "<html", "<head", "<body"))


def summarise_html(body: bytes | str, fallback: str) -> str:
    """``HTML error page (Bad Gateway)``: the page's title, not the page."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    match = _TITLE.search(text) or _HEADING.search(text)
    title = html.unescape(_TAGS.sub("", match.group(1))).strip() if match else ""
    return f"HTML error page ({' '.join(title.split())[:80] or fallback})"


def _error_detail(body: bytes, content_type: str, reason: str) -> tuple[str, str | None]:
    """The error message a body carries, and its error type (``overloaded_error``) if any."""
    if not body.strip():
        return reason or "empty body", None
    if looks_like_html(body, content_type):
        return summarise_html(body, reason or "no title"), None
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace"), None
    return _json_error_detail(data, reason)


def _json_error_detail(data: Any, reason: str) -> tuple[str, str | None]:
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or error.get("msg")
        kind = error.get("type") or error.get("code")
        if message is None:
            message = json.dumps(error)[:_MAX_DETAIL]
        return str(message), str(kind) if kind is not None else None
    if isinstance(error, str):
        return error, None
    return reason or "error", None


def error_from_response(response: Reply, *, secrets: Iterable[str | None] = ()) -> ProviderError:
    """``HTTP 429 from api.openai.com: Rate limit reached`` with ``retryable`` and
    ``retry_after`` from the status and headers. Reads the body only if it was read already
    (a streamed response must be ``await response.aread()`` first to show its message)."""
    status = response.status_code
    try:
        body = response.content
    except httpx2.ResponseNotRead:
        body = b""
    content_type = response.headers.get("content-type", "")
    detail, kind = _error_detail(body, content_type, response.reason_phrase)
    host = _response_host(response)
    retryable = is_retryable_status(status)
    if kind in ("overloaded_error", "rate_limit_error", "api_error"):
        retryable = True
    explicit = _should_retry_header(response.headers)
    if explicit is not None:
        retryable = explicit
    return ProviderError(
        f"HTTP {status} from {host}: {redact(detail, secrets)}",
        status=status,
        retryable=retryable,
        retry_after=parse_retry_after(response.headers),
        timeout=status in (408, 504),
        billed=False,
    )


def _response_host(response: Reply) -> str:
    try:
        return host_of(response.url)
    except RuntimeError:  # an httpx2.Response made without a request
        return "the server"


def error_from_exception(
    exc: BaseException, *, secrets: Iterable[str | None] = ()
) -> ProviderError:
    """Transport failures: timeouts and broken connections retry, a wrong URL does not.

    A request that never reached the provider whole (no connection, no free connection, a body
    not sent) is known not to be billed; one cut after it was sent may have been."""
    if isinstance(exc, ProviderError):
        return exc
    detail = redact(str(exc), secrets) or type(exc).__name__
    if isinstance(exc, httpx2.InvalidURL):
        return ProviderError(f"invalid URL: {detail}", billed=False)
    if not isinstance(exc, httpx2.HTTPError):
        return ProviderError(f"{type(exc).__name__}: {detail}")
    host = _request_host(exc)
    if isinstance(exc, httpx2.TimeoutException):
        what = {
            httpx2.ConnectTimeout: f"timed out connecting to {host}",
            httpx2.ReadTimeout: f"timed out waiting for {host} to reply",
            httpx2.WriteTimeout: f"timed out sending the request to {host}",
            httpx2.PoolTimeout: f"timed out waiting for a free connection to {host}",
        }.get(type(exc), f"timed out talking to {host}")
        unsent = isinstance(exc, httpx2.ConnectTimeout | httpx2.WriteTimeout | httpx2.PoolTimeout)
        return ProviderError(what, retryable=True, timeout=True, billed=False if unsent else None)
    if isinstance(exc, httpx2.ConnectError):
        return ProviderError(f"cannot connect to {host}: {detail}", retryable=True, billed=False)
    if isinstance(exc, httpx2.NetworkError | httpx2.RemoteProtocolError):
        return ProviderError(f"connection to {host} broke: {detail}", retryable=True)
    if isinstance(exc, httpx2.DecodingError):
        return ProviderError(f"reply from {host} could not be decoded: {detail}", retryable=True)
    if isinstance(exc, httpx2.TooManyRedirects):
        return ProviderError(f"too many redirects from {host}")
    return ProviderError(f"request to {host} failed: {detail}")


def translate(
    exc_or_response: BaseException | httpx2.Response, *, secrets: Iterable[str | None] = ()
) -> ProviderError:
    """One ``ProviderError`` for an httpx exception or an HTTP error response."""
    if isinstance(exc_or_response, httpx2.Response):
        return error_from_response(exc_or_response, secrets=secrets)
    return error_from_exception(exc_or_response, secrets=secrets)


def error_in_body(data: Any, host: str, *, secrets: Iterable[str | None] = ()) -> ProviderError:
    """An error object inside a 200 reply or a stream (OpenRouter, Anthropic ``error`` events)."""
    detail, kind = _json_error_detail(data, "error")
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) else None
    retryable = kind in ("overloaded_error", "rate_limit_error", "api_error", "timeout_error") or (
        status is not None and is_retryable_status(status)
    )
    return ProviderError(
        f"error from {host}: {redact(detail, secrets)}", status=status, retryable=retryable
    )


def parse_json_body(response: Reply, *, secrets: Iterable[str | None] = ()) -> Any:
    """The JSON of a read 2xx reply; an HTML page or broken JSON is a ``ProviderError``.

    Broken JSON is retryable (a reply cut or garbled on the way); an HTML page is not (a wrong
    ``base_url`` or a login portal answers the same way every time)."""
    body = response.content
    if body[:1] == b"{":  # the common case, without a look for HTML
        try:
            return json.loads(body)
        except ValueError:
            pass
    host = _response_host(response)
    if looks_like_html(body, response.headers.get("content-type", "")):
        summary = summarise_html(body, response.reason_phrase or "no title")
        raise ProviderError(
            f"HTTP {response.status_code} from {host}: {summary} instead of JSON",
            status=response.status_code,
            billed=False,
        )
    try:
        return json.loads(body)
    except ValueError:
        snippet = redact(body[:80].decode("utf-8", "replace"), secrets)
        raise ProviderError(
            f"malformed JSON from {host}: {snippet!r}",
            status=response.status_code,
            retryable=True,
        ) from None


async def aiter_sse(response: Reply) -> AsyncIterator[tuple[str, str]]:
    """Server-sent events as ``(event, data)``; multi-line data is joined with newlines.

    Written against the SSE rules rather than httpx's ``EventSource`` so that a server which
    streams with a wrong content type (several compatible servers do) is still read.
    """
    event = ""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data or event:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data or event:
        yield event or "message", "\n".join(data)


# --- rate limits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitInfo:
    """What a reply's rate-limit headers said: per minute limits, what is left of them, and
    seconds until each is whole again (None where the header was absent or unreadable)."""

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset_s: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_reset_s: float | None = None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations (``20ms``, ``1.5s``, ``6m0s``, ``1h2m3s``) in seconds."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        try:
            seconds = float(text)  # some compatible servers send plain seconds
        except ValueError:
            return None
        return seconds if seconds >= 0 else None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(headers[name])
    except (KeyError, ValueError):
        return None
    return value if value >= 0 and value == value else None


def _reset_at(headers: Mapping[str, str], name: str, now: float) -> float | None:
    """Anthropic's reset: an RFC 3339 time, as seconds from ``now``."""
    raw = headers.get(name)
    if not raw:
        return None
    try:
        when = datetime.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


_LIMIT_NAMES = ("-requests", "-tokens", "-limit", "-remaining", "-reset")


def read_rate_limits(headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo | None:
    """OpenAI's ``x-ratelimit-*`` or Anthropic's ``anthropic-ratelimit-*`` headers; None when
    the reply carried neither."""
    # one pass over the headers (httpx2 looks each name up by a scan): this runs per reply
    headers = {k: v for k, v in headers.items() if k.endswith(_LIMIT_NAMES)} if headers else {}
    if not headers:
        return None
    current = time.time() if now is None else now
    values: dict[str, float | None] = {}
    for kind in ("requests", "tokens"):
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        values[f"{kind}_limit"] = _number(headers, f"x-ratelimit-limit-{kind}")
        values[f"{kind}_remaining"] = _number(headers, f"x-ratelimit-remaining-{kind}")
        values[f"{kind}_reset_s"] = parse_duration(reset) if reset else None
        prefix = f"anthropic-ratelimit-{kind}"
        if values[f"{kind}_limit"] is None and f"{prefix}-limit" in headers:
            values[f"{kind}_limit"] = _number(headers, f"{prefix}-limit")
            values[f"{kind}_remaining"] = _number(headers, f"{prefix}-remaining")
            values[f"{kind}_reset_s"] = _reset_at(headers, f"{prefix}-reset", current)
    if all(v is None for v in values.values()):
        return None
    return RateLimitInfo(**values)
