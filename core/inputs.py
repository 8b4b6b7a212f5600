"""Reading a batch's rows from CSV or JSONL, refusing bad files whole and up front.

A malformed row refuses the whole batch, with its line number, before anything is stored or
paid for: a batch that quietly skipped rows would report an accuracy over a different set
than the one the user gave. ``read_columns`` reads just enough of a file to offer its columns
for mapping, with the same checks and messages, so a broken file shows before the mapping.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.store import BatchItem

MAX_ROWS = 1_000_000


def read_items(
    source: str | Path | bytes,
    *,
    text_column: str = "text",
    gold_column: str | None = None,
    id_column: str | None = None,
    name: str | None = None,
) -> list[BatchItem]:
    """Rows of a CSV or JSONL file: JSONL when the name ends .jsonl or .ndjson, else CSV."""
    text, label = _text(source, name)
    rows, columns = _jsonl(text, label) if _is_jsonl(label) else _csv(text, label)
    wanted = [c for c in (text_column, gold_column, id_column) if c]
    missing = [c for c in wanted if c not in columns]
    if missing:
        have = ", ".join(columns) or "none"
        raise InputError(f"{label}: no column {missing[0]!r} (columns: {have})")
    items: list[BatchItem] = []
    seen: set[str] = set()
    for index, (line, row) in enumerate(rows):
        try:
            value = _cell(row.get(text_column), text_column, "text")
            raw_id = _cell(row.get(id_column), id_column, "id") if id_column else None
            gold = _cell(row.get(gold_column), gold_column, "gold") if gold_column else None
        except ValueError as err:
            raise InputError(f"{label}: line {line}: {err}") from None
        if value is None or not value.strip():
            raise InputError(f"{label}: line {line}: the {text_column!r} cell is empty")
        item_id = raw_id if raw_id is not None else str(index + 1)
        if item_id in seen:
            raise InputError(f"{label}: line {line}: id {item_id!r} appears twice")
        seen.add(item_id)
        items.append(
            BatchItem(index=index, item_id=item_id, text=value, gold=gold if gold else None)
        )
    if not items:
        raise InputError(f"{label}: the file has a header but no rows")
    return items


def read_columns(source: str | Path | bytes, *, name: str | None = None) -> list[str]:
    """The columns of a CSV or JSONL file, so a mapping can offer them (empty names left out).

    Only the header of a CSV is read; every line of a JSONL is parsed for its keys, so a broken
    line shows at once, with its number. ``read_items`` checks the whole file again."""
    text, label = _text(source, name)
    if _is_jsonl(label):
        keys: dict[str, None] = {}
        for _, row in _jsonl_rows(text, label):
            keys.update(dict.fromkeys(row))
        return list(keys)
    header = _csv_header(csv.reader(io.StringIO(text, newline=""), strict=True), label)
    return [column for column in header if column]


def _text(source: str | Path | bytes, name: str | None) -> tuple[str, str]:
    """The file's text and the name its messages use; an absent, non-UTF-8 or empty file is
    refused."""
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    if isinstance(source, bytes):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{label}: no such file")
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{label}: not UTF-8 (byte {err.start}); save the file as UTF-8 and try again"
        ) from None
    if not text.strip():
        raise InputError(f"{label}: the file is empty")
    return text, label


def _is_jsonl(label: str) -> bool:
    return label.lower().endswith((".jsonl", ".ndjson"))


def _csv(text: str, label: str) -> tuple[list[tuple[int, dict[str, object]]], Sequence[str]]:
    """Every row as (the line it starts on, cells by column). Strict: a quote left open, a
    stray quote in a quoted cell or a row whose cells do not match the header stop the file
    at that row's first line (an open quote would otherwise swallow the rows after it)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns = _csv_header(reader, label)
    rows: list[tuple[int, dict[str, object]]] = []
    line = reader.line_num + 1
    try:
        for cells in reader:
            if cells:
                if len(cells) != len(columns):
                    more = "more" if len(cells) > len(columns) else "fewer"
                    raise InputError(f"{label}: line {line}: {more} cells than columns")
                rows.append((line, dict(zip(columns, cells, strict=True))))
                if len(rows) > MAX_ROWS:
                    raise InputError(f"{label}: more than {MAX_ROWS:,} rows")
            line = reader.line_num + 1
    except csv.Error as err:
        raise InputError(
            f"{label}: line {line}: {_csv_problem(err, line, reader.line_num)}"
        ) from None
    return rows, columns


def _csv_problem(err: csv.Error, start: int, end: int) -> str:
    """What the csv module's complaint means for the person who wrote the file."""
    text = str(err)
    if "unexpected end of data" in text or "expected after" in text:
        reach = "the end of the file" if "end of data" in text else f"line {end}"
        return f"a quoted cell opened here runs to {reach}: a quote is not closed"
    return text


def _csv_header(reader: Any, label: str) -> list[str]:
    """The first row's names, each at most once (empty names aside); reading them can fail
    too (an open quote, a cell past the csv size limit)."""
    try:
        header: list[str] = next(reader, [])
    except csv.Error as err:
        raise InputError(f"{label}: line 1: {_csv_problem(err, 1, reader.line_num)}") from None
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            raise InputError(f"{label}: line 1: column {name!r} appears twice in the header")
        seen.add(name)
    return header


def _jsonl(text: str, label: str) -> tuple[list[tuple[int, dict[str, object]]], Sequence[str]]:
    rows: list[tuple[int, dict[str, object]]] = []
    columns: dict[str, None] = {}
    for number, row in _jsonl_rows(text, label):
        columns.update(dict.fromkeys(row))
        rows.append((number, row))
        if len(rows) > MAX_ROWS:
            raise InputError(f"{label}: more than {MAX_ROWS:,} rows")
    return rows, list(columns)


def _jsonl_rows(text: str, label: str) -> Iterator[tuple[int, dict[str, object]]]:
    """Each non-blank line as (line number, object); a line that is not a JSON object, repeats
    a key or holds NaN stops the file with its number."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        except json.JSONDecodeError as err:
            raise InputError(f"{label}: line {number}: not valid JSON ({err.msg})") from None
        except ValueError as err:
            raise InputError(f"{label}: line {number}: {err}") from None
        if not isinstance(row, dict):
            raise InputError(f"{label}: line {number}: expected a JSON object")
        yield number, row


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    row: dict[str, object] = {}
    for key, value in pairs:
        if key in row:
            raise ValueError(f"key {key!r} appears twice in one object")
        row[key] = value
    return row


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a value JSON allows")


def _cell(value: object, column: str, kind: str) -> str | None:
    """A cell as text: JSON numbers and booleans as JSON writes them, a JSON gold object or
    list as compact JSON (the gold of a json task); text or an id must be a scalar."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        if kind != "gold":
            shape = "object" if isinstance(value, dict) else "list"
            raise ValueError(f"the {column!r} cell is a JSON {shape}, not a single value")
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value)
