"""The sim server: the simulated panel behind an OpenAI-compatible HTTP endpoint.

Demos, tests and benchmarks reach the simulated models over exactly the HTTP path real
providers use: ``GET /v1/models``, ``POST /v1/chat/completions`` (plain and SSE streaming with
``stream_options.include_usage``, ``n`` choices billed one prompt, ``response_format``
json_schema, ``max_tokens``), ``GET /health``, and ``GET /v1/stats`` (``DELETE`` resets it) so a
test can see what the server saw: requests, how many were in flight and in service at most, and
how many clients hung up before their answer.

Answers come from ``core.sim.answers.simulate``. Separate requests for the same model and input
are successive samples (a counter per model and input), so five calls of one model are five
draws; a request that names a ``seed`` gets that sample number instead, repeatable on its own.

Latency is slept (``anyio.sleep``) for the simulated time times ``time_scale``; a stream sends
its first chunk after the time to first token and spreads the rest over the remaining time.
Every request watches its connection: a client that hangs up is counted and its work stops.

Capacity modes, to show the throughput wall:

- unlimited (default): every request is served at once; throughput grows with concurrency.
- ``capacity=K``: at most K requests in service, the rest queue (K=1 is the handbook's "tool
  that serialises": parallel calls only wait in line).
- ``contention=K``: every request is in service, but once more than K are in flight, service
  time is multiplied by ``(in_flight / K) ** CONTENTION_EXPONENT`` (in flight when the request
  starts). Throughput ``c / (T * (c/K)**1.5)`` rises up to K and falls like ``1/sqrt(c)`` past
  it: the handbook's ceiling of 8 with ``contention=8``.

Rate limits (``rate_limits``): requests and tokens per minute as token buckets, a request
over either answered 429 with ``Retry-After``, and every reply carrying the buckets' state in
OpenAI's ``x-ratelimit-*`` and Anthropic's ``anthropic-ratelimit-*`` headers (see
``core.sim.ratelimits``).

Faults: see ``core.sim.faults``.

Speed: with ``time_scale=0`` it serves about 1,400 plain completions/s on a 2-core machine
(1,100-1,550 over five runs of 4,000-5,000 requests: ``run_server`` in its own process, an httpx2
AsyncClient at concurrency 64 in another, the two sharing both cores); under
``serve_in_thread``, where client and server share one interpreter, about 770/s. Of the time a
request costs the server, the simulation is under a quarter; uvicorn and Starlette take the rest.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from core.errors import InputError
from core.sim.answers import SimReply, estimate_tokens, simulate
from core.sim.faults import RETRY_AFTER_MS, STALL_LIMIT_S, TIMEOUT_DELAY_MS, FaultKind, FaultPlan
from core.sim.models import SIM_MODELS, SimModel
from core.sim.prompts import SimPrompt, read_prompt
from core.sim.ratelimits import RateLimits
from core.sim.scenarios import SCENARIO_MODELS

CONTENTION_EXPONENT = 1.5
MAX_N = 128
STREAM_PIECES = 8
"""A stream carries its content in at most this many chunks per choice."""

_SAMPLE_KEYS = 200_000
"""How many (model, input) sample counters are kept before the oldest are forgotten."""

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


@dataclass
class SimStats:
    """What the server has seen since it started (or was reset)."""

    requests: int = 0
    served: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    in_service: int = 0
    max_in_service: int = 0
    queued: int = 0
    max_queued: int = 0
    disconnects: int = 0
    throttled: int = 0  # refused by the rate limits
    statuses: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.requests = self.served = self.disconnects = self.throttled = 0
        self.max_in_flight = self.in_flight
        self.max_in_service = self.in_service
        self.max_queued = self.queued
        self.statuses = {}
        self.faults = {}


@dataclass
class _Settings:
    seed: int
    time_scale: float
    capacity: int | None
    contention: int | None
    faults: FaultPlan
    independent: bool
    rate_limits: RateLimits | None = None


class _State:
    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self.stats = SimStats()
        self._samples: dict[tuple[str, str], int] = {}
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter | None:
        if self.settings.capacity is None:
            return None
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.settings.capacity)
        return self._limiter

    def next_samples(self, model: str, text: str, n: int) -> int:
        """The first of ``n`` fresh sample numbers of ``model`` on ``text``."""
        key = (model, text)
        start = self._samples.pop(key, 0)
        self._samples[key] = start + n
        if len(self._samples) > _SAMPLE_KEYS:
            self._samples.pop(next(iter(self._samples)))
        return start

    def count_status(self, status: int) -> None:
        key = str(status)
        self.stats.statuses[key] = self.stats.statuses.get(key, 0) + 1

    def count_fault(self, kind: str) -> None:
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1


def _error_body(
    message: str, kind: str, code: str | None = None, param: str | None = None
) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}
    ).encode()


def _error(
    status: int, message: str, kind: str, code: str | None = None, param: str | None = None
) -> Response:
    return Response(
        _error_body(message, kind, code, param), status_code=status, media_type="application/json"
    )


def _retry_after(time_scale: float) -> str:
    seconds = RETRY_AFTER_MS * time_scale / 1000.0
    if seconds >= 1:
        return str(math.ceil(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".") or "0"


_HTML_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def _pieces(text: str, count: int) -> list[str]:
    """``text`` in at most ``count`` chunks, split between words."""
    words = re.findall(r"\s*\S+\s*|\s+", text)
    if not words:
        return []
    size = math.ceil(len(words) / count)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


class _Completion(Response):
    """One chat completion request being served: an ASGI response that sleeps the simulated
    time, writes the reply or the fault, and watches the connection while it does."""

    def __init__(
        self,
        state: _State,
        model: SimModel,
        prompt: SimPrompt,
        replies: list[SimReply],
        fault: FaultKind | None,
        body: dict[str, Any],
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.state = state
        self.extra_headers = headers or []  # the rate limits' state, when they are on
        self.model = model
        self.prompt = prompt
        self.replies = replies
        self.fault = fault
        self.stream = bool(body.get("stream"))
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self.id = f"chatcmpl-sim-{time.monotonic_ns():x}"
        self.created = int(time.time())
        self.finished = False
        self.status = 200
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        self.max_tokens = limit if isinstance(limit, int) and limit > 0 else None

    # -- timing -----------------------------------------------------------------------

    def _scaled(self, ms: float, multiplier: float = 1.0) -> float:
        return max(0.0, ms * self.state.settings.time_scale * multiplier / 1000.0)

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await anyio.sleep(seconds)

    def _contention(self) -> float:
        k = self.state.settings.contention
        in_flight = self.state.stats.in_flight
        if k is None or in_flight <= k:
            return 1.0
        return float((in_flight / k) ** CONTENTION_EXPONENT)

    # -- the ASGI side ----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.state.stats
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, receive, tg.cancel_scope)
                await self._serve(send)
                tg.cancel_scope.cancel()
        finally:
            stats.in_flight -= 1
        if self.finished:
            stats.served += 1
            self.state.count_status(self.status)

    async def _watch(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.finished:
                    self.state.stats.disconnects += 1
                    scope.cancel()
                return

    async def _start(self, send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        headers = [*headers, *self.extra_headers]
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def _finish(
        self, send: Send, body: bytes, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.finished = True  # before the last send: a hang-up after it is no disconnect
        await self._start(send, status, [*headers, (b"content-length", str(len(body)).encode())])
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _serve(self, send: Send) -> None:
        fault = self.fault
        if fault is not None:
            self.state.count_fault(fault)
        settings = self.state.settings
        if fault == "429":
            headers = [
                *_JSON_HEADERS,
                (b"retry-after", _retry_after(settings.time_scale).encode()),
                (b"retry-after-ms", str(round(RETRY_AFTER_MS * settings.time_scale)).encode()),
            ]
            body = _error_body(
                "Rate limit reached (simulated).", "rate_limit_error", "rate_limit_exceeded"
            )
            await self._finish(send, body, 429, headers)
            return
        if fault == "html":
            await self._finish(send, _HTML_PAGE, 502, [(b"content-type", b"text/html")])
            return
        if fault == "stall":
            await anyio.sleep(STALL_LIMIT_S)
            body = _error_body("Stalled request released (simulated).", "server_error")
            await self._finish(send, body, 504, _JSON_HEADERS)
            return
        limiter = self.state.limiter
        if limiter is None:
            await self._in_service(send)
            return
        stats = self.state.stats
        stats.queued += 1
        stats.max_queued = max(stats.max_queued, stats.queued)
        try:
            await limiter.acquire()
        finally:
            stats.queued -= 1
        try:
            await self._in_service(send)
        finally:
            limiter.release()

    async def _in_service(self, send: Send) -> None:
        stats = self.state.stats
        stats.in_service += 1
        stats.max_in_service = max(stats.max_in_service, stats.in_service)
        try:
            multiplier = self._contention()
            if self.fault == "timeout":
                late = max(TIMEOUT_DELAY_MS, 10 * self.model.latency_p95_ms)
                await self._sleep(self._scaled(late))
            first = self.replies[0]
            error = first.error
            if self.fault in ("500", "503"):
                error = int(self.fault)
            if error is not None:
                await self._sleep(self._scaled(first.ttft_ms, multiplier))
                kind = "server_error" if error == 500 else "service_unavailable"
                message = (
                    "The server had an error (simulated)."
                    if error == 500
                    else "The engine is overloaded (simulated)."
                )
                await self._finish(send, _error_body(message, kind), error, _JSON_HEADERS)
                return
            if self.stream:
                await self._stream(send, multiplier)
            else:
                await self._plain(send, multiplier)
        finally:
            stats.in_service -= 1

    # -- the reply ----------------------------------------------------------------------

    def _choices(self) -> list[tuple[str, str | None, int]]:
        """(content, finish reason, completion tokens) per choice, ``max_tokens`` applied."""
        out: list[tuple[str, str | None, int]] = []
        for reply in self.replies:
            text, reason, tokens = reply.text, "stop", reply.tokens_out
            if self.max_tokens is not None and tokens > self.max_tokens:
                text, reason, tokens = text[: self.max_tokens * 4], "length", self.max_tokens
            out.append((text, reason, tokens))
        return out

    def _usage(self, choices: list[tuple[str, str | None, int]]) -> dict[str, int]:
        completion = sum(tokens for _, _, tokens in choices)
        prompt = self.prompt.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _plain(self, send: Send, multiplier: float) -> None:
        latency = max(reply.latency_ms for reply in self.replies)
        await self._sleep(self._scaled(latency, multiplier))
        choices = self._choices()
        if self.fault == "corrupt":
            body = b'{"id": "' + self.id.encode() + b'", "choices": [{"index": 0, "mess'
            await self._finish(send, body, 200, _JSON_HEADERS)
            return
        if self.fault == "cut":
            choices = [(text[: len(text) // 2], None, tokens) for text, _, tokens in choices]
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model.name,
            "system_fingerprint": f"sim-{self.state.settings.seed}",
            "usage": self._usage(choices),
        }
        rendered = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": reason,
            }
            for i, (text, reason, _) in enumerate(choices)
        ]
        if self.fault == "shape":
            payload["output"] = [c["message"] for c in rendered]
        else:
            payload["choices"] = rendered
        await self._finish(send, json.dumps(payload).encode(), 200, _JSON_HEADERS)

    def _chunk(
        self,
        choices: list[dict[str, Any]],
        usage: dict[str, int] | None = None,
        final_usage: bool = False,
    ) -> bytes:
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model.name,
            "system_fingerprint": f"sim-{self.state.settings.seed}",
        }
        payload["outputs" if self.fault == "shape" else "choices"] = choices
        if self.include_usage:
            payload["usage"] = usage if final_usage else None
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    async def _stream(self, send: Send, multiplier: float) -> None:
        ttft = min(reply.ttft_ms for reply in self.replies)
        latency = max(reply.latency_ms for reply in self.replies)
        choices = self._choices()
        pieces = [_pieces(text, STREAM_PIECES) for text, _, _ in choices]
        steps = max(1, max(len(p) for p in pieces))
        gap = self._scaled(max(0.0, latency - ttft), multiplier) / steps

        await self._sleep(self._scaled(ttft, multiplier))
        await self._start(send, 200, _SSE_HEADERS)

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        first = [
            {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            for i in range(len(choices))
        ]
        await emit(self._chunk(first))
        cut_at = steps // 2 if self.fault == "cut" else None
        for step in range(steps):
            if cut_at is not None and step >= cut_at:
                # The stream just ends: no finish reason, no [DONE].
                self.finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if step:
                await self._sleep(gap)
            deltas = [
                {"index": i, "delta": {"content": p[step]}, "logprobs": None, "finish_reason": None}
                for i, p in enumerate(pieces)
                if step < len(p)
            ]
            if deltas:
                await emit(self._chunk(deltas))
            if self.fault == "corrupt" and step == 0:
                await emit(b'data: {"id": "' + self.id.encode() + b'", "choices": [{"delta": \n\n')
        await self._sleep(gap)
        ends: list[dict[str, Any]] = [
            {"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}
            for i, (_, reason, _) in enumerate(choices)
        ]
        tail = self._chunk(ends)
        if self.include_usage:
            tail += self._chunk([], self._usage(choices), final_usage=True)
        tail += b"data: [DONE]\n\n"
        self.finished = True
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def _bad_request(message: str, param: str | None = None) -> Response:
    return _error(400, message, "invalid_request_error", "invalid_request", param)


def _model_list(catalogue: Mapping[str, SimModel]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "tally-sim"}
            for name in catalogue
        ],
    }


def create_app(
    *,
    seed: int = 0,
    time_scale: float = 1.0,
    capacity: int | None = None,
    contention: int | None = None,
    faults: FaultPlan | Iterable[str] | str | None = None,
    independent: bool = False,
    models: Mapping[str, SimModel] | None = None,
    rate_limits: RateLimits | None = None,
) -> Starlette:
    """The sim server as an ASGI app (see the module docstring for what each knob does).

    ``models`` replaces the catalogue ``SIM_MODELS`` (a measurement may want a model whose
    latency does not vary). Without it the models of ``core.sim.scenarios`` are served too,
    though not listed."""
    listed: Mapping[str, SimModel] = SIM_MODELS if models is None else dict(models)
    catalogue: Mapping[str, SimModel] = (
        {**SCENARIO_MODELS, **SIM_MODELS} if models is None else listed
    )
    if not math.isfinite(time_scale) or time_scale < 0:
        raise InputError(f"time scale must be a number >= 0, got {time_scale}")
    if capacity is not None and capacity < 1:
        raise InputError(f"capacity must be at least 1, got {capacity}")
    if contention is not None and contention < 1:
        raise InputError(f"contention must be at least 1, got {contention}")
    if capacity is not None and contention is not None:
        raise InputError("choose --capacity or --contention, not both")
    plan = faults if isinstance(faults, FaultPlan) else FaultPlan.parse(faults)
    state = _State(
        _Settings(seed, time_scale, capacity, contention, plan, independent, rate_limits)
    )

    async def list_models(request: Request) -> Response:
        return JSONResponse(_model_list(listed))

    async def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        if name not in catalogue:
            return _error(
                404,
                f"The model `{name}` does not exist.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        return JSONResponse({"id": name, "object": "model", "created": 0, "owned_by": "tally-sim"})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> Response:
        if request.method == "DELETE":
            state.stats.reset()
        return JSONResponse(asdict(state.stats))

    async def chat(request: Request) -> Response:
        state.stats.requests += 1
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _bad_request("The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _bad_request("The request body must be a JSON object.")
        name = body.get("model")
        if not isinstance(name, str) or not name:
            return _bad_request("you must provide a model parameter", "model")
        sim_model = catalogue.get(name)
        if sim_model is None:
            return _error(
                404,
                f"The model `{name}` does not exist.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            return _bad_request("messages must be a non-empty list of objects", "messages")
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
            return _bad_request(f"n must be an integer from 1 to {MAX_N}", "n")
        prompt = read_prompt(messages, body.get("response_format"))
        settings = state.settings
        asked = body.get("seed")
        if isinstance(asked, int) and not isinstance(asked, bool):
            base = asked
        else:
            base = state.next_samples(name, prompt.text, n)
        labels = list(prompt.labels) if prompt.labels else None
        replies = [
            simulate(
                sim_model,
                prompt.text,
                labels,
                prompt.fmt_hint,
                base + i,
                settings.seed,
                settings.independent,
            )
            for i in range(n)
        ]
        fault = settings.faults.pick(name, settings.seed, prompt.text, base)
        limits = settings.rate_limits
        if limits is None:
            return _Completion(state, sim_model, prompt, replies, fault, body)
        wait = limits.admit(prompt.prompt_tokens + sum(r.tokens_out for r in replies))
        headers = limits.headers()
        if wait is None:
            return _Completion(state, sim_model, prompt, replies, fault, body, headers)
        state.stats.throttled += 1
        state.count_status(429)
        message = f"Rate limit reached; try again in {wait * 1000:.0f}ms (simulated)."
        return Response(
            _error_body(message, "rate_limit_error", "rate_limit_exceeded"),
            status_code=429,
            media_type="application/json",
            headers={k.decode(): v.decode() for k, v in headers + limits.retry_after_headers(wait)},
        )

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", list_models),
            Route("/v1/models/{model:path}", get_model),
            Route("/v1/stats", stats, methods=["GET", "DELETE"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )
    app.state.sim = state
    return app


def _config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=2,
    )


def run_server(
    host: str = "127.0.0.1",
    port: int = 8001,
    *,
    seed: int = 0,
    time_scale: float = 1.0,
    capacity: int | None = None,
    contention: int | None = None,
    fault: Iterable[str] | str | None = None,
    faults: FaultPlan | None = None,
    independent: bool = False,
    on_listen: Callable[[str], None] | None = None,
    rate_limits: RateLimits | None = None,
) -> None:
    """Serve the simulated panel until interrupted. ``fault`` takes the ``--fault`` strings;
    ``on_listen`` hears the base URL once the port is bound (the real port when ``port`` is 0)."""
    plan = faults if faults is not None else FaultPlan.parse(fault)
    app = create_app(
        seed=seed,
        time_scale=time_scale,
        capacity=capacity,
        contention=contention,
        faults=plan,
        independent=independent,
        rate_limits=rate_limits,
    )
    sock = _listen(host, port)
    if on_listen is not None:
        bound = sock.getsockname()[1]
        on_listen(f"http://{host}:{bound}/v1")
    uvicorn.Server(_config(app, host, port)).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so a port in use or out of range is one clear line
    instead of the server's own log and exit."""
    if not 0 <= port <= 65535:
        raise InputError(f"port must be from 0 to 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


@contextlib.contextmanager
def serve_in_thread(
    *,
    seed: int = 0,
    time_scale: float = 1.0,
    capacity: int | None = None,
    contention: int | None = None,
    faults: FaultPlan | Iterable[str] | str | None = None,
    independent: bool = False,
    models: Mapping[str, SimModel] | None = None,
    rate_limits: RateLimits | None = None,
) -> Iterator[str]:
    """Run the sim server on a free loopback port in a background thread; yield its base URL
    (``http://127.0.0.1:PORT/v1``) and stop it cleanly on exit."""
    app = create_app(
        seed=seed,
        time_scale=time_scale,
        capacity=capacity,
        contention=contention,
        faults=faults,
        independent=independent,
        models=models,
        rate_limits=rate_limits,
    )
    # Port 0: the kernel picks a free port when the server binds, so there is no window in
    # which another process could take it.
    server = uvicorn.Server(_config(app, "127.0.0.1", 0))
    failure: list[BaseException] = []

    def target() -> None:
        try:
            server.run()
        except BaseException as err:  # reported to the caller below
            failure.append(err)

    thread = threading.Thread(target=target, name="sim-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        while not server.started:
            if failure or not thread.is_alive():
                raise RuntimeError(
                    f"the sim server did not start: {failure[0] if failure else 'exited'}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError("the sim server did not start within 10 s")
            time.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)


__all__ = ["SimStats", "create_app", "estimate_tokens", "run_server", "serve_in_thread"]
