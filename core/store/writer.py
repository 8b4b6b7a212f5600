"""The one writer: the engine hands it runs and calls, it commits them in batches.

A fan-out of 64 calls must never wait on the database, and 64 tasks each opening a transaction
would serialise on SQLite's single write lock anyway. So every write is queued on a memory
object stream and one background task owns the database side: it takes what is queued (up to
``max_batch`` operations, lingering at most ``max_delay`` seconds for more) and writes it with
bulk statements, in order: runs before their calls, calls before the decision. While one batch
commits the next one gathers, so under load batches grow by themselves. Commits start in a
worker thread; once the writer has shown it carries a batch (``process_after``) they move to
the writer's own process (``core.store.writer_process``), so the driver's work no longer
competes with the event loop for the GIL. Either way one connection is kept between commits
(``core.store.commit``).

The ``start_run``/``record_call``/``finish_run`` methods are coroutines but do not wait for the
database: they convert the result into rows at once (a later mutation of the object cannot
change what is stored) and queue them without yielding; only when the queue is full do they
wait for room. ``flush()`` waits until everything queued so far is committed. Leaving the
context, by normal exit, error or cancellation, commits everything queued first: the writer's
task is shielded and stops only when its queue is closed and empty. Write failures are raised
as one StoreError from ``flush()`` or from the exit, never swallowed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from core.errors import StoreError
from core.result import CallResult, CallStatus, RunResult
from core.spec import RunSpec
from core.store.commit import Call, Committer, Finish, Outcome, Start, Write
from core.store.db import Store
from core.store.tables import SpecCache, call_from_row, call_row, finish_row, start_row
from core.store.writer_process import WriterProcess

log = logging.getLogger(__name__)

_TRACKED_RUNS = 10_000
"""Runs whose recorded calls are remembered, so their finish need not write them again. An
older run dropped from this memory only costs its calls being written twice."""

PROCESS_AFTER = 1_000
"""Operations a writer commits from a worker thread before its commits move to its own process:
more than a single run ever writes, fewer than a batch writes in its first seconds."""

_RECENT_KEYS = 50_000
"""Cache keys of ok calls recorded through this writer, answered without waiting for a commit.

Both memories hold the call rows themselves: dicts of plain values, which the garbage collector
does not track, so a long batch's memory costs its collections nothing (model copies did)."""


@dataclass(slots=True)
class _Flush:
    done: anyio.Event


_Op = Write | _Flush


