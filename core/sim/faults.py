"""Fault injection for the sim server: the failures real endpoints produce, on purpose.

A plan is a list of rules ``[MODEL:]KIND:PROBABILITY`` (``"429:0.1"``, ``"sim-flaky:500:0.2"``).
For each request one hashed draw (``seed|model|input|sample``) is compared with the rules that
apply to the model, in order, their probabilities adding up: so a plan is deterministic by seed,
and a retried request (a new sample) gets a new draw, as a retry against a real endpoint would.

The kinds, and what the server does:

- ``429``: Too Many Requests at once, with ``Retry-After`` (seconds, scaled by the time scale;
  a decimal below one second) and OpenAI's ``retry-after-ms``.
- ``500``, ``503``: a server error in OpenAI's error JSON, after the time to first token.
- ``stall``: never answers; the server holds the request until the client gives up.
- ``timeout``: answers, but only after ``TIMEOUT_DELAY_MS`` (or ten times the model's p95).
- ``cut``: a stream that ends without a finish reason and without ``[DONE]`` (a plain reply
  carries ``finish_reason: null`` and half its content).
- ``corrupt``: a stream with a chunk that is not JSON (a plain reply whose body is not JSON).
- ``html``: a 502 with an HTML error page, as a proxy in front of a model sends.
- ``shape``: 200 with JSON of the wrong shape (no ``choices``).

Each simulated model's own ``error_rate`` adds 500s and 503s on top (``core.sim.answers``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast, get_args

from core.errors import InputError
from core.sim.hashing import unit

FaultKind = Literal["429", "500", "503", "stall", "timeout", "cut", "corrupt", "html", "shape"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

RETRY_AFTER_MS = 1000.0
"""What a 429 asks the client to wait, before the time scale."""

TIMEOUT_DELAY_MS = 30_000.0
"""How late a ``timeout`` fault answers, before the time scale (at least ten times the p95)."""

STALL_LIMIT_S = 600.0
"""A stalled request is let go after this long in real seconds, so nothing leaks forever."""


@dataclass(frozen=True)
class FaultRule:
    """``kind`` with ``probability`` per request, for ``model`` only or for every model."""

    kind: FaultKind
    probability: float
    model: str | None = None

    @classmethod
    def parse(cls, spec: str) -> FaultRule:
        """``KIND:PROBABILITY`` or ``MODEL:KIND:PROBABILITY``."""
        parts = spec.strip().rsplit(":", 2)
        if len(parts) == 2:
            model, (kind, prob) = None, parts
        elif len(parts) == 3:
            model, kind, prob = parts
            model = model.strip() or None
        else:
            raise InputError(f"fault must be [MODEL:]KIND:PROBABILITY, got {spec!r}")
        kind = kind.strip().lower()
        if kind not in FAULT_KINDS:
            raise InputError(
                f"unknown fault kind {kind!r} in {spec!r}; kinds are {', '.join(FAULT_KINDS)}"
            )
        try:
            probability = float(prob)
        except ValueError:
            raise InputError(
                f"fault probability must be a number, got {prob!r} in {spec!r}"
            ) from None
        if not 0.0 <= probability <= 1.0:
            raise InputError(f"fault probability must be between 0 and 1, got {spec!r}")
        return cls(kind=cast(FaultKind, kind), probability=probability, model=model)

    def __str__(self) -> str:
        prefix = f"{self.model}:" if self.model else ""
        return f"{prefix}{self.kind}:{self.probability:g}"


@dataclass(frozen=True)
class FaultPlan:
    """The rules of a server, tried in order on one draw per request."""

    rules: tuple[FaultRule, ...] = ()

    @classmethod
    def parse(cls, specs: str | Iterable[str] | None) -> FaultPlan:
        """A plan from rule strings (a single string may hold several, comma-separated)."""
        if specs is None:
            return cls()
        if isinstance(specs, str):
            specs = [specs]
        rules = [
            FaultRule.parse(part) for spec in specs for part in spec.split(",") if part.strip()
        ]
        return cls(rules=tuple(rules))

    def pick(self, model: str, seed: int, key: str, sample: int) -> FaultKind | None:
        """The fault this request gets, if any."""
        if not self.rules:
            return None
        u = unit("fault", seed, model, key, sample)
        total = 0.0
        for rule in self.rules:
            if rule.model is not None and rule.model != model:
                continue
            total += rule.probability
            if u < total:
                return rule.kind
        return None

    def __bool__(self) -> bool:
        return bool(self.rules)
