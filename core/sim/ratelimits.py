"""Rate limits the way the real providers enforce them: requests per minute and tokens per
minute, each a token bucket that refills continuously, a request refused whole with 429 and
``Retry-After`` when either bucket cannot pay for it.

Every reply, 429s included, carries the state of the buckets as OpenAI sends it
(``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``,
``x-ratelimit-reset-requests`` as a duration like ``1.5s`` or ``6m0s``, the same for tokens) and
as Anthropic does (``anthropic-ratelimit-requests-limit``, ``-remaining``, ``-reset`` as an RFC
3339 time, the same for tokens). A bucket holds ``burst_s`` seconds of its refill: one second
by default, so a burst above the rate is refused at once rather than a minute later. The
limits run on the wall clock, whatever the sim's time scale.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import InputError


def go_duration(seconds: float) -> str:
    """A duration the way OpenAI's reset headers write it: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass
class TokenBucket:
    """``per_minute`` units, refilled continuously, holding at most ``burst_s`` seconds'
    worth (never less than one unit)."""

    per_minute: float
    burst_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    level: float = field(init=False)
    at: float = field(init=False)

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst_s <= 0:
            raise InputError("a rate limit and its burst must be positive")
        self.level, self.at = self.capacity, self.clock()

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * self.burst_s)

    def refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` can be paid (0 when it can now); takes nothing."""
        self.refill()
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass
class RateLimits:
    """A provider's request and token limits; either may be None (not limited)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    burst_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    requests: TokenBucket | None = field(init=False, default=None)
    tokens: TokenBucket | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise InputError("a rate limit needs requests or tokens per minute")
        if self.requests_per_minute is not None:
            self.requests = TokenBucket(self.requests_per_minute, self.burst_s, self.clock)
        if self.tokens_per_minute is not None:
            self.tokens = TokenBucket(self.tokens_per_minute, self.burst_s, self.clock)

    def admit(self, tokens: int) -> float | None:
        """Take one request and ``tokens`` if both buckets can pay; else the seconds to wait
        (a refused request takes nothing)."""
        waits = [self.requests.wait_for(1)] if self.requests else []
        if self.tokens is not None:
            waits.append(self.tokens.wait_for(tokens))
        wait = max(waits)
        if wait > 0:
            return wait
        if self.requests is not None:
            self.requests.take(1)
        if self.tokens is not None:
            self.tokens.take(tokens)
        return None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The buckets' state in OpenAI's and Anthropic's headers."""
        out: list[tuple[str, str]] = []
        now = self.wall()
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            bucket.refill()
            limit, remaining = str(int(bucket.per_minute)), str(max(0, math.floor(bucket.level)))
            reset = bucket.reset_s()
            when = datetime.datetime.fromtimestamp(now + reset, datetime.UTC)
            out += [
                (f"x-ratelimit-limit-{name}", limit),
                (f"x-ratelimit-remaining-{name}", remaining),
                (f"x-ratelimit-reset-{name}", go_duration(reset)),
                (f"anthropic-ratelimit-{name}-limit", limit),
                (f"anthropic-ratelimit-{name}-remaining", remaining),
                (f"anthropic-ratelimit-{name}-reset", when.isoformat(timespec="milliseconds")),
            ]
        return [(k.encode(), v.encode()) for k, v in out]

    @staticmethod
    def retry_after_headers(wait: float) -> list[tuple[bytes, bytes]]:
        """``Retry-After`` in whole seconds (rounded up, as the header allows) and the exact
        wait in ``retry-after-ms``."""
        return [
            (b"retry-after", str(max(1, math.ceil(wait))).encode()),
            (b"retry-after-ms", str(max(1, math.ceil(wait * 1000))).encode()),
        ]
