"""Deterministic draws for the simulation: every random number is a hash of what it is about.

Keying each draw on its subject (``seed|model|text|sample``) rather than on the order calls happen
makes a simulated answer independent of scheduling: the same call gives the same answer however
many others run beside it, and no global random state is ever touched.
"""

from __future__ import annotations

import hashlib
import random
from statistics import NormalDist

_NORMAL = NormalDist()


def _digest(parts: tuple[object, ...]) -> int:
    data = "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def unit(*parts: object) -> float:
    """A uniform number in (0, 1) determined by ``parts``."""
    return (_digest(parts) + 0.5) / 2.0**64


def normal(*parts: object) -> float:
    """A standard normal number determined by ``parts``."""
    return _NORMAL.inv_cdf(unit(*parts))


def rng(*parts: object) -> random.Random:
    """A private generator seeded by ``parts``, for a sequence of draws about one subject."""
    return random.Random(_digest(parts))


def normal_cdf(z: float) -> float:
    return _NORMAL.cdf(z)
