"""The spend told before a run: calls, requests, cost from the price book (unknown where a price
is), expected time from the ceilings, the tie-break chain's most, and when to ask first."""

from __future__ import annotations

import math

import anyio
import pytest

from core.api import Tally, build_policy, build_task
from core.cost import PriceBook
from core.estimate import (
    LARGE_CALLS,
    ModelHints,
    SpendEstimate,
    combine,
    duration,
    estimate,
    hints_for,
    prompt_tokens,
)
from core.panel import ModelSpec, Panel
from core.spec import RunSpec

TASK = build_task(labels=["yes", "no"], template="Answer: {input}")
PRICES = PriceBook(extra={"sim:a": (1.0, 2.0), "sim:b": (10.0, 20.0)})


def spec(models: list[str], n: int, **policy: object) -> RunSpec:
    return RunSpec(
        task=TASK,
        panel=Panel.build([ModelSpec.parse(m) for m in models], n),
        policy=build_policy(**policy),  # type: ignore[arg-type]
    )


def plan(
    run: RunSpec,
    inputs: list[str],
    *,
    n_ok: bool = True,
    hints: dict[str, ModelHints] | None = None,
    ceiling: int = 8,
    provider_ceiling: int = 8,
) -> SpendEstimate:
    return estimate(
        run,
        inputs,
        prices=PRICES,
        supports_n=lambda _m: n_ok,
        provider_of=lambda m: (m.provider, provider_ceiling),
        hints=hints
        if hints is not None
        else {"sim:a": ModelHints(10, 1.0), "sim:b": ModelHints(20, 2.0)},
        ceiling=ceiling,
    )


def test_samples_drawn_together_bill_the_prompt_once() -> None:
    run = spec(["sim:a"], 5)
    prompt = prompt_tokens(run, "is it?")
    together = plan(run, ["is it?"])
    apart = plan(run, ["is it?"], n_ok=False)
    assert (together.calls, together.requests) == (5, 1)
    assert (apart.calls, apart.requests) == (5, 5)
    assert together.tokens_in == prompt and apart.tokens_in == 5 * prompt
    assert together.tokens_out == apart.tokens_out == 50
    assert together.cost_usd == pytest.approx((prompt * 1.0 + 50 * 2.0) / 1e6)
    assert apart.cost_usd == pytest.approx((5 * prompt * 1.0 + 50 * 2.0) / 1e6)


def test_the_prompt_is_counted_from_the_messages_sent() -> None:
    run = spec(["sim:a"], 1)
    chars = sum(len(m["content"]) for m in TASK.render("x" * 400))
    assert prompt_tokens(run, "x" * 400) == math.ceil(chars / 4)


def test_an_unknown_price_makes_the_cost_unknown_never_zero() -> None:
    run = spec(["sim:a", "nowhere:model"], 2)
    got = plan(run, ["q"], hints={"sim:a": ModelHints(10, 1.0)})
    assert got.cost_usd is None
    assert got.unknown_models == ("nowhere:model",)
    assert got.known_cost_usd > 0
    assert got.seconds is None and got.slow_models == ("nowhere:model",)
    line = got.describe(lambda usd: "?" if usd is None else f"${usd:.6f}")
    assert "+ unknown (nowhere:model)" in line and "time unknown" in line


def test_time_comes_from_the_ceilings() -> None:
    run = spec(["sim:a"], 4)
    one_run = plan(run, ["q"], n_ok=False)
    assert one_run.seconds == pytest.approx(1.0)  # four calls at once: the slowest call
    many = plan(run, ["q"] * 10, n_ok=False, ceiling=8)
    assert many.seconds == pytest.approx(40 / 8)  # 40 model-seconds over 8 slots
    tight = plan(run, ["q"] * 10, n_ok=False, ceiling=8, provider_ceiling=2)
    assert tight.seconds == pytest.approx(40 / 2)  # the provider's own ceiling binds


def test_the_chain_adds_at_most_its_calls() -> None:
    run = spec(["sim:a"], 3, tie_break=["expand:2", "escalate:sim:b"])
    got = plan(run, ["q", "r"])
    assert got.extra_calls == 2 * 2 + 2
    assert got.extra_cost_usd is not None and got.extra_cost_usd > 0
    assert "may add up to 6 calls" in got.describe(lambda usd: f"${usd}")


def test_a_large_spend_asks_first() -> None:
    run = spec(["sim:a"], 5)
    assert not plan(run, ["q"]).large
    assert plan(run, ["q"] * (LARGE_CALLS // 5)).large
    pricey = spec(["sim:b"], 5)
    # 25 separate requests of a 10k-token prompt at $10/M: about $2.50
    assert plan(pricey, ["x" * 40_000] * 5, n_ok=False).large


def test_hints_come_from_the_sim_then_the_history() -> None:
    hints = hints_for(
        ["sim:a", "openai:m", "openai:new"],
        sim={"sim:a": ModelHints(10, 0.5)},
        history_ms={"openai:m": [100.0, 300.0, 200.0]},
    )
    assert hints["sim:a"] == ModelHints(10, 0.5)
    assert hints["openai:m"].latency_s == pytest.approx(0.2)
    assert hints["openai:new"] == ModelHints()


def test_parts_done_one_after_another_add_up() -> None:
    run = spec(["sim:a"], 1)
    a, b = plan(run, ["q"]), plan(run, ["q"] * 3)
    both = combine([a, b])
    assert both.calls == 4 and both.seconds == pytest.approx(a.seconds + b.seconds)  # type: ignore[operator]
    assert both.cost_usd == pytest.approx(a.known_cost_usd + b.known_cost_usd)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.42, "0.4 s"), (12, "12 s"), (185, "3 min 5 s"), (3720, "1 h 2 min")]
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_the_session_estimates_with_its_own_prices_and_ceilings() -> None:
    async def main() -> SpendEstimate:
        async with Tally.open(persist=False) as tally:
            panel = tally.panel(["sim:sim-fast"], 5)
            return tally.estimate(RunSpec(task=TASK, panel=panel, policy=build_policy()), ["q?"])

    got = anyio.run(main)
    assert got.calls == 5 and got.requests == 1  # the sim endpoint draws samples together
    assert got.cost_usd is not None and got.cost_usd > 0
    assert got.seconds is not None and got.ceiling == 8
