"""Which failures are tried again, and how long to wait between attempts.

Exponential backoff with full jitter (a random wait between 0 and the exponential cap), so a
fan-out that hits a rate limit together does not come back together. A server's
``Retry-After`` is a floor: waiting less would only be refused again.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from core.errors import ProviderError

T = TypeVar("T")

RETRY_AFTER_CAP_S = 120.0
"""Longest ``Retry-After`` that is waited out. A server asking for more (a spent daily quota,
a long outage) will not be ready within any sensible call deadline, so the call fails at once
with the server's error instead of holding a slot for minutes."""


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` counts the first attempt: 4 means one call and up to three retries."""

    max_attempts: int = 4
    base_s: float = 0.5
    max_s: float = 30.0
    jitter: bool = True
    retry_after_cap_s: float = RETRY_AFTER_CAP_S

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("backoff times cannot be negative")


def backoff_delay(
    policy: RetryPolicy,
    attempt: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first attempt).

    The exponential part is ``base_s * 2**(attempt-1)`` capped at ``max_s``, drawn uniformly
    from ``[0, cap]`` when ``jitter`` is on. ``retry_after`` raises the wait to at least that,
    even past ``max_s`` (the server knows best), but never past ``retry_after_cap_s``.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    cap = min(policy.max_s, policy.base_s * 2.0 ** min(attempt - 1, 62))
    delay = (rng or random).uniform(0.0, cap) if policy.jitter else cap
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, policy.retry_after_cap_s)
    return delay


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, ProviderError, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    rng: random.Random | None = None,
    deadline: Callable[[], float | None] = lambda: None,
    clock: Callable[[], float] = anyio.current_time,
) -> tuple[T, int]:
    """Run ``fn`` until it succeeds; return its result and how many retries it took.

    Only a ``ProviderError`` with ``retryable`` set is tried again, at most
    ``policy.max_attempts`` attempts in all, and not when the server's ``Retry-After`` is
    beyond ``retry_after_cap_s``; then the last error is raised as it was. A 429 that says
    when to come back (``Retry-After``) is not counted: a provider pacing its clients is
    waited for as long as it asks (within the call's deadline), each wait at least its word.
    Any other exception, cancellation included, passes straight through. ``on_retry(attempt,
    error, delay)`` is told before each wait (the engine turns it into a ``call_retry`` event).

    ``deadline()`` is when the whole call must end, on ``clock`` (``None``: no deadline yet).
    A wait that would pass it is not slept: the call ends at once as a timeout that says so,
    rather than sleeping past its deadline to try once more.
    """
    attempt = 1
    failures = 0  # failed attempts that count toward max_attempts
    while True:
        try:
            return await fn(), attempt - 1
        except ProviderError as error:
            throttled = error.status == 429 and error.retry_after is not None
            failures += not throttled
            if not error.retryable or failures >= policy.max_attempts:
                raise
            if error.retry_after is not None and error.retry_after > policy.retry_after_cap_s:
                raise
            if (
                throttled
            ):  # the server's word, spread a little so the fan-out does not return at once
                assert error.retry_after is not None
                spread = 0.1 * (rng or random).random() if policy.jitter else 0.0
                delay = min(error.retry_after * (1 + spread), policy.retry_after_cap_s)
            else:
                delay = backoff_delay(policy, failures, error.retry_after, rng)
            end = deadline()
            if end is not None and clock() + delay >= end:
                raise ProviderError(
                    f"{error}; giving up: a retry in {delay:.1f}s would pass the call's deadline",
                    status=error.status,
                    timeout=True,
                    billed=error.billed,
                ) from error
            if on_retry is not None:
                on_retry(attempt, error, delay)
        await sleep(delay)
        attempt += 1
