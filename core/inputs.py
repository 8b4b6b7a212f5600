"""Reading a batch's rows from CSV or JSONL, refusing bad files whole and up front.

A malformed row refuses the whole batch, with its line number, before anything is stored or
paid for: a batch that quietly skipped rows would report an accuracy over a different set
than the one the user gave.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
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
    is_jsonl = label.lower().endswith((".jsonl", ".ndjson"))
    rows, columns = _jsonl(text, label) if is_jsonl else _csv(text, label)
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


def _csv(text: str, label: str) -> tuple[list[tuple[int, dict[str, object]]], Sequence[str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = list(reader.fieldnames or [])
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


def _jsonl(text: str, label: str) -> tuple[list[tuple[int, dict[str, object]]], Sequence[str]]:
    rows: list[tuple[int, dict[str, object]]] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{label}: line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{label}: line {number}: expected a JSON object")
        columns.update(dict.fromkeys(row))
        rows.append((number, row))
        if len(rows) > MAX_ROWS:
            raise InputError(f"{label}: more than {MAX_ROWS:,} rows")
    return rows, list(columns)
