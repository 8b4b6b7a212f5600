"""Bulk upserts of run and call rows in the database driver's own terms, without SQLAlchemy.

``Store`` compiles each upsert once with SQLAlchemy; what runs it needs only the driver
(sqlite3 or psycopg). So the store writer's own process imports no SQLAlchemy: that import is
most of a Python process's start-up cost here, paid on a core the batch needs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# SQLite binds at most 32,766 parameters per statement (999 before 3.32)
_SQLITE_MAX_PARAMS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_SQLITE_ROWS = 500
"""Rows per multi-row INSERT on SQLite, at most."""

Row = dict[str, Any]


@dataclass
class WriteBatch:
    """Rows for one write transaction: run starts, finished runs and call attempts."""

    starts: list[Row] = field(default_factory=list)
    finishes: list[Row] = field(default_factory=list)
    calls: list[Row] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.starts) + len(self.finishes) + len(self.calls)


@dataclass(frozen=True, slots=True)
class Upsert:
    """One upsert compiled for the driver: the whole statement with named parameters, the
    INSERT head and ON CONFLICT clause a multi-row statement is built from, the table and
    the column order."""

    single: str
    head: str
    conflict: str
    table: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Staged:
    """An upsert on PostgreSQL by way of a staging table: the rows are COPYed into a temporary
    table of the session, then moved with one INSERT .. SELECT .. ON CONFLICT.

    For the batches the store writer commits this cuts the work per row on both sides of the
    connection, against a pipelined executemany (``benchmarks/store.py``, three runs: the
    driver's CPU per call row from 25–37 µs to 10–16, the server's from 41–70 to 26–48): the
    server plans and runs one statement instead of one per row, and the driver formats COPY's
    rows in C. The staging tables are created once per connection (``create``) and emptied by
    every commit. ``keys``: the column order of the rows COPY sends.
    """

    create: str
    copy: str
    insert: str
    keys: tuple[str, ...]

    @classmethod
    def of(cls, name: str, upsert: Upsert) -> Staged:
        stage = f"tally_stage_{name}"
        cols = ", ".join(f'"{k}"' for k in upsert.keys)
        return cls(
            create=(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                f'SELECT {cols} FROM "{upsert.table}" WITH NO DATA'
            ),
            copy=f"COPY {stage} ({cols}) FROM STDIN",
            insert=f"{upsert.head} SELECT {cols} FROM {stage} ON CONFLICT {upsert.conflict}",
            keys=upsert.keys,
        )


def collapsed(batch: WriteBatch) -> list[tuple[str, list[Row]]]:
    """The batch's rows in the order a transaction writes them (runs before their calls), with
    duplicates collapsed: the first start, the last finish and the last call of each key win."""
    starts = list({r["id"]: r for r in reversed(batch.starts)}.values())
    finishes = list({r["id"]: r for r in batch.finishes}.values())
    calls = list({(r["run_id"], r["phase"], r["slot"]): r for r in batch.calls}.values())
    named = (("start", starts), ("finish", finishes), ("call", calls))
    return [(name, rows) for name, rows in named if rows]


def statements(dialect: str, upsert: Upsert, rows: list[Row]) -> Iterator[tuple[str, Any]]:
    """The driver statements that upsert ``rows``: (SQL, parameters); a list of parameter
    dicts means one executemany.

    SQLite gets one INSERT .. VALUES (..), (..) statement per chunk instead of a step per row:
    each step releases and retakes the GIL, and in a busy process that hand-off, not SQLite,
    is what a writer thread pays most for (a third of the CPU, measured). PostgreSQL gets
    psycopg's pipelined executemany of one statement, which measured cheaper than multi-row
    VALUES or one array per column (the store writer's larger batches are ``Staged``). Rows
    hold only str, int, float, bool and None, so no parameter needs converting.
    """
    if dialect == "postgresql":
        yield upsert.single, rows
        return
    keys = upsert.keys
    row_marks = "(" + ", ".join("?" * len(keys)) + ")"
    tail = f" ON CONFLICT {upsert.conflict}"
    per_statement = min(_SQLITE_ROWS, _SQLITE_MAX_PARAMS // len(keys))
    for at in range(0, len(rows), per_statement):
        chunk = rows[at : at + per_statement]
        sql = f"{upsert.head} VALUES {', '.join([row_marks] * len(chunk))}{tail}"
        yield sql, tuple([r[k] for r in chunk for k in keys])


def set_up_sqlite(conn: sqlite3.Connection) -> None:
    """WAL, a busy timeout and foreign keys on a new SQLite connection, whose transactions
    are left to explicit BEGINs (``BEGIN IMMEDIATE`` for writes: two writing processes then
    wait for each other instead of failing on a read lock that cannot be upgraded)."""
    conn.isolation_level = None
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def first_line(err: BaseException) -> str:
    """The first non-empty line of a database error (SQLAlchemy's or the driver's own)."""
    orig = getattr(err, "orig", None) or err
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    return lines[0] if lines else type(orig).__name__


def error_message(safe_url: str, err: BaseException) -> str:
    """One line for a failed database operation, with the fix when the schema is missing."""
    msg = first_line(err)
    if "no such table" in msg or ("relation" in msg and "does not exist" in msg):
        msg += " (run `tally db upgrade`)"
    return f"store {safe_url}: {msg}"
