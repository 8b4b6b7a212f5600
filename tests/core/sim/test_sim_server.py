"""The sim server over loopback: the OpenAI protocol (checked with the official SDK as the
client), reproducibility by seed, and disconnect detection."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx2
import openai
import pytest

from core.errors import InputError
from core.formats import LabelFormat
from core.sim.answers import estimate_tokens, simulate
from core.sim.models import SIM_MODELS
from core.sim.server import serve_in_thread

pytestmark = pytest.mark.anyio

StatsPoll = Callable[[str, Callable[[dict[str, Any]], bool]], Awaitable[dict[str, Any]]]

LABELS = ["regression", "no regression"]
FMT = LabelFormat(labels=tuple(LABELS))
SYSTEM = FMT.instruction()
INPUT = "The search box now clears itself whenever the user presses the shift key."
MESSAGES: list[Any] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": INPUT},
]


@pytest.fixture
def url() -> Iterator[str]:
    with serve_in_thread(seed=3, time_scale=0.01) as base:
        yield base


def sdk(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base, api_key="sim", max_retries=0, timeout=10)


async def stats(base: str) -> dict[str, Any]:
    async with httpx2.AsyncClient() as client:
        response = await client.get(f"{base}/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


async def test_models_are_listed(url: str) -> None:
    async with sdk(url) as client:
        page = await client.models.list()
        assert [m.id for m in page.data] == list(SIM_MODELS)
        one = await client.models.retrieve("sim-mid")
        assert one.id == "sim-mid"
    async with httpx2.AsyncClient() as client:
        health = await client.get(url.removesuffix("/v1") + "/health")
        assert health.json() == {"status": "ok"}


async def test_plain_completion_answers_a_label_with_usage(url: str) -> None:
    async with sdk(url) as client:
        reply = await client.chat.completions.create(model="sim-strong", messages=MESSAGES)
    assert reply.model == "sim-strong" and reply.object == "chat.completion"
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert FMT.parse(choice.message.content or "").ok
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == estimate_tokens(SYSTEM) + estimate_tokens(INPUT)
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_streaming_sends_chunks_a_finish_reason_and_usage(url: str) -> None:
    async with sdk(url) as client:
        stream = await client.chat.completions.create(
            model="sim-mid",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert FMT.parse(content).ok
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[0].choices[0].delta.role == "assistant"
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and not chunks[-1].choices
    assert usage[0].completion_tokens > 0


async def test_n_choices_bill_the_prompt_once(url: str) -> None:
    async with sdk(url) as client:
        one = await client.chat.completions.create(model="sim-fast", messages=MESSAGES)
        five = await client.chat.completions.create(model="sim-fast", messages=MESSAGES, n=5)
        stream = await client.chat.completions.create(
            model="sim-fast",
            messages=MESSAGES,
            n=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed = [chunk async for chunk in stream]
    assert [c.index for c in five.choices] == [0, 1, 2, 3, 4]
    assert one.usage is not None and five.usage is not None
    assert five.usage.prompt_tokens == one.usage.prompt_tokens
    assert five.usage.completion_tokens > one.usage.completion_tokens
    texts = {i: "" for i in range(3)}
    finished = set()
    for chunk in streamed:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1, 2}
    assert all(FMT.parse(t).ok for t in texts.values())


async def test_response_format_json_schema_returns_an_enum_label(url: str) -> None:
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": FMT.response_schema(), "strict": True},
    }
    async with sdk(url) as client:
        for model in ("sim-strong", "sim-biased", "sim-fast"):
            reply = await client.chat.completions.create(
                model=model, messages=MESSAGES, response_format=response_format
            )
            data = json.loads(reply.choices[0].message.content or "")
            assert set(data) == {"answer"} and data["answer"] in LABELS


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(url: str) -> None:
    async with sdk(url) as client:
        reply = await client.chat.completions.create(
            model="sim-strong", messages=MESSAGES, max_tokens=1
        )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 1


async def test_unknown_model_and_bad_bodies_get_openai_errors(url: str) -> None:
    async with sdk(url) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-nope", messages=MESSAGES)
        assert caught.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-nope")
    async with httpx2.AsyncClient() as client:
        bad = await client.post(f"{url}/chat/completions", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        for body in (
            [],
            {"model": "sim-mid"},
            {"model": "sim-mid", "messages": []},
            {"model": "sim-mid", "messages": MESSAGES, "n": 0},
            {"messages": MESSAGES},
        ):
            response = await client.post(f"{url}/chat/completions", json=body)
            assert response.status_code == 400, body
            assert set(response.json()["error"]) >= {"message", "type", "code"}
    counted = await stats(url)
    assert counted["requests"] == 7 and counted["served"] == 0


async def answers(base: str, requests: list[tuple[str, str]]) -> list[str | None]:
    out: list[str | None] = []
    async with sdk(base) as client:
        for model, text in requests:
            try:
                reply = await client.chat.completions.create(
                    model=model,
                    messages=[
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": text},
                    ],
                )
                out.append(reply.choices[0].message.content)
            except openai.APIStatusError as err:
                out.append(f"error {err.status_code}")
    return out


async def test_runs_are_reproducible_by_seed() -> None:
    requests = [
        (model, f"Change {i}: a button moved {i} pixels to the left.")
        for i in range(6)
        for model in ("sim-fast", "sim-flaky", "sim-fast")
    ]
    runs = []
    for seed in (5, 5, 6):
        with serve_in_thread(seed=seed, time_scale=0.001) as base:
            runs.append(await answers(base, requests))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


async def test_successive_requests_are_successive_samples(url: str) -> None:
    model = SIM_MODELS["sim-fast"]
    hint = {"kind": "label", "structured": False, "schema": None}
    expected = []
    for sample in range(12):
        reply = simulate(model, INPUT, LABELS, hint, sample, seed=3)
        expected.append(f"error {reply.error}" if reply.error else reply.text)
    assert await answers(url, [("sim-fast", INPUT)] * 12) == expected
    # A request naming a seed gets that sample, whatever came before.
    async with sdk(url) as client:
        pinned = await client.chat.completions.create(model="sim-fast", messages=MESSAGES, seed=4)
    assert pinned.choices[0].message.content == expected[4]


async def test_a_client_that_hangs_up_is_counted(poll_stats: StatsPoll) -> None:
    # Real-time latency (sim-strong takes seconds), so every hang-up lands mid-request.
    body = {"model": "sim-strong", "messages": MESSAGES}
    with serve_in_thread(time_scale=1.0) as base:
        async with httpx2.AsyncClient(timeout=30) as client:
            # A plain request abandoned while the server works on it.
            async with anyio.create_task_group() as tg:

                async def post() -> None:
                    await client.post(f"{base}/chat/completions", json=body)

                tg.start_soon(post)
                await poll_stats(base, lambda s: s["in_flight"] >= 1)
                tg.cancel_scope.cancel()
            counted = await poll_stats(base, lambda s: s["disconnects"] >= 1 and not s["in_flight"])
            assert counted["served"] == 0
            # A stream read to its first chunk, then dropped.
            async with client.stream(
                "POST", f"{base}/chat/completions", json={**body, "stream": True}
            ) as response:
                async for _ in response.aiter_lines():
                    break
            counted = await poll_stats(base, lambda s: s["disconnects"] >= 2 and not s["in_flight"])
    assert counted["served"] == 0 and counted["in_flight"] == 0


async def test_stats_can_be_reset(url: str) -> None:
    await answers(url, [("sim-fast", INPUT)])
    assert (await stats(url))["requests"] == 1
    async with httpx2.AsyncClient() as client:
        reset = await client.delete(f"{url}/stats")
    assert reset.json()["requests"] == 0 and reset.json()["served"] == 0


async def test_the_app_serves_in_process_too() -> None:
    # The library mounts the app on an in-process transport when no sim server runs.
    from core.sim.server import create_app

    app = create_app(seed=3, time_scale=0)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim.invalid/v1") as client:
        plain = await client.post(
            "/chat/completions", json={"model": "sim-mid", "messages": MESSAGES}
        )
        streamed = await client.post(
            "/chat/completions", json={"model": "sim-mid", "messages": MESSAGES, "stream": True}
        )
        seen = (await client.get("/stats")).json()
    assert FMT.parse(plain.json()["choices"][0]["message"]["content"]).ok
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert seen["served"] == 2 and seen["disconnects"] == 0


def test_run_server_maps_the_command_line_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.sim.server as server_module

    started: list[Any] = []

    class FakeServer:
        def __init__(self, config: Any) -> None:
            self.config = config

        def run(self, sockets: Any = None) -> None:
            started.append(self.config)

    class FakeSocket:
        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", 8123)

    monkeypatch.setattr(server_module.uvicorn, "Server", FakeServer)
    monkeypatch.setattr(server_module, "_listen", lambda host, port: FakeSocket())
    server_module.run_server(
        host="127.0.0.1",
        port=8123,
        seed=9,
        time_scale=0.5,
        capacity=None,
        contention=8,
        fault=["429:0.1", "sim-flaky:cut:0.2"],
        independent=True,
    )
    (config,) = started
    assert (config.host, config.port, config.http, config.loop) == (
        "127.0.0.1",
        8123,
        "httptools",
        "asyncio",
    )
    assert config.access_log is False
    settings = config.app.state.sim.settings
    assert (settings.seed, settings.time_scale, settings.contention, settings.independent) == (
        9,
        0.5,
        8,
        True,
    )
    assert [str(rule) for rule in settings.faults.rules] == ["429:0.1", "sim-flaky:cut:0.2"]


def test_impossible_settings_are_refused() -> None:
    from core.sim.server import create_app

    for kwargs in (
        {"time_scale": -1.0},
        {"capacity": 0},
        {"contention": 0},
        {"capacity": 1, "contention": 8},
        {"time_scale": float("nan")},
    ):
        with pytest.raises(InputError):
            create_app(**kwargs)
