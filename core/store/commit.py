"""What the store writer commits, and how: queued operations turned into one transaction each.

The same ``Committer`` does the work wherever the writer does it: in a worker thread of the
engine's process, or in the writer's own process (``core.store.writer_process``). It speaks
to the database driver directly (``core.store.upsert``), so this module imports no SQLAlchemy
and the writer's process starts in a fraction of a second. The operations are plain rows, so
they cross a pipe as they are.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from core.store.upsert import (
    Staged,
    Upsert,
    WriteBatch,
    collapsed,
    error_message,
    set_up_sqlite,
    statements,
)

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


@dataclass(frozen=True, slots=True)
class Target:
    """A store as the committer sees it: the driver, how to connect, the compiled upserts
    (``Store.target()`` builds it). Plain values, so it crosses a pipe too."""

    dialect: str  # "sqlite" or "postgresql"
    safe_url: str  # for messages: never shows a password
    driver: str  # the DB-API module: "sqlite3" or "psycopg"
    connect_args: tuple[Any, ...] = field(repr=False)  # may hold a password
    connect_kwargs: dict[str, Any] = field(repr=False)
    upserts: dict[str, Upsert]

    def connect(self) -> Any:
        """A new driver connection, set up as the store's engine sets up its own."""
        conn = importlib.import_module(self.driver).connect(
            *self.connect_args, **self.connect_kwargs
        )
        if self.dialect == "sqlite":
            set_up_sqlite(conn)
        return conn


class Committer:
    """Commits lists of operations on one driver connection kept between them, replaced once
    if the server dropped it. Blocking: call it from a worker thread or from the writer's own
    process.

    ``connect``: where connections come from (default: ``target.connect``; the engine's
    process passes its pool's, so an in-memory SQLite store is the one it writes to).
    """

    def __init__(self, target: Target, connect: Callable[[], Any] | None = None) -> None:
        self.target = target
        self._connect = connect or target.connect
        self._dbapi: ModuleType = importlib.import_module(target.driver)
        self._staged = (
            {name: Staged.of(name, upsert) for name, upsert in target.upserts.items()}
            if target.dialect == "postgresql"
            else {}
        )
        self._conn: Any = None

    def open(self) -> None:
        """Connect now rather than at the first commit (raises the driver's error)."""
        if self._conn is not None:
            return
        conn = self._connect()
        if self._staged:
            try:
                with conn.cursor() as cur:
                    for staged in self._staged.values():
                        cur.execute(staged.create)
                conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
        self._conn = conn

    def commit(self, ops: Sequence[Write]) -> Outcome:
        """One transaction for all of ``ops``; when a row breaks a constraint, the others are
        retried one at a time, so one bad row does not take the rest with it. Never raises:
        failures come back counted, to be reported where the writer was asked to write."""
        try:
            self._write_kept(write_batch(ops))
            return Outcome()
        except self._dbapi.Error as err:
            if isinstance(err, self._dbapi.IntegrityError) and len(ops) > 1:
                return self._one_by_one(ops)
            return Outcome(len(ops), error_message(self.target.safe_url, err))
        except Exception as err:  # a bug must not lose the rest of the queue
            log.exception("store write failed")
            return Outcome(len(ops), f"{type(err).__name__}: {err}")

    def close(self, *, lost: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            invalidate = getattr(conn, "invalidate", None)  # a pool's connection: never reuse it
            if lost and invalidate is not None:
                invalidate()
            conn.close()

    def _write_kept(self, batch: WriteBatch) -> None:
        """Write on the kept connection; a failure drops it, so the next commit (or the
        one-by-one retry) starts on a fresh one."""
        self.open()
        try:
            self._write(batch)
        except self._dbapi.Error:
            lost = self._lost()
            self.close(lost=lost)
            if not lost:
                raise
            # the kept connection died (a server restart, an idle timeout): once more, fresh
            self.open()
            self._write(batch)
        except BaseException:
            self.close()
            raise

    def _lost(self) -> bool:
        """The connection itself is gone, not just this transaction (psycopg marks it)."""
        return bool(getattr(self._conn, "closed", False) or getattr(self._conn, "broken", False))

    def _write(self, batch: WriteBatch) -> None:
        conn = self._conn
        cur = conn.cursor()
        try:
            if self.target.dialect == "sqlite":
                cur.execute("BEGIN IMMEDIATE")
            for name, rows in collapsed(batch):
                staged = self._staged.get(name)
                if staged is None:
                    upsert = self.target.upserts[name]
                    for sql, params in statements(self.target.dialect, upsert, rows):
                        cur.execute(sql, params)
                else:
                    with cur.copy(staged.copy) as copy:
                        for row in rows:
                            copy.write_row([row[k] for k in staged.keys])
                    cur.execute(staged.insert)
            conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        finally:
            with contextlib.suppress(Exception):
                cur.close()

    def _one_by_one(self, ops: Sequence[Write]) -> Outcome:
        failed, first = 0, None
        for op in ops:
            try:
                self._write_kept(write_batch([op]))
            except Exception as err:
                failed += 1
                first = first or error_message(self.target.safe_url, err)
        return Outcome(failed, first)
