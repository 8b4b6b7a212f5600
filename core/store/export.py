"""Export of stored runs, calls and reviews to CSV, JSONL and Parquet, streamed in chunks.

Rows come from the database a chunk at a time, so an export of a large store never holds it in
memory. In CSV every text cell that a spreadsheet would read as a formula (starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with a single quote; model replies
are exported as they came otherwise. Times are unix seconds, as stored. Structured values
(votes, branches, task, policy...) are JSON text in CSV and Parquet, nested objects in JSONL.
Keys never reach the store, so there is nothing secret to strip. A file is written next to its
target and moved into place at the end, so a failed export leaves no half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Column, Select, Table, case, select

from core.errors import InputError
from core.store.db import Store
from core.store.queries import RunFilter, run_conditions
from core.store.tables import PHASE_ORDER, call_t, review_t, run_t

Format = Literal["csv", "jsonl", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# (exported name, stored column, kind); kind "json" marks TEXT columns holding JSON, kind
# "unknown" whether a cost column is NULL (unknown), so no reader takes an empty cell for $0
_RUN_COLUMNS: list[tuple[str, str, str]] = [
    ("run_id", "id", "str"),
    ("created_at", "created_at", "float"),
    ("finished_at", "finished_at", "float"),
    ("source", "source", "str"),
    ("batch_id", "batch_id", "str"),
    ("item_id", "item_id", "str"),
    ("item_index", "item_index", "int"),
    ("task_name", "task_name", "str"),
    ("input", "input", "str"),
    ("status", "status", "str"),
    ("label", "label", "str"),
    ("margin", "margin", "float"),
    ("confidence", "confidence", "float"),
    ("reason", "reason", "str"),
    ("branches", "branches_json", "json"),
    ("tied", "tied_json", "json"),
    ("votes", "votes_json", "json"),
    ("fields", "fields_json", "json"),
    ("field_votes", "field_votes_json", "json"),
    ("n_calls", "n_calls", "int"),
    ("cost_usd", "cost_usd", "float"),
    ("cost_known_usd", "cost_known_usd", "float"),
    ("cost_unknown_calls", "cost_unknown_calls", "int"),
    ("latency_ms", "latency_ms", "float"),
    ("gold", "gold", "str"),
    ("panel", "panel_json", "json"),
    ("task", "task_json", "json"),
    ("policy", "policy_json", "json"),
]

_CALL_COLUMNS: list[tuple[str, str, str]] = [
    ("run_id", "run_id", "str"),
    ("phase", "phase", "str"),
    ("slot", "slot", "int"),
    ("model", "model", "str"),
    ("sample", "sample", "int"),
    ("status", "status", "str"),
    ("answer", "answer", "str"),
    ("raw", "raw", "str"),
    ("error", "error", "str"),
    ("latency_ms", "latency_ms", "float"),
    ("ttft_ms", "ttft_ms", "float"),
    ("tokens_in", "tokens_in", "int"),
    ("tokens_out", "tokens_out", "int"),
    ("tokens_cached", "tokens_cached", "int"),
    ("cost_usd", "cost_usd", "float"),
    ("cost_known_usd", "cost_known_usd", "float"),
    ("cost_unknown", "cost_usd", "unknown"),
    ("retries", "retries", "int"),
    ("cached", "cached", "bool"),
    ("started_at", "started_at", "float"),
    ("ended_at", "ended_at", "float"),
    ("cache_key", "cache_key", "str"),
]

_REVIEW_COLUMNS: list[tuple[str, str, str]] = [
    ("review_id", "id", "int"),
    ("run_id", "run_id", "str"),
    ("created_at", "created_at", "float"),
    ("stage", "stage", "str"),
    ("seat", "seat", "int"),
    ("reviewer", "reviewer", "str"),
    ("reviewer_issuer", "reviewer_issuer", "str"),
    ("reviewer_subject", "reviewer_subject", "str"),
    ("reviewer_email", "reviewer_email", "str"),
    ("label", "label", "str"),
    ("reason", "reason", "str"),
    ("previous_status", "previous_status", "str"),
    ("panel_plurality", "panel_plurality", "str"),
    ("previous_reason", "previous_reason", "str"),
]

_ARROW = {"str": pa.string(), "json": pa.string(), "float": pa.float64(), "int": pa.int64()}


def _stored(table: Table, columns: Sequence[tuple[str, str, str]]) -> list[Column[Any]]:
    """The stored columns an export reads, each once."""
    return [table.c[col] for col in dict.fromkeys(col for _, col, _ in columns)]


def escape_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will show as text, never evaluate as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def export_runs(
    store: Store,
    path_or_buffer: str | os.PathLike[str] | IO[Any],
    fmt: Format | str,
    f: RunFilter | None = None,
    *,
    chunk_size: int = 1000,
) -> int:
    """Write the runs matching ``f`` (oldest first); returns how many were written."""
    q = (
        select(*_stored(run_t, _RUN_COLUMNS))
        .where(*run_conditions(f))
        .order_by(run_t.c.created_at, run_t.c.id)
    )
    return _export(store, q, _RUN_COLUMNS, path_or_buffer, fmt, chunk_size, f)


def export_calls(
    store: Store,
    path_or_buffer: str | os.PathLike[str] | IO[Any],
    fmt: Format | str,
    f: RunFilter | None = None,
    *,
    chunk_size: int = 1000,
) -> int:
    """Write the calls of the runs matching ``f``, run by run in the engine's order."""
    phase_rank = case(PHASE_ORDER, value=call_t.c.phase, else_=len(PHASE_ORDER))
    q = (
        select(*_stored(call_t, _CALL_COLUMNS))
        .select_from(call_t.join(run_t, run_t.c.id == call_t.c.run_id))
        .where(*run_conditions(f))
        .order_by(run_t.c.created_at, run_t.c.id, phase_rank, call_t.c.slot)
    )
    return _export(store, q, _CALL_COLUMNS, path_or_buffer, fmt, chunk_size, f)


