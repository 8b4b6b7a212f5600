"""A minimal OpenAI-compatible endpoint with a known mean service time, for the fan-out
benchmark.

Run as its own process so the server does not share the clients' interpreter: the ideal
throughput at concurrency C is then C / mean latency, and anything below it is the client's.
Service times are spread uniformly around the mean (``--jitter``), as real model latencies
are; a fixed time would make every call of a wave land at once and measure the burst.
"""

from __future__ import annotations

import argparse
import json
import random

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

LATENCY_S = 0.2
JITTER = 0.0
REPLY = {
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
BODY = json.dumps(REPLY).encode()


async def completions(request: Request) -> Response:
    await request.body()
    await anyio.sleep(LATENCY_S * (1 + JITTER * (2 * random.random() - 1)))
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=LATENCY_S)
    parser.add_argument("--jitter", type=float, default=JITTER)
    args = parser.parse_args()
    LATENCY_S, JITTER = args.latency, args.jitter
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        http="httptools",
        backlog=4096,
    )
