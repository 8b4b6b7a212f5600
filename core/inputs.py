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
        value = row.get(text_column)
        if value is None or not str(value).strip():
            raise InputError(f"{label}: line {line}: the {text_column!r} cell is empty")
        item_id = str(row[id_column]) if id_column else str(index + 1)
        if item_id in seen:
            raise InputError(f"{label}: line {line}: id {item_id!r} appears twice")
        seen.add(item_id)
        gold = row.get(gold_column) if gold_column else None
        items.append(
            BatchItem(
                index=index,
                item_id=item_id,
                text=str(value),
                gold=None if gold is None or str(gold) == "" else str(gold),
            )
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
    header = _csv_header(csv.DictReader(io.StringIO(text, newline="")), label)
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
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = _csv_header(reader, label)
    rows: list[tuple[int, dict[str, object]]] = []
    try:
        for row in reader:
            if None in row:
                raise InputError(f"{label}: line {reader.line_num}: more cells than columns")
            rows.append((reader.line_num, dict(row)))
            if len(rows) > MAX_ROWS:
                raise InputError(f"{label}: more than {MAX_ROWS:,} rows")
    except csv.Error as err:
        raise InputError(f"{label}: line {reader.line_num}: {err}") from None
    return rows, columns


def _csv_header(reader: csv.DictReader[str], label: str) -> list[str]:
    """The first row's names; reading them can fail too (a cell past the csv size limit)."""
    try:
        return list(reader.fieldnames or [])
    except csv.Error as err:
        raise InputError(f"{label}: line 1: {err}") from None


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
    """Each non-blank line as (line number, object); a line that is not a JSON object stops
    the file with its number."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{label}: line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{label}: line {number}: expected a JSON object")
        yield number, row
