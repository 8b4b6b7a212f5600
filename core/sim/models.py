"""The simulated models: what each one is like, and the default panel that tells the story.

A model is described the way a person would compare real ones: how often it is right on an item
of average difficulty, how long it takes (median and p95 of a long-tailed lognormal), what it
costs, how often it fails, and its quirks (leans to a label, writes a sloppy but readable answer,
or writes something no parser can read). How these numbers turn into answers, and why errors
are correlated across models, is documented in ``core.sim.answers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SKILL_SCALE = 5.0
"""Slope of the logistic link ``P(correct) = logistic(SKILL_SCALE * (skill - difficulty))``."""

AVERAGE_DIFFICULTY = 0.5
"""The difficulty at which a model's ``accuracy`` is stated."""


@dataclass(frozen=True)
class SimModel:
    """One simulated model. Times are in milliseconds at ``time_scale`` 1; prices in USD per
    million tokens.

    ``consistency`` is the share of the model's per-call randomness that is fixed per item (the
    model-item component of ``core.sim.answers``): samples of one model share it, different
    models do not, so a same-model panel errs together more than a mixed one.
    ``bias`` is how far (in skill units) the model leans to ``prefers`` when that label is
    allowed: more accurate when the gold is the preferred label, less when it is not, and its
    wrong answers go to the preferred label.
    ``family`` names models built on one base (fine-tunes of one model, one vendor's sizes):
    models of a family share a family-item component of weight ``family_share``, so they err
    on the same items together, more than the shared item difficulty makes every model do.
    """

    name: str
    accuracy: float
    latency_median_ms: float
    latency_p95_ms: float
    ttft_ms: float
    tokens_out: int
    price_in: float
    price_out: float
    error_rate: float = 0.0
    prefers: str | None = None
    bias: float = 0.0
    sloppy: float = 0.0
    malformed: float = 0.0
    consistency: float = 0.3
    family: str | None = None
    family_share: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < self.accuracy < 1.0:
            raise ValueError(f"{self.name}: accuracy must be in (0, 1), got {self.accuracy}")
        if not 0.0 < self.latency_median_ms <= self.latency_p95_ms:
            raise ValueError(f"{self.name}: need 0 < latency median <= p95")
        for field_name in ("error_rate", "sloppy", "malformed", "consistency", "family_share"):
            value = getattr(self, field_name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{self.name}: {field_name} must be in [0, 1], got {value}")
        if self.family_share and self.family is None:
            raise ValueError(f"{self.name}: a family share needs a family")

    @property
    def skill(self) -> float:
        """The ability on the difficulty axis: the difficulty this model gets right half the
        time. Derived from ``accuracy`` so the two can never disagree."""
        return AVERAGE_DIFFICULTY + math.log(self.accuracy / (1.0 - self.accuracy)) / SKILL_SCALE

    @property
    def latency_sigma(self) -> float:
        """Sigma of the lognormal whose median and 95th percentile are the stated ones."""
        return math.log(self.latency_p95_ms / self.latency_median_ms) / 1.6448536269514722


SIM_MODELS: dict[str, SimModel] = {
    m.name: m
    for m in (
        SimModel(
            name="sim-strong",
            accuracy=0.95,
            latency_median_ms=1800.0,
            latency_p95_ms=4500.0,
            ttft_ms=700.0,
            tokens_out=90,
            price_in=3.0,
            price_out=15.0,
            error_rate=0.01,
            sloppy=0.05,
            consistency=0.35,
            description="accurate, slow and pricey: the one you would escalate to",
        ),
        SimModel(
            name="sim-mid",
            accuracy=0.91,
            latency_median_ms=900.0,
            latency_p95_ms=2400.0,
            ttft_ms=350.0,
            tokens_out=60,
            price_in=0.8,
            price_out=4.0,
            error_rate=0.01,
            sloppy=0.1,
            consistency=0.3,
            description="the middle of the road",
        ),
        SimModel(
            name="sim-fast",
            accuracy=0.86,
            latency_median_ms=300.0,
            latency_p95_ms=900.0,
            ttft_ms=120.0,
            tokens_out=30,
            price_in=0.1,
            price_out=0.4,
            error_rate=0.01,
            sloppy=0.15,
            consistency=0.3,
            description="cheap and fast, weaker",
        ),
        SimModel(
            name="sim-biased",
            accuracy=0.88,
            latency_median_ms=700.0,
            latency_p95_ms=1800.0,
            ttft_ms=250.0,
            tokens_out=45,
            price_in=0.5,
            price_out=1.5,
            error_rate=0.01,
            prefers="regression",
            bias=0.15,
            sloppy=0.1,
            consistency=0.3,
            description="leans to the conservative label 'regression' when it is allowed",
        ),
        SimModel(
            name="sim-flaky",
            accuracy=0.88,
            latency_median_ms=1000.0,
            latency_p95_ms=6000.0,
            ttft_ms=400.0,
            tokens_out=55,
            price_in=0.3,
            price_out=1.2,
            error_rate=0.08,
            sloppy=0.3,
            malformed=0.08,
            consistency=0.3,
            description="errors, long tail and replies no parser can read",
        ),
        SimModel(
            name="sim-oracle",
            accuracy=0.97,
            latency_median_ms=2000.0,
            latency_p95_ms=5000.0,
            ttft_ms=900.0,
            tokens_out=120,
            price_in=10.0,
            price_out=40.0,
            error_rate=0.005,
            consistency=0.4,
            description="the expensive tie-breaker: rarely wrong, slowest and dearest",
        ),
    )
}
"""The catalogue the sim server serves, by name."""

DEFAULT_PANEL: list[str] = ["sim-strong", "sim-fast", "sim-mid", "sim-biased", "sim-flaky"]
"""Five voters, as the handbook defaults to: strong and slow, fast and cheap, middling, biased,
flaky. Together they show a vote, its ties, its cost and its failures."""
