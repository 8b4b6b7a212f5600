"""Pacing one provider's requests to its rate limits, so the fan-out is not throttled.

A provider that sends rate-limit headers (``core.http.read_rate_limits``) says how many
requests and tokens it allows per minute and how many are left. Once what is left falls to
about what the engine could send at once, requests start no closer together than the limit
allows (``interval``); a 429 whose headers show a spent bucket holds every request to the
provider until its ``Retry-After`` has passed. A 429 without that evidence (an overload, a
random refusal) holds only the call that got it: its retry waits, the others go on.

The throttle window (``ThrottleWindow``) is how the per-provider ceiling reacts: one cut per
window however many 429s land inside it, and the cut ceiling back as soon as the window ends.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio

from core.http import RateLimitInfo

SAFETY = 0.97
"""Pace at this share of the advertised limit: the provider's clock and ours drift a little,
and a request at exactly the limit is refused as often as it is served."""

_TOKEN_EWMA = 0.2
"""Weight of the newest call in the running mean of tokens per request."""


class Pacer:
    """When the next request to one provider may start. Times are on ``clock`` (anyio's by
    default; tests pass a fake one with a matching ``sleep``)."""

    def __init__(
        self,
        headroom: int,
        *,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.headroom = max(1, headroom)  # what the engine may send at once
        self.clock, self.sleep = clock, sleep
        self.interval = 0.0  # seconds between starts while pacing; 0: not pacing
        self.next_start = -math.inf
        self.blocked_until = -math.inf
        self.tokens_per_request: float | None = None

    def observe(self, info: RateLimitInfo | None, tokens: int | None = None) -> None:
        """A reply arrived with these headers (None: it had none) and used ``tokens``."""
        if tokens:
            mean = self.tokens_per_request
            self.tokens_per_request = (
                float(tokens) if mean is None else mean + _TOKEN_EWMA * (tokens - mean)
            )
        if info is None:
            return
        self.interval = max(
            self._interval(info.requests_limit, info.requests_remaining, 1.0),
            self._interval(info.tokens_limit, info.tokens_remaining, self.tokens_per_request),
        )
        if info.requests_limit is None and info.requests_remaining == 0:
            self.block(info.requests_reset_s)  # no rate to pace by: wait for the reset

    def _interval(self, limit: float | None, remaining: float | None, cost: float | None) -> float:
        """Seconds between starts one limit asks for; 0 while plenty of it is left."""
        if not limit or cost is None:
            return 0.0
        if remaining is not None and remaining > cost * self.headroom:
            return 0.0
        return cost * 60.0 / (limit * SAFETY)

    def block(self, seconds: float | None) -> None:
        """Hold every request until ``seconds`` from now."""
        if seconds is not None and seconds > 0:
            self.blocked_until = max(self.blocked_until, self.clock() + seconds)

    def throttled(self, retry_after: float | None, info: RateLimitInfo | None) -> None:
        """A 429. Its headers showing a spent bucket hold every request for ``retry_after``;
        without that evidence only the call that got it waits (its retry does)."""
        if info is not None:
            self.observe(info)
            spent = info.requests_remaining == 0 or (
                info.tokens_remaining is not None
                and info.tokens_remaining < (self.tokens_per_request or 1.0)
            )
            if spent:
                self.block(retry_after if retry_after is not None else self.interval)

    async def wait(self) -> None:
        """Return when the next request may start, keeping its place in the pace."""
        while True:
            now = self.clock()
            start = max(now, self.next_start, self.blocked_until)
            self.next_start = start + self.interval
            if start <= now:
                return
            await self.sleep(start - now)
            if self.blocked_until <= self.clock():
                return


class ThrottleWindow:
    """At most one cut of the ceiling per throttle window, the ceiling back when it ends.

    A 429 with ``Retry-After`` opens a window that long, unless one is open already (the
    429s of calls in flight at the cut say nothing new). ``cut`` says whether to cut now;
    ``passed`` whether an open window has just ended, so the ceiling can be restored.
    """

    def __init__(self, clock: Callable[[], float] = anyio.current_time) -> None:
        self.clock = clock
        self.ends: float | None = None  # None: no window open

    def cut(self, retry_after: float) -> bool:
        now = self.clock()
        if self.ends is not None and now < self.ends:
            return False
        self.ends = now + retry_after
        return True

    def passed(self) -> bool:
        if self.ends is None or self.clock() < self.ends:
            return False
        self.ends = None
        return True
