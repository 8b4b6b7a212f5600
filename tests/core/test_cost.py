"""Prices: overrides, the sim catalogue, genai-prices, and the honest-number rules (unknown is
None, never 0; a call cut short is priced on what is known)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import genai_prices
import httpx2
import pytest
from genai_prices import data_snapshot

from core.config import PriceOverride, TallyConfig
from core.cost import PriceBook
from core.providers import registry as registry_module


def book() -> PriceBook:
    return PriceBook(extra={"sim:sim-strong": (3.0, 15.0)})


def test_override_wins() -> None:
    prices = PriceBook(
        {"openai:gpt-4.1-mini": PriceOverride(input_per_mtok=1.0, output_per_mtok=2.0)}
    )
    assert prices.source("openai:gpt-4.1-mini") == "override"
    assert prices.price("openai:gpt-4.1-mini", 1_000_000, 500_000) == pytest.approx(2.0)


def test_override_for_every_model_of_a_provider_and_for_a_bare_model() -> None:
    prices = PriceBook(
        {
            "ollama:*": PriceOverride(input_per_mtok=0, output_per_mtok=0),
            "my-model": PriceOverride(input_per_mtok=1, output_per_mtok=1),
        }
    )
    assert prices.price("ollama:llama3.2:3b", 5000, 100) == 0.0  # a known zero, not unknown
    assert prices.source("ollama:llama3.2:3b") == "override"
    assert prices.price("local:my-model", 1_000_000, 0) == pytest.approx(1.0)


def test_sim_prices_from_extra() -> None:
    prices = book()
    assert prices.source("sim:sim-strong") == "sim"
    assert prices.price("sim:sim-strong", 1000, 100) == pytest.approx(0.003 + 0.0015)


def test_genai_prices() -> None:
    prices = PriceBook()
    assert prices.source("openai:gpt-4.1-mini") == "genai-prices"
    assert prices.known("openai:gpt-4.1-mini")
    cost = prices.price("openai:gpt-4.1-mini", 1000, 100)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, output_tokens=100),
        model_ref="gpt-4.1-mini",
        provider_id="openai",
    ).total_price
    assert cost == pytest.approx(float(expected))
    assert cost is not None and cost > 0


def test_anthropic_model_via_genai_prices() -> None:
    prices = PriceBook()
    assert prices.known("anthropic:claude-haiku-4-5")
    cost = prices.price("anthropic:claude-haiku-4-5", 2000, 200)
    assert cost is not None and cost > 0


@pytest.mark.parametrize("model", ["local:my-model", "ollama:llama3.2", "sim:unheard-of"])
def test_unknown_is_none_never_zero(model: str) -> None:
    prices = book()
    assert prices.price(model, 1000, 100) is None
    assert not prices.known(model)
    assert prices.source(model) == "unknown"


def test_unknown_tokens_are_none() -> None:
    prices = book()
    assert prices.price("sim:sim-strong", None, None) is None
    assert prices.price("openai:gpt-4.1-mini", None, None) is None


def test_cancelled_call_prices_the_known_part() -> None:
    prices = book()
    assert prices.price("sim:sim-strong", 1_000_000, None) == pytest.approx(3.0)
    assert prices.price("sim:sim-strong", None, 1_000_000) == pytest.approx(15.0)
    genai = prices.price("openai:gpt-4.1-mini", 1_000_000, None)
    assert genai is not None and genai > 0


def test_zero_tokens_cost_zero_for_a_known_model() -> None:
    assert book().price("sim:sim-strong", 0, 0) == 0.0


def test_table() -> None:
    prices = PriceBook(
        {"openai:gpt-4.1-mini": PriceOverride(input_per_mtok=1.0, output_per_mtok=2.0)},
        extra={"sim:sim-strong": (3.0, 15.0)},
    )
    rows = prices.table(
        ["openai:gpt-4.1-mini", "sim:sim-strong", "anthropic:claude-haiku-4-5", "x:y", "x:y"]
    )
    assert rows[0] == {
        "model": "openai:gpt-4.1-mini",
        "input_per_mtok": 1.0,
        "output_per_mtok": 2.0,
        "source": "override",
    }
    assert rows[1]["source"] == "sim"
    haiku = rows[2]
    assert haiku["source"] == "genai-prices"
    assert haiku["input_per_mtok"] > 0
    assert haiku["output_per_mtok"] > haiku["input_per_mtok"]
    assert rows[3] == {
        "model": "x:y",
        "input_per_mtok": None,
        "output_per_mtok": None,
        "source": "unknown",
    }
    assert len(rows) == 4


def test_tiered_prices_report_the_base_rate() -> None:
    input_rate, output_rate = PriceBook().rates("anthropic:claude-sonnet-4-5")
    assert input_rate is not None and output_rate is not None
    assert 0 < input_rate < output_rate


def test_lookups_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.cost as cost_module

    calls: list[str] = []
    real = genai_prices.calc_price

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(cost_module, "calc_price", counting)
    prices = PriceBook()
    for _ in range(50):
        prices.price("openai:gpt-4.1-mini", 100, 10)
        prices.known("local:nope")
    assert len(calls) <= 3  # one lookup per model, one price per distinct usage


def test_from_config_adds_the_sim_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True)
    class FakeSimModel:
        name: str
        price_in: float
        price_out: float

    monkeypatch.setattr(
        registry_module, "sim_catalogue", lambda: {"sim-a": FakeSimModel("sim-a", 1.0, 2.0)}
    )
    config = TallyConfig(
        prices={"sim:sim-a": PriceOverride(input_per_mtok=0.5, output_per_mtok=0.5)}
    )
    prices = PriceBook.from_config(config)
    assert prices.source("sim:sim-a") == "override"  # the file wins over the catalogue
    assert PriceBook.from_config(TallyConfig()).rates("sim:sim-a") == (1.0, 2.0)
    assert PriceBook.from_config(TallyConfig(), sim=False).source("sim:sim-a") == "unknown"


def test_genai_prices_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("genai-prices tried the network")

    monkeypatch.setattr(httpx2.Client, "send", no_network)
    monkeypatch.setattr(httpx2, "get", no_network)
    prices = PriceBook()
    assert prices.price("openai:gpt-4o-mini", 1000, 1000) is not None
    snapshot = data_snapshot.get_snapshot()
    assert snapshot.from_auto_update is False  # the bundled snapshot, not a fetched one