class StoreWriter:
    """Batched, ordered, non-blocking persistence of runs and calls (an async context manager).

    ``process_after``: operations committed from a worker thread before the writing moves to
    the writer's own process (None: never; see ``PROCESS_AFTER``).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 500,
        max_delay: float = 0.05,
        buffer: int = 100_000,
        process_after: int | None = PROCESS_AFTER,
    ) -> None:
        self.store = store
        self.process_after = process_after
        self.max_batch = max(1, max_batch)
        self.max_delay = max(0.0, max_delay)
        self.buffer = max(1, buffer)
        self.committed = 0  # operations written so far
        self.batches = 0  # transactions used for them
        self._send: MemoryObjectSendStream[_Op] | None = None
        self._recv: MemoryObjectReceiveStream[_Op] | None = None
        self._tg: TaskGroup | None = None
        self._closed = False
        self._queued = 0  # in the stream, not yet taken by the drain task
        self._pending = 0  # queued or taken, not yet committed (flush markers excluded)
        self._wake: anyio.Event | None = None
        self._failed = 0
        self._first_error: str | None = None
        self._recorded: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
        self._specs = SpecCache()
        self._recent: dict[str, dict[str, Any]] = {}  # cache key -> latest ok call row here
        self._committer = Committer(store.target(), store.engine.raw_connection)  # in a thread
        self._process: WriterProcess | None = None  # the writer's own process, once ready
        self._process_tried = False  # started at most once per writer
        self._starting: anyio.CancelScope | None = None
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> StoreWriter:
        if self._tg is not None or self._closed:
            raise RuntimeError("a StoreWriter can be entered once")
        self._send, self._recv = anyio.create_memory_object_stream[_Op](self.buffer)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._drain)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None and self._send is not None
        self._closed = True
        self._send.close()  # the drain task commits what is left, then ends
        self._poke()
        try:
            # the body's exception is not handed to the task group: it would cancel nothing
            # (the drain task is shielded) and only come back wrapped in an ExceptionGroup
            await self._tg.__aexit__(None, None, None)
        except BaseException as waiting_cut:  # cancelled while the last batch committed
            self._note_failure(waiting_cut)
            raise
        if exc is not None:
            self._note_failure(exc)
            return
        error = self._take_error()
        if error is not None:
            raise error

    def _note_failure(self, exc: BaseException) -> None:
        """The body's own exception wins; a write failure rides along, and is logged."""
        error = self._take_error()
        if error is not None:
            log.error("%s", error)
            exc.add_note(str(error))

    # -- queueing ------------------------------------------------------------------------------

    async def start_run(
        self,
        run_id: str,
        input: str,
        spec: RunSpec,
        *,
        source: str,
        batch_id: str | None = None,
        item_id: str | None = None,
        item_index: int | None = None,
        gold: str | None = None,
        submitted_by: str | None = None,
    ) -> None:
        """Queue the run's row (status ``running``); an existing run id is left as it is."""
        row = start_row(
            run_id,
            input,
            spec,
            source=source,
            batch_id=batch_id,
            item_id=item_id,
            item_index=item_index,
            gold=gold,
            created_at=time.time(),
            specs=self._specs,
            submitted_by=submitted_by,
        )
        await self._put(Start(row))

    async def record_call(
        self, run_id: str, call: CallResult, cache_key: str | None = None
    ) -> None:
        """Queue a call in its current state; a later record of the same (phase, slot) of the
        run replaces it."""
        row = call_row(run_id, call)
        recorded = self._recorded.get(run_id)
        if recorded is None:
            if len(self._recorded) >= _TRACKED_RUNS:  # runs that never finish must not pile up
                del self._recorded[next(iter(self._recorded))]
            recorded = self._recorded[run_id] = {}
        recorded[(call.phase, call.slot)] = row  # the call as recorded
        if cache_key is not None and call.status == CallStatus.OK:
            self._recent.pop(cache_key, None)  # re-inserted last: the newest leave last
            if len(self._recent) >= _RECENT_KEYS:
                del self._recent[next(iter(self._recent))]
            self._recent[cache_key] = row
        await self._put(Call({**row, "cache_key": cache_key}))

    async def finish_run(self, result: RunResult, *, source: str = "library") -> None:
        """Queue the decision and any call not already recorded exactly as it ends."""
        recorded = self._recorded.pop(result.run_id, {})
        rows = (call_row(result.run_id, call) for call in result.calls)
        calls = [row for row in rows if recorded.get((row["phase"], row["slot"])) != row]
        await self._put(Finish(finish_row(result, source=source, finished_at=time.time()), calls))

    async def cache_lookup(self, keys: Sequence[str]) -> dict[str, CallResult]:
        """``Store.cache_lookup`` that also sees calls recorded here but not yet committed,
        without waiting for a commit: answers recorded through this writer come from memory,
        the rest from the store in a worker thread."""
        found = {k: call_from_row(self._recent[k]) for k in keys if k in self._recent}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            stored = await anyio.to_thread.run_sync(self.store.cache_lookup, missing)
            found.update(stored)
        return found

    async def flush(self) -> None:
        """Wait until everything queued so far is committed; raise the write failures since
        the last flush as one StoreError."""
        if self._pending or self._queued:
            done = anyio.Event()
            await self._put(_Flush(done), count=False)
            await done.wait()
        error = self._take_error()
        if error is not None:
            raise error

    @property
    def pending(self) -> int:
        """Operations queued but not yet committed."""
        return self._pending

    @property
    def in_process(self) -> bool:
        """Commits go to the writer's own process (see ``process_after``)."""
        return self._process is not None

    async def _put(self, op: _Op, *, count: bool = True) -> None:
        if self._send is None or self._closed:
            raise StoreError("the store writer is not open")
        if count:
            self._pending += 1
        self._queued += 1
        try:
            try:
                self._send.send_nowait(op)
            except anyio.WouldBlock:
                await self._send.send(op)  # the queue is full: wait for room, not for a commit
        except BaseException:
            self._queued -= 1
            self._pending -= count
            raise
        if isinstance(op, _Flush) or self._queued >= self.max_batch:
            self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _take_error(self) -> StoreError | None:
        if not self._failed:
            return None
        error = StoreError(f"{self._failed} store write(s) failed; first: {self._first_error}")
        self._failed, self._first_error = 0, None
        return error

    # -- the drain task ------------------------------------------------------------------------

    async def _drain(self) -> None:
        assert self._recv is not None
        with anyio.CancelScope(shield=True):  # ends only when the queue is closed and empty
            async with self._recv:
                while True:
                    try:
                        first = await self._recv.receive()
                    except anyio.EndOfStream:
                        break
                    self._queued -= 1
                    ops = [first]
                    await self._gather(ops)
                    await self._commit(ops)
            await self._stop_process()
            await anyio.to_thread.run_sync(self._committer.close)

    def _take_ready(self, ops: list[_Op]) -> None:
        assert self._recv is not None
        while len(ops) < self.max_batch and not isinstance(ops[-1], _Flush):
            try:
                ops.append(self._recv.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                return
            self._queued -= 1

    async def _gather(self, ops: list[_Op]) -> None:
        """Take what is queued; linger up to ``max_delay`` for more unless full or flushing."""
        deadline = anyio.current_time() + self.max_delay
        while True:
            self._take_ready(ops)
            if len(ops) >= self.max_batch or isinstance(ops[-1], _Flush) or self._closed:
                return
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return
            self._wake = anyio.Event()
            with anyio.move_on_after(remaining):
                await self._wake.wait()
            self._wake = None

    async def _commit(self, ops: list[_Op]) -> None:
        writes = [op for op in ops if not isinstance(op, _Flush)]
        if writes:
            outcome = await self._write(writes)
            if outcome.failed:
                self._fail(outcome.failed, outcome.first_error)
            self.batches += 1
            self.committed += len(writes)
            self._pending -= len(writes)
        for op in ops:
            if isinstance(op, _Flush):
                op.done.set()

    async def _write(self, writes: list[Write]) -> Outcome:
        """In the writer's process once it is ready, else in a worker thread. Commits run one
        at a time, so moving from one to the other keeps their order."""
        if self._process is not None:
            try:
                return await self._process.commit(writes)
            except StoreError as err:  # the batch is written again below: upserts, so safe
                log.warning("%s; writing from the engine's process again", err)
                self._process = None
        elif self._wants_process():
            assert self._tg is not None
            self._process_tried = True
            self._tg.start_soon(self._start_process)
        return await anyio.to_thread.run_sync(self._committer.commit, writes)

    def _wants_process(self) -> bool:
        return (
            self.process_after is not None
            and not self._process_tried
            and self.committed >= self.process_after
            and not self.store.in_memory  # another process could not see it
        )

    async def _start_process(self) -> None:
        try:
            with anyio.CancelScope() as self._starting:
                self._process = await WriterProcess.start(self._committer.target)
        except StoreError as err:
            log.warning("%s; writing from the engine's process", err)
            return
        finally:
            self._starting = None
        if self._stopped:  # the queue ended while it started
            await self._stop_process()

    async def _stop_process(self) -> None:
        self._stopped = True
        if self._starting is not None:
            self._starting.cancel()
        process, self._process = self._process, None
        if process is not None:
            await process.close()

    def _fail(self, n: int, message: str | None) -> None:
        self._failed += n
        if self._first_error is None:
            self._first_error = message
        log.warning("store write failed: %s", message)