def export_reviews(
    store: Store,
    path_or_buffer: str | os.PathLike[str] | IO[Any],
    fmt: Format | str,
    *,
    chunk_size: int = 1000,
) -> int:
    """Write the whole audit trail, every review ever written, oldest first: who (the name
    and the signed-in identity), when, what, why, and the panel's decision it replaced."""
    q = select(*(review_t.c[col] for _, col, _ in _REVIEW_COLUMNS)).order_by(
        review_t.c.created_at, review_t.c.id
    )
    return _export(store, q, _REVIEW_COLUMNS, path_or_buffer, fmt, chunk_size, None)


def _export(
    store: Store,
    query: Select[Any],
    columns: Sequence[tuple[str, str, str]],
    target: str | os.PathLike[str] | IO[Any],
    fmt: str,
    chunk_size: int,
    f: RunFilter | None,
) -> int:
    """Refuse what cannot be exported before a byte is written: a format, a batch the store
    does not hold (an empty file would look like an empty batch), a path that cannot be one."""
    if fmt not in FORMATS:
        raise InputError(f"export format must be csv, jsonl or parquet, not {fmt!r}")
    if f is not None and f.batch_id is not None:
        store.get_batch(f.batch_id)
    if isinstance(target, (str, os.PathLike)):
        _check_path(Path(target))
    writer = {"csv": _write_csv, "jsonl": _write_jsonl, "parquet": _write_parquet}[fmt]
    chunks = store.iter_chunks(query, chunk_size=chunk_size)
    with _opened(target, binary=fmt == "parquet") as out:
        return writer(out, chunks, columns)


@contextmanager
def _opened(target: str | os.PathLike[str] | IO[Any], *, binary: bool) -> Iterator[IO[Any]]:
    """A writable file object: the caller's buffer, or a temporary file renamed on success."""
    if not isinstance(target, (str, os.PathLike)):
        if binary or isinstance(target, io.TextIOBase):
            yield target
            return
        text = io.TextIOWrapper(target, encoding="utf-8", newline="")
        try:
            yield text
            text.flush()
        finally:
            text.detach()
        return
    path = Path(target)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if binary:
            with tmp.open("wb") as fh:
                yield fh
        else:
            with tmp.open("w", encoding="utf-8", newline="") as th:
                yield th
        os.replace(tmp, path)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; name a file inside it")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"cannot write {path}: {parent} is not a folder")
    if not parent.exists():
        raise InputError(f"cannot write {path}: the folder {parent} does not exist")


Chunks = Iterator[Sequence[Mapping[Any, Any]]]


def _values(
    rows: Sequence[Mapping[Any, Any]],
    columns: Sequence[tuple[str, str, str]],
    convert_json: Callable[[str | None], Any],
) -> Iterator[dict[str, Any]]:
    for r in rows:
        out: dict[str, Any] = {}
        for name, col, kind in columns:
            v = r[col]
            if kind == "json":
                v = convert_json(v)
            elif kind == "bool" and v is not None:
                v = bool(v)
            elif kind == "unknown":
                v = v is None
            out[name] = v
        yield out


def _write_csv(out: IO[Any], chunks: Chunks, columns: Sequence[tuple[str, str, str]]) -> int:
    w = csv.writer(out)
    w.writerow([name for name, _, _ in columns])
    n = 0
    for rows in chunks:
        for row in _values(rows, columns, lambda v: v):
            w.writerow(["" if v is None else escape_cell(v) for v in row.values()])
            n += 1
    return n


def _write_jsonl(out: IO[Any], chunks: Chunks, columns: Sequence[tuple[str, str, str]]) -> int:
    n = 0
    for rows in chunks:
        for row in _values(rows, columns, lambda v: None if v is None else json.loads(v)):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write_parquet(out: IO[Any], chunks: Chunks, columns: Sequence[tuple[str, str, str]]) -> int:
    schema = pa.schema([(name, _ARROW.get(kind, pa.bool_())) for name, _, kind in columns])
    n = 0
    with pq.ParquetWriter(out, schema) as pw:
        for rows in chunks:
            batch = list(_values(rows, columns, lambda v: v))
            pw.write_table(pa.Table.from_pylist(batch, schema=schema))
            n += len(batch)
    return n
