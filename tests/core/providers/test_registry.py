"""The registry: built-ins without configuration, overrides from tally.toml, keys by variable
name (never shown), the sim's models, and the rows of the Models page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from core.config import SIM_IN_PROCESS_URL, Settings, TallyConfig, parse_config
from core.errors import ConfigError
from core.panel import ModelSpec
from core.providers import registry as registry_module
from core.providers.anthropic import AnthropicProvider
from core.providers.openai import OpenAIProvider
from core.providers.registry import build_registry, sim_catalogue, sim_prices

OPENAI_KEY = "sk-openai-0123456789abcdef"
LOCAL_KEY = "local-secret-value-42"


@dataclass(frozen=True)
class FakeSimModel:
    name: str
    price_in: float
    price_out: float


@pytest.fixture(autouse=True)
def fake_sim(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeSimModel]:
    catalogue = {
        "sim-strong": FakeSimModel("sim-strong", 3.0, 15.0),
        "sim-fast": FakeSimModel("sim-fast", 0.1, 0.4),
    }
    monkeypatch.setattr(registry_module, "sim_catalogue", lambda: catalogue)
    return catalogue


CONFIG = parse_config(
    """
[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8001/v1"
api_key_env = "LOCAL_API_KEY"
max_concurrency = 3
models = ["my-model"]
supports_n = false
stream = true
timeout_s = 5

[providers.claude]
kind = "anthropic"
base_url = "https://proxy.example/v1"
api_key_env = "CLAUDE_KEY"

[providers.openai]
max_concurrency = 2
"""
)


def test_builtins_exist_without_configuration() -> None:
    registry = build_registry(TallyConfig(), env={})
    assert registry.names == ["anthropic", "ollama", "openai", "sim"]
    openai = registry.provider("openai")
    assert isinstance(openai, OpenAIProvider)
    assert openai.base_url == "https://api.openai.com/v1"
    assert isinstance(registry.provider("anthropic"), AnthropicProvider)
    assert registry.provider("ollama").base_url == "http://127.0.0.1:11434/v1"
    assert registry.provider("sim").base_url == SIM_IN_PROCESS_URL
    assert registry.uses_in_process_sim


def test_configured_providers_and_overrides() -> None:
    registry = build_registry(CONFIG, env={"LOCAL_API_KEY": LOCAL_KEY})
    assert registry.names == ["anthropic", "claude", "local", "ollama", "openai", "sim"]
    local = registry.provider("local")
    assert isinstance(local, OpenAIProvider)
    assert (local.max_concurrency, local.supports_n, local.stream, local.timeout_s) == (
        3,
        False,
        True,
        5.0,
    )
    assert local.has_key
    assert isinstance(registry.provider("claude"), AnthropicProvider)
    openai = registry.provider("openai")
    assert openai.max_concurrency == 2
    assert openai.base_url == "https://api.openai.com/v1"  # kept from the built-in


def test_sim_url_points_the_sim_at_a_server() -> None:
    registry = build_registry(TallyConfig(), Settings(sim_url="http://127.0.0.1:8001/v1/"))
    assert registry.provider("sim").base_url == "http://127.0.0.1:8001/v1"
    assert not registry.uses_in_process_sim


def test_unknown_provider_lists_the_configured_ones() -> None:
    registry = build_registry(CONFIG, env={})
    with pytest.raises(
        ConfigError,
        match=r"^unknown provider 'nope': configured are anthropic, claude, local, ollama, "
        r"openai, sim$",
    ):
        registry.provider("nope")
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        registry.resolve(ModelSpec.parse("nope:model"))


def test_missing_key_names_the_variable_only() -> None:
    registry = build_registry(CONFIG, env={"OPENAI_API_KEY": ""})
    with pytest.raises(ConfigError) as info:
        registry.resolve(ModelSpec.parse("openai:gpt-4.1-mini"))
    assert str(info.value) == (
        "OPENAI_API_KEY is not set: export it, or use the sim panel (--model sim:sim-strong)"
    )
    with pytest.raises(ConfigError, match=r"^CLAUDE_KEY is not set"):
        registry.resolve(ModelSpec.parse("claude:claude-haiku-4-5"))


def test_resolve_with_keys() -> None:
    registry = build_registry(CONFIG, env={"OPENAI_API_KEY": OPENAI_KEY, "CLAUDE_KEY": "c-key"})
    assert registry.resolve(ModelSpec.parse("openai:gpt-4.1-mini")).name == "openai"
    assert registry.resolve(ModelSpec.parse("claude:claude-haiku-4-5")).kind == "anthropic"
    assert registry.resolve(ModelSpec.parse("ollama:llama3.2:3b")).name == "ollama"  # no key


def test_sim_models_are_checked() -> None:
    registry = build_registry(TallyConfig(), env={})
    assert registry.resolve(ModelSpec.parse("sim:sim-strong")).name == "sim"
    with pytest.raises(
        ConfigError, match=r"^unknown sim model 'sim-huge': the sim offers sim-fast, sim-strong$"
    ):
        registry.resolve(ModelSpec.parse("sim:sim-huge"))


def test_a_configured_sim_is_not_checked_against_the_catalogue() -> None:
    config = parse_config('[providers.sim]\nbase_url = "http://10.0.0.5:9000/v1"\n')
    registry = build_registry(config, Settings(sim_url="http://127.0.0.1:1/v1"), env={})
    assert registry.resolve(ModelSpec.parse("sim:anything")).base_url == "http://10.0.0.5:9000/v1"


def test_key_status() -> None:
    registry = build_registry(CONFIG, env={"OPENAI_API_KEY": OPENAI_KEY})
    assert registry.key_status() == {
        "anthropic": False,
        "claude": False,
        "local": False,
        "ollama": None,
        "openai": True,
        "sim": None,
    }


def test_keys_are_read_once_at_build_time() -> None:
    env = {"OPENAI_API_KEY": OPENAI_KEY}
    registry = build_registry(TallyConfig(), env=env)
    env.clear()
    assert registry.key_status()["openai"] is True


def test_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    status = build_registry(TallyConfig()).key_status()
    assert status["anthropic"] is True
    assert status["openai"] is False


def test_describe_rows_never_hold_a_key() -> None:
    registry = build_registry(
        CONFIG, env={"OPENAI_API_KEY": OPENAI_KEY, "LOCAL_API_KEY": LOCAL_KEY}
    )
    rows = {row["name"]: row for row in registry.describe()}
    assert rows["local"] == {
        "name": "local",
        "kind": "openai",
        "base_url": "http://127.0.0.1:8001/v1",
        "api_key_env": "LOCAL_API_KEY",
        "key_set": True,
        "max_concurrency": 3,
        "models": ["my-model"],
        "builtin": False,
    }
    assert rows["sim"]["models"] == ["sim-fast", "sim-strong"]
    assert rows["sim"]["key_set"] is None
    assert rows["openai"]["builtin"] is False  # overridden by the file
    assert rows["ollama"]["builtin"] is True
    text = repr(rows) + repr(registry)
    assert OPENAI_KEY not in text
    assert LOCAL_KEY not in text


def test_repr_of_providers_never_shows_the_key() -> None:
    registry = build_registry(
        CONFIG,
        env={"OPENAI_API_KEY": OPENAI_KEY, "LOCAL_API_KEY": LOCAL_KEY, "CLAUDE_KEY": LOCAL_KEY},
    )
    for name in registry.names:
        text = repr(registry.provider(name))
        assert OPENAI_KEY not in text
        assert LOCAL_KEY not in text
    assert "key=set" in repr(registry.provider("openai"))
    assert "key=none" in repr(registry.provider("ollama"))


def test_sim_prices(fake_sim: dict[str, Any]) -> None:
    prices = sim_prices()
    assert {k: prices[k] for k in ("sim:sim-strong", "sim:sim-fast")} == {
        "sim:sim-strong": (3.0, 15.0),
        "sim:sim-fast": (0.1, 0.4),
    }
    assert prices["sim:uneven-strong"] == (0.1, 0.4)  # the scenarios' models are served too


def test_sim_catalogue_import_failure_other_than_missing_module_propagates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    real_import = builtins.__import__

    def broken(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "core.sim.models":
            raise ModuleNotFoundError("No module named 'numpy_missing'", name="numpy_missing")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ModuleNotFoundError, match="numpy_missing"):
        sim_catalogue()  # the real function: the fixture only replaced the module's name


def test_sim_catalogue_missing_module_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def missing(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "core.sim.models":
            raise ModuleNotFoundError("No module named 'core.sim.models'", name="core.sim.models")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", missing)
    assert sim_catalogue() == {}
