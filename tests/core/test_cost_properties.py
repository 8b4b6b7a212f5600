"""Property: a run's cost is the sum of its attempts' billed usage, priced, or unknown.

Random attempt histories go through the real path: ``Tally`` -> engine -> the OpenAI-compatible
provider -> httpx2 (a ``MockTransport`` answering from the script) -> genai-prices. Each slot
has its own model, so each script is its slot's. What an attempt bills is written here from
the wire alone, independently of the engine: a 200 reply was billed, priced from its usage
(cached prompt tokens at the cached rate), or of unknown cost when it reported none; an error
reply (4xx, 5xx) bills nothing; a reply cut (no finish reason) or without choices was billed
and is retried, never read as an invalid vote. A call whose attempts include an unknown one
has an unknown cost with its known part kept; the run's cost is known only when every call's
is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import genai_prices
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.api import Tally, build_policy, build_task
from core.result import CallStatus
from core.spec import RunSpec

MODELS = ("gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o-mini", "gpt-4o", "gpt-4.1")
MAX_ATTEMPTS = 3
KEY_ENV = "TALLY_TEST_COST_KEY"


@dataclass(frozen=True)
class Attempt:
    """One reply on the wire. ``usage`` is (prompt, completion, cached) or None (unreported)."""

    kind: str  # ok | invalid | no_choices | cut | http_500 | http_400
    usage: tuple[int, int, int] | None

    @property
    def final(self) -> bool:
        """Whether the call ends with this attempt (no retry follows)."""
        return self.kind in ("ok", "invalid", "http_400")

    @property
    def billed(self) -> bool:
        return not self.kind.startswith("http_")

    def reply(self) -> httpx2.Response:
        if not self.billed:
            status = int(self.kind.removeprefix("http_"))
            return httpx2.Response(status, json={"error": {"message": "scripted"}})
        body: dict[str, Any] = {"id": "x", "object": "chat.completion"}
        if self.kind != "no_choices":  # a cut reply: half an answer, no finish reason
            text = {"ok": "yes", "invalid": "a banana", "cut": "ye"}[self.kind]
            message = {"role": "assistant", "content": text}
            reason = None if self.kind == "cut" else "stop"
            body["choices"] = [{"index": 0, "message": message, "finish_reason": reason}]
        if self.usage is not None:
            prompt, completion, cached = self.usage
            body["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
        return httpx2.Response(200, json=body)


usages = st.none() | st.tuples(st.integers(0, 5000), st.integers(0, 500), st.integers(0, 5000)).map(
    lambda u: (u[0], u[1], min(u[2], u[0]))
)
retryable = st.builds(Attempt, st.sampled_from(["no_choices", "cut", "http_500"]), usages)
final = st.builds(Attempt, st.sampled_from(["ok", "invalid", "http_400"]), usages)


@st.composite
def histories(draw: st.DrawFn) -> list[list[Attempt]]:
    """Per slot: up to MAX_ATTEMPTS - 1 retryable failures, then a final reply; or only
    retryable failures until the attempts run out."""
    out = []
    for _ in range(draw(st.integers(1, len(MODELS)))):
        failures = draw(st.lists(retryable, max_size=MAX_ATTEMPTS))
        if len(failures) < MAX_ATTEMPTS:
            failures.append(draw(final))
        out.append(failures)
    return out


def priced(model: str, usage: tuple[int, int, int]) -> float:
    prompt, completion, cached = usage
    return float(
        genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=prompt, cache_read_tokens=cached, output_tokens=completion
            ),
            model,
            provider_id="openai",
        ).total_price
    )


def expected(model: str, attempts: list[Attempt]) -> tuple[float, bool]:
    """(the known part, whether any billed attempt reported no usage)."""
    billed = [a for a in attempts if a.billed]
    known = sum(priced(model, a.usage) for a in billed if a.usage is not None)
    return known, any(a.usage is None for a in billed)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("cost") / "tally.toml"
    path.write_text(
        "[providers.openai]\n"
        'kind = "openai"\n'
        'base_url = "http://provider.invalid/v1"\n'
        f'api_key_env = "{KEY_ENV}"\n'
        "supports_n = false\n"
        "[defaults]\n"
        f"max_attempts = {MAX_ATTEMPTS}\n"
        "backoff_base_s = 0\n"
        "backoff_max_s = 0\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, "sk-test")
        yield path


def run_scripted(config: Path, scripts: dict[str, list[Attempt]]) -> Any:
    queues = {model: list(attempts) for model, attempts in scripts.items()}
    sent: dict[str, list[Attempt]] = {model: [] for model in scripts}

    def answer(request: httpx2.Request) -> httpx2.Response:
        model = json.loads(request.content)["model"]
        attempt = queues[model].pop(0)
        sent[model].append(attempt)
        return attempt.reply()

    async def main() -> Any:
        transport = httpx2.MockTransport(answer)
        async with Tally.open(config=config, persist=False, transport=transport) as tally:
            panel = tally.panel([f"openai:{m}" for m in scripts])
            task = build_task(labels=["yes", "no"])
            spec = RunSpec(task=task, panel=panel, policy=build_policy())
            return await tally.vote("Is it broken?", spec=spec)

    return anyio.run(main), sent


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(histories())
def test_a_runs_cost_is_its_attempts_billed_usage_priced_or_unknown(
    config: Path, history: list[list[Attempt]]
) -> None:
    scripts = dict(zip(MODELS, history, strict=False))
    result, sent = run_scripted(config, scripts)
    known_total, unknown_calls = 0.0, 0
    for call in result.calls:
        model = call.model.removeprefix("openai:")
        assert sent[model] == scripts[model]  # the engine sent exactly the scripted attempts
        known, unknown = expected(model, scripts[model])
        assert call.cost_known_usd == pytest.approx(known, rel=1e-9, abs=1e-12)
        if unknown:
            assert call.cost_usd is None, scripts[model]
        else:
            assert call.cost_usd == pytest.approx(known, rel=1e-9, abs=1e-12), scripts[model]
        known_total += known
        unknown_calls += unknown
        # a reply cut or without choices is the transport's failure, retried, never a vote
        last = scripts[model][-1]
        status = {"ok": CallStatus.OK, "invalid": CallStatus.INVALID}.get(last.kind)
        assert call.status == (status or CallStatus.ERROR)
    assert result.cost_known_usd == pytest.approx(known_total, rel=1e-9, abs=1e-12)
    assert result.cost_unknown_calls == unknown_calls
    if unknown_calls:
        assert result.cost_usd is None
    else:
        assert result.cost_usd == pytest.approx(known_total, rel=1e-9, abs=1e-12)
