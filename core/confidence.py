"""Confidence: the posterior probability that a decision's winner is right.

Without a fitted reliability model the votes alone say it. The winner's rate against the
strongest other answer's has a Beta(1 + a, 1 + b) posterior (a the winner's votes, b the
runner-up's, uniform prior), and the confidence is P(the winner's rate is the higher one). The
early-stop replay's Beta rule uses the same number. A 3-2 split is 0.66, 4-1 is 0.89, 5-0 is
0.98. Where Dawid–Skene was fitted (``core.analysis.reliability``) its posterior is used instead.

Pure integer arithmetic: exact, no numpy or scipy at import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache

from core.errors import InputError


@lru_cache(maxsize=65536)
def leader_posterior(leader: int, runner_up: int) -> float:
    """P(the leader's rate beats the runner-up's) under a Beta(1 + a, 1 + b) posterior.

    The closed form for whole counts: for X ~ Beta(a + 1, b + 1),
    P(X > 1/2) = P(Binomial(a + b + 1, 1/2) <= a).
    """
    if leader < 0 or runner_up < 0:
        raise InputError("vote counts cannot be negative")
    trials = leader + runner_up + 1
    favourable = sum(math.comb(trials, j) for j in range(leader + 1))
    outcomes: int = 2**trials
    return favourable / outcomes


def vote_confidence(winner: str, counts: Mapping[str, int]) -> float:
    """The Beta confidence of ``winner`` given every answer's vote count."""
    rival = max((c for label, c in counts.items() if label != winner), default=0)
    return leader_posterior(counts.get(winner, 0), rival)


def describe(confidence: float | None) -> str:
    """The confidence in the words the CLI and the decision banner use."""
    if confidence is None:
        return "confidence: none (no winner from the votes)"
    return f"confidence {confidence:.2f} (the chance the winner is right)"
