"""A lean OpenAI-compatible endpoint for the fan-out benchmark: a bare asyncio protocol, no
framework (a uvicorn app at 1,000 requests/s takes a core on this machine and would be the
limit it is meant to measure).

The latency is in the path, so one server serves every level: ``/L0.5/v1/chat/completions``
answers after 0.5 s on average, spread uniformly by ``--jitter`` (a fixed time would land a
whole wave at once and measure the burst). ``GET /stats`` returns the server's own CPU seconds
and requests so far, so the benchmark can show the server is not the limit.

For the rate-limit benchmarks: ``--rpm`` puts the sim's request bucket in front
(``core.sim.ratelimits``: 429 with ``Retry-After`` over the limit, the limit's headers on every
reply); ``--random-429 P`` refuses a share P of requests at once with ``Retry-After:
--retry-after`` seconds and no rate-limit headers, as an overloaded provider does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.sim.ratelimits import RateLimits

REPLY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "regression"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
    }
).encode()


THROTTLED = b'{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}'


class Stats:
    requests = 0
    throttled = 0


class Handler(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace, limits: RateLimits | None) -> None:
        self.args, self.limits = args, limits
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:  # the client gave up: stop "generating"
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buf) < end:
                return
            self.buf = self.buf[end:]
            self.handle(head.split(" ", 2)[1])

    def handle(self, path: str) -> None:
        Stats.requests += 1
        if path == "/stats":
            stats = {"cpu": time.process_time(), "requests": Stats.requests}
            return self.reply(json.dumps({**stats, "throttled": Stats.throttled}).encode())
        headers: list[tuple[bytes, bytes]] = []
        wait = None
        if self.limits is not None:
            wait = self.limits.admit(21)
            headers = self.limits.headers()
        elif random.random() < self.args.random_429:
            wait = self.args.retry_after
        if wait is not None:
            Stats.throttled += 1
            headers += RateLimits.retry_after_headers(wait)
            return self.reply(THROTTLED, headers, b"429 Too Many Requests")
        latency = float(path.split("/", 2)[1][1:]) if path.startswith("/L") else 0.0
        delay = latency * (1 + self.args.jitter * (2 * random.random() - 1))
        self.timer = asyncio.get_running_loop().call_later(delay, self.reply, REPLY, headers)

    def reply(
        self,
        body: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        status: bytes = b"200 OK",
    ) -> None:
        self.timer = None
        if self.transport is not None:
            extra = b"".join(b"%s: %s\r\n" % pair for pair in headers or [])
            self.transport.write(
                b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)
            )


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    limits = RateLimits(requests_per_minute=args.rpm) if args.rpm else None
    server = await loop.create_server(
        lambda: Handler(args, limits), "127.0.0.1", args.port, backlog=4096
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jitter", type=float, default=0.5, help="latency spread, +/- share")
    parser.add_argument("--rpm", type=float, default=0.0, help="rate limit, requests/minute")
    parser.add_argument("--random-429", type=float, default=0.0, help="share refused with 429")
    parser.add_argument("--retry-after", type=float, default=0.2, help="their Retry-After, s")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args))
    except ImportError:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
