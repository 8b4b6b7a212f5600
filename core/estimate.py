"""What a piece of work will spend, told before it runs: calls, estimated cost, expected time.

Every form that spends (a run, a batch, a curve draw, a sweep) shows this before anything is
called, so nobody learns the price of a batch from its bill. The numbers are estimates and say
so: prompt tokens are counted from the rendered messages at about four characters a token,
output tokens from what the model is known to write (the sim catalogue) or what the answer
format needs; prices come from the same price book that bills the calls (``core.cost``), and a
model with no known price makes the estimate ``unknown``, never $0. Samples one endpoint draws
in one request with ``n`` bill the prompt once, exactly as the engine sends them.

The expected time comes from the ceilings: the calls' model-seconds spread over the global
concurrency ceiling and over each provider's own, whichever is tighter, and never less than the
slowest single call. A model whose latency is unknown (never called, not simulated) leaves the
time unknown.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from core.cost import PriceBook
from core.panel import ModelSpec
from core.policy import Aggregation
from core.spec import RunSpec

CHARS_PER_TOKEN = 4.0
"""The usual rule of thumb for English text with GPT- and Claude-style tokenisers."""

OUTPUT_TOKENS = {"label": 12, "yesno": 8, "number": 12, "json": 60, "text": 300}
"""Output tokens a reply in each answer format takes, for a model nothing is known about."""

LARGE_COST_USD = 1.0
LARGE_CALLS = 500
"""A spend at or above either asks the user to confirm before it starts."""


@dataclass(frozen=True)
class SpendEstimate:
    """The planned spend of some runs. ``calls`` is every planned call (the panel's slots of
    every run); ``requests`` counts samples drawn together once. ``extra_calls`` and
    ``extra_cost_usd`` are what the tie-break chain may add at most (every run open)."""

    runs: int
    calls: int
    requests: int
    tokens_in: int
    tokens_out: int
    cost_usd: float | None  # None: some model's price is unknown
    known_cost_usd: float
    unknown_models: tuple[str, ...]
    extra_calls: int
    extra_cost_usd: float | None
    seconds: float | None  # None: some model's latency is unknown
    ceiling: int
    slow_models: tuple[str, ...] = ()  # models whose latency is unknown

    @property
    def large(self) -> bool:
        """Whether this spend should be confirmed before it starts."""
        cost = self.known_cost_usd + (self.extra_cost_usd or 0.0)
        return cost >= LARGE_COST_USD or self.calls + self.extra_calls >= LARGE_CALLS

    def describe(self, money: Callable[[float | None], str]) -> str:
        """One line: ``25 calls in 5 requests · about $0.0031 · about 2.1 s at 8 at a time``."""
        calls = f"{self.calls} call{'s' if self.calls != 1 else ''}"
        if self.runs > 1:
            calls += f" over {self.runs} runs"
        if self.requests != self.calls:
            calls += f" in {self.requests} request{'s' if self.requests != 1 else ''}"
        if self.cost_usd is not None:
            cost = f"about {money(self.cost_usd)}"
        elif self.known_cost_usd:
            cost = f"≥ {money(self.known_cost_usd)} + unknown ({', '.join(self.unknown_models)})"
        else:
            cost = f"cost unknown (no price for {', '.join(self.unknown_models)})"
        if self.seconds is None:
            time = f"time unknown (no latency known for {', '.join(self.slow_models)})"
        else:
            time = f"about {duration(self.seconds)} at {self.ceiling} at a time"
        parts = [calls, cost, time]
        if self.extra_calls:
            extra = money(self.extra_cost_usd) if self.extra_cost_usd is not None else "unknown"
            parts.append(f"the tie-break chain may add up to {self.extra_calls} calls ({extra})")
        return " · ".join(parts)


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 5 s``, ``1 h 2 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def prompt_tokens(spec: RunSpec, text: str) -> int:
    """The prompt of one call, counted from the messages the engine sends."""
    chars = sum(len(m["content"]) for m in spec.task.render(text))
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class ModelHints:
    """What is known about a model before calling it: output tokens per reply and latency."""

    tokens_out: int | None = None
    latency_s: float | None = None


def hints_for(
    models: Sequence[str],
    *,
    sim: Mapping[str, ModelHints],
    history_ms: Mapping[str, Sequence[float]],
) -> dict[str, ModelHints]:
    """Each model's hints: the sim catalogue's for a simulated model, else the median latency
    of its stored ``ok`` calls (``history_ms``), else nothing."""
    out: dict[str, ModelHints] = {}
    for model in models:
        if model in sim:
            out[model] = sim[model]
        elif history_ms.get(model):
            out[model] = ModelHints(latency_s=statistics.median(history_ms[model]) / 1000)
        else:
            out[model] = ModelHints()
    return out


def estimate(
    spec: RunSpec,
    inputs: Sequence[str],
    *,
    prices: PriceBook,
    supports_n: Callable[[ModelSpec], bool],
    provider_of: Callable[[ModelSpec], tuple[str, int]],
    hints: Mapping[str, ModelHints],
    ceiling: int,
) -> SpendEstimate:
    """The spend of running ``spec`` over ``inputs``, one run each.

    ``supports_n`` says whether a model's endpoint draws several samples in one request;
    ``provider_of`` gives a model's provider name and its own concurrency ceiling; ``hints``
    what is known of each model; ``ceiling`` the global concurrency ceiling."""
    policy = spec.policy
    fmt_out = OUTPUT_TOKENS.get(spec.task.format.kind, 12)
    grouped = policy.aggregation != Aggregation.FASTEST  # fastest keeps every sample apart
    per_model: dict[str, list[int]] = defaultdict(list)  # model -> sample counts per request
    specs: dict[str, ModelSpec] = {}
    for slot in spec.panel.slots():
        specs[slot.model.name] = slot.model
        per_model[slot.model.name].append(1)
    requests: dict[str, list[int]] = {}
    for name, ones in per_model.items():
        model = specs[name]
        together = grouped and supports_n(model) and model.params.get("temperature") != 0
        requests[name] = [len(ones)] if together else ones

    unknown: set[str] = set()
    slow: set[str] = set()
    known_cost = 0.0
    tokens_in = tokens_out = 0
    model_seconds: dict[str, float] = defaultdict(float)  # provider -> request-seconds
    provider_ceiling: dict[str, int] = {}
    longest = 0.0
    prompts = [prompt_tokens(spec, text) for text in inputs]

    def out_tokens(name: str) -> int:
        hint = hints.get(name, ModelHints())
        cap = specs[name].params.get("max_tokens") if name in specs else None
        tokens = hint.tokens_out if hint.tokens_out is not None else fmt_out
        return min(tokens, cap) if isinstance(cap, int) and cap > 0 else tokens

    def bill(name: str, prompt: int, samples: int) -> float | None:
        return prices.price(name, prompt, out_tokens(name) * samples)

    for name, sizes in requests.items():
        provider, own = provider_of(specs[name])
        provider_ceiling[provider] = own
        latency = hints.get(name, ModelHints()).latency_s
        if latency is None:
            slow.add(name)
        for prompt in prompts:
            for samples in sizes:
                tokens_in += prompt
                tokens_out += out_tokens(name) * samples
                cost = bill(name, prompt, samples)
                if cost is None:
                    unknown.add(name)
                else:
                    known_cost += cost
                if latency is not None:
                    model_seconds[provider] += latency
                    longest = max(longest, latency)

    extra_calls = 0
    extra_cost: float | None = 0.0
    for branch in policy.tie_breaks:
        if branch.kind == "expand" and branch.k:
            branch_models = [s.model for s in spec.panel.slots(start=spec.panel.n, count=branch.k)]
        elif branch.kind == "escalate" and branch.model is not None:
            branch_models = [branch.model]
        else:
            continue
        for model in branch_models:
            specs.setdefault(model.name, model)
            extra_calls += len(prompts)
            for prompt in prompts:
                cost = bill(model.name, prompt, 1)
                extra_cost = None if cost is None or extra_cost is None else extra_cost + cost

    seconds: float | None = None
    if not slow:
        total = sum(model_seconds.values())
        bounds = [total / max(1, ceiling), longest]
        bounds += [s / max(1, min(ceiling, provider_ceiling[p])) for p, s in model_seconds.items()]
        seconds = max(bounds)
    n_requests = sum(len(sizes) for sizes in requests.values()) * len(prompts)
    return SpendEstimate(
        runs=len(prompts),
        calls=spec.panel.n * len(prompts),
        requests=n_requests,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=None if unknown else known_cost,
        known_cost_usd=known_cost,
        unknown_models=tuple(sorted(unknown)),
        extra_calls=extra_calls,
        extra_cost_usd=extra_cost,
        seconds=seconds,
        ceiling=ceiling,
        slow_models=tuple(sorted(slow)),
    )


def combine(parts: Sequence[SpendEstimate]) -> SpendEstimate:
    """Work done one part after another (a sweep's levels): counts and costs add up, and so do
    the times; an unknown in any part stays unknown."""
    first = parts[0]
    unknown = tuple(sorted({m for p in parts for m in p.unknown_models}))
    slow = tuple(sorted({m for p in parts for m in p.slow_models}))
    known = sum(p.known_cost_usd for p in parts)
    extra = [p.extra_cost_usd for p in parts]
    seconds = [p.seconds for p in parts]
    return SpendEstimate(
        runs=sum(p.runs for p in parts),
        calls=sum(p.calls for p in parts),
        requests=sum(p.requests for p in parts),
        tokens_in=sum(p.tokens_in for p in parts),
        tokens_out=sum(p.tokens_out for p in parts),
        cost_usd=None if unknown else known,
        known_cost_usd=known,
        unknown_models=unknown,
        extra_calls=sum(p.extra_calls for p in parts),
        extra_cost_usd=None if None in extra else sum(e or 0.0 for e in extra),
        seconds=None if None in seconds else sum(s or 0.0 for s in seconds),
        ceiling=max(p.ceiling for p in parts) if parts else first.ceiling,
        slow_models=slow,
    )


def time_left(started_at: float | None, done: int, total: int, now: float) -> float | None:
    """Seconds a job still needs at the pace it has kept so far; None before its first unit."""
    if started_at is None or done <= 0 or now <= started_at:
        return None
    return max(0, total - done) * (now - started_at) / done
