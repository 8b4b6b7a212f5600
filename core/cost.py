"""What a call cost, from the tokens the provider reported.

Prices come from, in order: a ``[prices."provider:model"]`` override in ``tally.toml``, the
sim catalogue (``extra``), then ``genai-prices``. A model none of them knows has an unknown
price: ``None``, never 0, so a total over unknown calls is not quietly too low.

genai-prices is used from the snapshot bundled with the installed package. It only fetches
newer prices when ``genai_prices.UpdatePrices`` is started, which Tally never does, so pricing
never touches the network and a run costs the same today as when it is re-priced tomorrow
with the same package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from genai_prices import Usage, calc_price

from core.config import PriceOverride, TallyConfig
from core.result import CallResult, RunResult

if TYPE_CHECKING:
    from core.store import RunRow

PriceSource = Literal["override", "sim", "genai-prices", "unknown"]

_MTOK = 1_000_000


@dataclass(frozen=True)
class _Rates:
    source: PriceSource
    input_per_mtok: float | None = None  # flat rates (overrides, sim)
    output_per_mtok: float | None = None
    provider_id: str | None = None  # genai-prices lookup, when source is "genai-prices"
    model_ref: str = ""


class PriceBook:
    """Prices per model named ``provider:model``.

    Override keys may also be ``provider:*`` (every model of a provider, e.g. a local Ollama
    at 0) or a bare model id (that model under any provider). Lookups are cached per model,
    and prices per (model, tokens), since pricing is on every call's path.
    """

    def __init__(
        self,
        overrides: Mapping[str, PriceOverride] | None = None,
        extra: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self._overrides = {
            key: (float(p.input_per_mtok), float(p.output_per_mtok))
            for key, p in (overrides or {}).items()
        }
        self._extra = {key: (float(i), float(o)) for key, (i, o) in (extra or {}).items()}
        self._rates = lru_cache(maxsize=1024)(self._find_rates)
        self._price = lru_cache(maxsize=8192)(self._compute)

    @classmethod
    def from_config(cls, config: TallyConfig, *, sim: bool = True) -> PriceBook:
        """Overrides from ``config`` and, with ``sim``, the sim catalogue's prices."""
        extra: dict[str, tuple[float, float]] = {}
        if sim:
            from core.providers.registry import sim_prices

            extra = sim_prices()
        return cls(config.prices, extra)

    def _find_rates(self, model: str) -> _Rates:
        provider, sep, model_id = model.partition(":")
        if not sep:
            provider, model_id = "", model
        for key in (model, f"{provider}:*", model_id):
            if key in self._overrides:
                rate_in, rate_out = self._overrides[key]
                return _Rates("override", rate_in, rate_out)
        if model in self._extra:
            rate_in, rate_out = self._extra[model]
            return _Rates("sim", rate_in, rate_out)
        provider_id = provider or None
        try:
            calc_price(Usage(input_tokens=0, output_tokens=0), model_id, provider_id=provider_id)
        except LookupError:
            return _Rates("unknown")
        return _Rates("genai-prices", provider_id=provider_id, model_ref=model_id)

    def _compute(
        self,
        model: str,
        tokens_in: int | None,
        tokens_out: int | None,
        cached: int | None,
        cache_write: int | None,
    ) -> float | None:
        rates = self._rates(model)
        if rates.source == "unknown":
            return None
        if rates.source != "genai-prices":
            # flat rates know no cache discount: the whole prompt at the input rate
            total = 0.0
            if tokens_in is not None and rates.input_per_mtok is not None:
                total += tokens_in * rates.input_per_mtok / _MTOK
            if tokens_out is not None and rates.output_per_mtok is not None:
                total += tokens_out * rates.output_per_mtok / _MTOK
            return total
        prompt = tokens_in or 0
        read = min(cached or 0, prompt)
        written = min(cache_write or 0, prompt - read)
        try:
            result = calc_price(
                Usage(
                    input_tokens=prompt,
                    cache_read_tokens=read,
                    cache_write_tokens=written,
                    output_tokens=tokens_out or 0,
                ),
                rates.model_ref,
                provider_id=rates.provider_id,
            )
        except LookupError:
            return None
        return float(result.total_price)

    def price(
        self,
        model: str,
        tokens_in: int | None,
        tokens_out: int | None,
        *,
        cached: int | None = None,
        cache_write: int | None = None,
    ) -> float | None:
        """USD for one attempt, or ``None`` when the model's price or all its tokens are unknown.

        ``tokens_in`` is the whole prompt; ``cached`` and ``cache_write`` are the parts of it
        read from and written to the provider's prompt cache, priced at their own rates. An
        attempt cut short may know one side only (the prompt, before any output was counted,
        or streamed output before the usage chunk): the known side is priced, so a cancelled
        call shows at least what it is known to have cost.
        """
        if tokens_in is None and tokens_out is None:
            return None
        return self._price(model, tokens_in, tokens_out, cached, cache_write)

    def known(self, model: str) -> bool:
        return self._rates(model).source != "unknown"

    def source(self, model: str) -> PriceSource:
        return self._rates(model).source

    def rates(self, model: str) -> tuple[float | None, float | None]:
        """(input, output) USD per million tokens; for tiered prices, the base tier."""
        rates = self._rates(model)
        if rates.source != "genai-prices":
            return rates.input_per_mtok, rates.output_per_mtok
        try:
            result = calc_price(
                Usage(input_tokens=0, output_tokens=0),
                rates.model_ref,
                provider_id=rates.provider_id,
            )
        except LookupError:
            return None, None
        prices = result.model_price
        return _per_mtok(getattr(prices, "input_mtok", None)), _per_mtok(
            getattr(prices, "output_mtok", None)
        )

    def table(self, models: Iterable[str]) -> list[dict[str, Any]]:
        """One row per model for the dashboard: its rates and where they come from."""
        rows: list[dict[str, Any]] = []
        for model in dict.fromkeys(models):
            rate_in, rate_out = self.rates(model)
            rows.append(
                {
                    "model": model,
                    "input_per_mtok": rate_in,
                    "output_per_mtok": rate_out,
                    "source": self.source(model),
                }
            )
        return rows


