"""The providers a run can use: the built-in ones (``openai``, ``anthropic``, ``ollama``,
``sim``) and those ``tally.toml`` declares, with their keys read once from the environment.

Keys live only inside the provider objects: the registry reports whether a key is set,
never what it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.config import (
    BUILTIN_PROVIDERS,
    SIM_IN_PROCESS_URL,
    ProviderConfig,
    Settings,
    TallyConfig,
)
from core.errors import ConfigError
from core.http import SIM_HOST
from core.panel import ModelSpec
from core.providers.anthropic import AnthropicProvider
from core.providers.base import Provider
from core.providers.openai import OpenAIProvider

SIM_PROVIDER = "sim"
SIM_HINT = "sim:sim-strong"
"""The model suggested when a key is missing: the simulated panel needs none."""


def sim_catalogue() -> Mapping[str, Any]:
    """The simulated panel's models, name -> ``SimModel`` (``price_in``/``price_out`` in USD
    per million tokens). Imported when asked, so providers load without the sim; empty until
    ``core.sim.models`` exists."""
    try:
        from core.sim.models import SIM_MODELS
    except ModuleNotFoundError as exc:
        if exc.name in ("core.sim", "core.sim.models"):
            return {}
        raise
    catalogue: Mapping[str, Any] = SIM_MODELS
    return catalogue


def sim_served() -> Mapping[str, Any]:
    """Every model the sim answers for: its catalogue and the models of its reliability
    scenarios (``core.sim.scenarios``), which are served but not offered in lists."""
    catalogue = sim_catalogue()
    if not catalogue:
        return catalogue
    from core.sim.scenarios import SCENARIO_MODELS

    return {**SCENARIO_MODELS, **catalogue}


def sim_prices() -> dict[str, tuple[float, float]]:
    """``sim:NAME`` -> (input, output) USD per million tokens, for ``PriceBook(extra=...)``."""
    return {
        f"{SIM_PROVIDER}:{name}": (float(model.price_in), float(model.price_out))
        for name, model in sim_served().items()
    }


@dataclass(frozen=True)
class _Entry:
    config: ProviderConfig
    provider: OpenAIProvider | AnthropicProvider
    builtin: bool
    key_is_ascii: bool = True
    """False when the key has a character an HTTP header cannot carry (a pasted curly quote,
    an accent): refused when the provider is chosen, never sent half-encoded."""


class Registry:
    """Providers by name. Build it with ``build_registry``."""

    def __init__(self, entries: Mapping[str, _Entry]) -> None:
        self._entries = dict(entries)

    def __repr__(self) -> str:
        return f"Registry({', '.join(sorted(self._entries))})"

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise ConfigError(f"unknown provider {name!r}: configured are {', '.join(self.names)}")
        return entry

    def provider(self, name: str) -> Provider:
        return self._entry(name).provider

    def config(self, name: str) -> ProviderConfig:
        return self._entry(name).config

    def resolve(self, spec: ModelSpec) -> Provider:
        """The provider for ``spec``, checked as far as can be without a call: the provider
        exists, its key is set, and a sim model is one the sim offers."""
        entry = self._entry(spec.provider)
        env = entry.config.api_key_env
        if env is not None and not entry.provider.has_key:
            raise ConfigError(
                f"{env} is not set: export it, or use the sim panel (--model {SIM_HINT})"
            )
        if env is not None and not entry.key_is_ascii:
            raise ConfigError(
                f"{env} holds a character that is not printable ASCII, which no HTTP header "
                "can carry: copy the key again"
            )
        if spec.provider == SIM_PROVIDER and entry.builtin and spec.model not in sim_served():
            offered = ", ".join(sorted(sim_catalogue())) or "none"
            raise ConfigError(f"unknown sim model {spec.model!r}: the sim offers {offered}")
        return entry.provider

    def key_status(self) -> dict[str, bool | None]:
        """Per provider: whether its key is set; ``None`` when it needs none."""
        return {
            name: None if entry.config.api_key_env is None else entry.provider.has_key
            for name, entry in sorted(self._entries.items())
        }

    @property
    def uses_in_process_sim(self) -> bool:
        """Whether some provider points at the in-process sim (the HTTP client must mount it)."""
        return any(entry.provider.base_url.startswith(SIM_HOST) for entry in self._entries.values())

    def describe(self) -> list[dict[str, Any]]:
        """Rows for the Models page: what each provider is, never its key."""
        rows: list[dict[str, Any]] = []
        for name, entry in sorted(self._entries.items()):
            config = entry.config
            rows.append(
                {
                    "name": name,
                    "kind": config.kind,
                    "base_url": entry.provider.base_url,
                    "api_key_env": config.api_key_env,
                    "key_set": None if config.api_key_env is None else entry.provider.has_key,
                    "max_concurrency": config.max_concurrency,
                    "models": list(config.models),
                    "builtin": entry.builtin,
                }
            )
        return rows


def build_registry(
    config: TallyConfig,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
) -> Registry:
    """Built-in providers, overridden by the configured ones of the same name, with keys read
    from ``env`` (default: the process environment) by variable name."""
    environ: Mapping[str, str] = os.environ if env is None else env
    sim_url = settings.sim_url if settings is not None else None
    entries: dict[str, _Entry] = {}
    for name, builtin in BUILTIN_PROVIDERS.items():
        configured = config.providers.get(name)
        chosen = configured or builtin
        if name == SIM_PROVIDER:
            if sim_url and chosen.base_url == SIM_IN_PROCESS_URL:
                chosen = chosen.model_copy(update={"base_url": sim_url.rstrip("/")})
            if not chosen.models and configured is None:
                chosen = chosen.model_copy(update={"models": sorted(sim_catalogue())})
        entries[name] = _entry(name, chosen, environ, builtin=configured is None)
    for name, provider_config in config.providers.items():
        if name not in BUILTIN_PROVIDERS:
            entries[name] = _entry(name, provider_config, environ, builtin=False)
    return Registry(entries)


def _entry(
    name: str, config: ProviderConfig, environ: Mapping[str, str], *, builtin: bool
) -> _Entry:
    key = environ.get(config.api_key_env, "") if config.api_key_env else ""
    ascii_key = all(" " <= ch <= "~" for ch in key.strip())
    return _Entry(config, _build(name, config, environ), builtin, ascii_key)


def _build(
    name: str, config: ProviderConfig, environ: Mapping[str, str]
) -> OpenAIProvider | AnthropicProvider:
    key = environ.get(config.api_key_env, "").strip() if config.api_key_env else ""
    if config.kind == "anthropic":
        return AnthropicProvider(
            name,
            config.base_url,
            key or None,
            max_concurrency=config.max_concurrency,
            stream=config.stream,
            headers=config.headers,
            timeout_s=config.timeout_s,
        )
    return OpenAIProvider(
        name,
        config.base_url,
        key or None,
        max_concurrency=config.max_concurrency,
        supports_n=config.supports_n,
        stream=config.stream,
        headers=config.headers,
        timeout_s=config.timeout_s,
    )
