"""Ceilings and pace shared by every worker of a team, kept in PostgreSQL.

In one process the engine's limiters (anyio ``CapacityLimiter``\\ s and ``core.pacing.Pacer``)
hold the global and per-provider ceilings and a provider's rate-limit pace. N worker
processes, each with its own, would send N times what the provider allows. ``SharedLimits``
keeps both in the database every worker uses, on top of each process's own limiters (which
stay the default, and still bound what one process sends):

- **Ceilings.** A ceiling of C is C advisory-lock slots, ``pg_try_advisory_lock(scope, slot)``
  for slot 0..C-1. A call holds one slot of its provider and one of the global ceiling while
  it runs. Session locks end with their session: a worker killed mid-call gives its slots back
  as soon as the server sees its connection close, with no lease to wait out.
- **Pace.** One row per provider (``limiter_pace``): the interval its rate-limit headers ask
  for, the next start and a hold until a spent bucket's ``Retry-After`` has passed, all on the
  database server's clock (so hosts' clocks need not agree). Every request start claims its
  start time with one ``UPDATE .. RETURNING``, so the starts of all workers together are
  spaced as one process's would be.

Advisory locks are session state: the connection must be a direct one (or a session-mode
pooler), not a transaction-mode pooler such as PgBouncer's default.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, NamedTuple, Protocol

import anyio

from core.errors import StoreError
from core.pacing import Pacer

GLOBAL = "global"
"""The scope of the ceiling over every provider."""

POLL_S = 0.02
"""How often a process waiting for a slot held by other processes asks again."""


class Limits(Protocol):
    """Where the engine's ceilings and pace live beyond its own process."""

    def slot(self, scope: str, ceiling: int) -> AbstractAsyncContextManager[None]:
        """Hold one of ``ceiling`` slots of ``scope`` (a provider's name or ``GLOBAL``)."""
        ...

    def pacer(self, provider: str, headroom: int) -> Pacer:
        """The pacer of ``provider``'s requests."""
        ...


class LocalLimits:
    """The default: this process's limiters are the whole story."""

    def slot(self, scope: str, ceiling: int) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    def pacer(self, provider: str, headroom: int) -> Pacer:
        return Pacer(headroom)


def lock_scope(scope: str) -> int:
    """The first key of a scope's advisory locks: a stable 31-bit hash of its name."""
    return zlib.crc32(f"tally:{scope}".encode()) & 0x7FFFFFFF


_TAKE = """
SELECT s FROM generate_series(0, %(n)s - 1) AS s
WHERE CASE WHEN s = ANY(%(held)s) THEN false ELSE pg_try_advisory_lock(%(key)s, s) END
LIMIT 1
"""
# the CASE keeps a slot this session holds from being locked again: advisory locks stack
# within a session, so pg_try_advisory_lock would say yes to a slot already in use here

_ENSURE_PACE = """
INSERT INTO limiter_pace (provider, interval_s, next_start, blocked_until)
VALUES (%(provider)s, 0, 0, 0) ON CONFLICT (provider) DO NOTHING
"""

_CLAIM_START = """
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)
UPDATE limiter_pace AS p SET
    interval_s = coalesce(%(interval)s, p.interval_s),
    blocked_until = greatest(p.blocked_until, now.t + %(hold)s),
    next_start = greatest(now.t, p.next_start, p.blocked_until, now.t + %(hold)s)
        + coalesce(%(interval)s, p.interval_s)
FROM now WHERE p.provider = %(provider)s
RETURNING p.next_start - p.interval_s, now.t
"""
# RETURNING sees the new row: the start claimed is the new next start less the interval


class Claim(NamedTuple):
    """A request start claimed on the database server's clock, and that clock at the claim."""

    start: float
    now: float

    @property
    def delay(self) -> float:
        return max(0.0, self.start - self.now)


class SharedLimits:
    """Ceilings and pace in PostgreSQL, shared by every process given the same database.

    One connection per process (advisory locks belong to it); open with :meth:`connect`."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn  # psycopg.AsyncConnection, autocommit
        self.held: dict[int, set[int]] = {}
        self._turn: dict[int, anyio.Lock] = {}
        self._freed: dict[int, anyio.Event] = {}
        self._paces: set[str] = set()

    @classmethod
    @asynccontextmanager
    async def connect(cls, database_url: str) -> AsyncIterator[SharedLimits]:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(database_url)
        if url.get_backend_name() != "postgresql":
            raise StoreError("shared limits need a PostgreSQL store, not " + url.drivername)
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach the store for shared limits: {exc}") from exc
        async with conn:
            yield cls(conn)

    @asynccontextmanager
    async def slot(self, scope: str, ceiling: int) -> AsyncIterator[None]:
        key = lock_scope(scope)
        got = await self._take(key, max(1, ceiling))
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self._give(key, got)

    async def _take(self, key: int, ceiling: int) -> int:
        """Wait for a free slot of ``key``: this process's waiters one at a time, in order,
        asking again when one of this process's slots is given back or every ``POLL_S``."""
        held = self.held.setdefault(key, set())
        async with self._turn.setdefault(key, anyio.Lock()):
            while True:
                freed = self._freed[key] = anyio.Event()
                if len(held) < ceiling:
                    params = {"n": ceiling, "held": list(held), "key": key}
                    # shielded: psycopg closes a connection whose query is cancelled, and
                    # every slot and pace of this process lives on it. A slot taken here
                    # under a pending cancel is given back by ``slot``'s ``finally``.
                    with anyio.CancelScope(shield=True):
                        row = await (await self.conn.execute(_TAKE, params)).fetchone()
                    if row is not None:
                        held.add(row[0])
                        return int(row[0])
                with anyio.move_on_after(POLL_S):
                    await freed.wait()

    async def _give(self, key: int, slot: int) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (key, slot))
        self.held[key].discard(slot)
        self._freed[key].set()

    def pacer(self, provider: str, headroom: int) -> Pacer:
        return SharedPacer(self, provider, headroom)

    async def claim(self, provider: str, interval: float | None, hold: float) -> Claim:
        """Claim the next start of ``provider``'s requests, publishing this process's interval
        (None: keep the shared one) and how long it holds every request (seconds from now)."""
        params = {"provider": provider, "interval": interval, "hold": hold}
        with anyio.CancelScope(shield=True):  # as in ``_take``: the connection must live
            if provider not in self._paces:
                await self.conn.execute(_ENSURE_PACE, {"provider": provider})
                self._paces.add(provider)
            row = await (await self.conn.execute(_CLAIM_START, params)).fetchone()
        assert row is not None  # the row was ensured above
        return Claim(float(row[0]), float(row[1]))


class SharedPacer(Pacer):
    """A :class:`Pacer` whose next start and hold are shared through :class:`SharedLimits`.

    What this process learns from headers and 429s (the interval, a hold) is published with
    its next claim, since ``observe`` and ``throttled`` are called where nothing may wait."""

    def __init__(
        self,
        limits: SharedLimits,
        provider: str,
        headroom: int,
        *,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        super().__init__(headroom, clock=clock)
        self.limits, self.provider = limits, provider
        self._published: float | None = None  # the interval last sent

    async def wait(self) -> None:
        while True:
            interval = None if self.interval == self._published else self.interval
            hold = max(0.0, self.blocked_until - self.clock())
            delay = (await self.limits.claim(self.provider, interval, hold)).delay
            self._published = self.interval
            if delay <= 0:
                return
            await self.sleep(delay)
            if self.blocked_until <= self.clock():  # no 429 here meanwhile: the start holds
                return