def _per_mtok(value: Any) -> float | None:
    """A genai-prices rate: a ``Decimal``, or tiered prices whose base applies to small calls."""
    if isinstance(value, Decimal | int | float):
        return float(value)
    base = getattr(value, "base", None)
    if isinstance(base, Decimal | int | float):
        return float(base)
    return None


@dataclass(frozen=True)
class CostTotal:
    """What a set of calls cost: the known part, and how many calls cost an unknown amount.

    A call's cost is unknown when its price is, or when one of its attempts may have been
    billed without the provider saying for how much (a reply cut on the way, a timeout, a
    cancellation). Its known part still counts, so a total reads "at least $x"."""

    known_usd: float = 0.0
    unknown_calls: int = 0

    @property
    def usd(self) -> float | None:
        """The whole cost, or ``None`` when any call's is unknown (never a partial sum)."""
        return self.known_usd if self.unknown_calls == 0 else None


def cost_total(calls: Iterable[CallResult]) -> CostTotal:
    """Sum the calls' costs. A call with no cost and no known part consumed nothing known:
    refused before any usage (stored before calls kept their known part), it adds nothing."""
    known, unknown = 0.0, 0
    for call in calls:
        if call.cost_usd is not None:
            known += call.cost_usd
        elif call.cost_known_usd is not None or call.tokens_in or call.tokens_out:
            known += call.cost_known_usd or 0.0
            unknown += 1
    return CostTotal(known, unknown)


SIMULATED = " (simulated)"
"""Marks a cost priced from the sim catalogue: what a real panel would charge, not a bill."""


def dollars(value: float | None) -> str:
    """Dollars with enough digits for fractions of a cent; ``unknown`` when no price is known."""
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    if abs(value) < 0.000001:
        return "<$0.000001"
    whole, _, cents = f"{value:.6f}".rstrip("0").partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def is_simulated(models: Iterable[str]) -> bool:
    """Whether the models are priced from the sim catalogue (named ``sim:...``)."""
    from core.providers.registry import SIM_PROVIDER

    return any(m.partition(":")[0] == SIM_PROVIDER for m in models)


def describe_cost(
    usd: float | None,
    known_usd: float | None = None,
    unknown: int = 0,
    *,
    money: Callable[[float | None], str] = dollars,
    simulated: bool = False,
) -> str:
    """How a cost reads everywhere Tally shows one: ``$0.0042`` when it is known,
    ``≥ $0.0042 + unknown`` when only part of it is, ``unknown`` when none of it is; never a
    partial sum shown as the total, never ``$0`` for an unknown. ``unknown`` counts the calls
    (or runs) of unknown cost; ``money`` formats dollars the way the caller shows them; a
    ``simulated`` cost (sim prices, :func:`is_simulated`) says so where there is a sum."""
    if usd is not None and not unknown:
        text = money(usd)
    elif known_usd:
        text = f"≥ {money(known_usd)} + unknown"
    else:
        return "unknown"
    return text + SIMULATED if simulated else text


def call_cost_text(call: CallResult, money: Callable[[float | None], str] = dollars) -> str:
    """One call's cost as :func:`describe_cost` words it. A call table labels its cost column
    simulated once (:func:`is_simulated` over its calls), not every cell."""
    return describe_cost(call.cost_usd, call.cost_known_usd, money=money)


def run_cost_text(
    run: RunResult | RunRow, money: Callable[[float | None], str] = dollars, *, label: bool = True
) -> str:
    """A run's cost, live or stored, as :func:`describe_cost` words it (``-`` while a stored
    run is still running). ``label=False`` leaves the simulated label to the caller (a metric
    that names it in its title)."""
    if isinstance(run, RunResult):
        models = run.spec.slot_names
    elif run.status == "running":
        return "-"
    else:
        models = run.panel
    return describe_cost(
        run.cost_usd,
        run.cost_known_usd,
        run.cost_unknown_calls,
        money=money,
        simulated=label and is_simulated(models),
    )


def batch_cost_text(
    summary: Mapping[str, Any], money: Callable[[float | None], str] = dollars
) -> str:
    """A batch's cost from its counts (:meth:`Store.batch_counts`, ``simulated_cost`` from
    :func:`core.batch.batch_summary`) as :func:`describe_cost` words it."""
    return describe_cost(
        summary["cost_usd"],
        summary["cost_known_usd"],
        summary["unknown_cost_runs"],
        money=money,
        simulated=bool(summary.get("simulated_cost")),
    )
