"""What the store writer commits, and how: queued operations turned into one transaction each.

The same ``Committer`` does the work wherever the writer does it: in a worker thread of the
engine's process, or in the writer's own process (``core.store.writer_process``). The
operations are plain rows, so they cross a pipe as they are.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from core.errors import StoreError
from core.store.db import Store, WriteBatch

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Start:
    row: dict[str, Any]


@dataclass(slots=True)
class Call:
    row: dict[str, Any]


@dataclass(slots=True)
class Finish:
    row: dict[str, Any]
    calls: list[dict[str, Any]]


Write = Start | Call | Finish


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a commit went: how many operations failed, and the first failure's message."""

    failed: int = 0
    first_error: str | None = None


def write_batch(ops: Sequence[Write]) -> WriteBatch:
    batch = WriteBatch()
    for op in ops:
        if isinstance(op, Start):
            batch.starts.append(op.row)
        elif isinstance(op, Call):
            batch.calls.append(op.row)
        else:
            batch.finishes.append(op.row)
            batch.calls.extend(op.calls)
    return batch


class Committer:
    """Commits lists of operations on one connection kept between them (no pool checkout per
    commit), replaced once if the server dropped it. Blocking: call it from a worker thread or
    from the writer's own process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: Connection | None = None

    def commit(self, ops: Sequence[Write]) -> Outcome:
        """One transaction for all of ``ops``; when a row breaks a constraint, the others are
        retried one at a time, so one bad row does not take the rest with it. Never raises:
        failures come back counted, to be reported where the writer was asked to write."""
        try:
            self._write_kept(write_batch(ops))
            return Outcome()
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError) and len(ops) > 1:
                return self._one_by_one(ops)
            return Outcome(len(ops), str(err))
        except Exception as err:  # a bug must not lose the rest of the queue
            log.exception("store write failed")
            return Outcome(len(ops), f"{type(err).__name__}: {err}")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _write_kept(self, batch: WriteBatch) -> None:
        """Write on the kept connection; a failure drops it, so the next commit (or the
        one-by-one retry) starts on a fresh one."""
        if self._conn is None:
            self._conn = self.store.write_connection()
        try:
            self.store.write(batch, self._conn)
        except StoreError as err:
            self.close()
            cause = err.__cause__
            if not (isinstance(cause, DBAPIError) and cause.connection_invalidated):
                raise
            # the kept connection died (a server restart, an idle timeout): once more, fresh
            self._conn = self.store.write_connection()
            self.store.write(batch, self._conn)
        except BaseException:
            self.close()
            raise

    def _one_by_one(self, ops: Sequence[Write]) -> Outcome:
        failed, first = 0, None
        for op in ops:
            try:
                self.store.write(write_batch([op]))
            except Exception as err:
                failed += 1
                first = first or str(err)
        return Outcome(failed, first)
