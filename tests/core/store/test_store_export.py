"""Export of runs and calls: CSV with formulas escaped, JSONL, Parquet; streamed in chunks;
on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.errors import InputError
from core.panel import Panel
from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.store import RunFilter, Store
from core.store.export import escape_cell, export_calls, export_runs
from tests.specs import spec

MakeCall = Callable[..., CallResult]
MakeResult = Callable[..., RunResult]

HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    "+1+2",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
]


def seed(store: Store, make_call: MakeCall, make_result: MakeResult) -> None:
    store.create_batch(name="B", source="cli", spec=spec(), concurrency=1, batch_id="B")
    for i, hostile in enumerate(HOSTILE):
        calls = [
            make_call(0, "sim:a", "yes", raw=hostile, error=None),
            make_call(
                1,
                "sim:b",
                None,
                CallStatus.INVALID,
                raw=f'plain, with "quotes"\n{i}',
                cost_usd=None,
            ),
        ]
        confidence = 0.75 if i == 1 else None  # one vote of two valid calls: leader 1, rival 0
        decision = Decision(
            status=DecisionStatus.DECIDED, label="yes", margin=None, confidence=confidence
        )
        r = make_result(
            f"r{i}",
            calls,
            input=hostile,
            created_at=1000.0 + i,
            decision=decision,
            batch_id="B" if i < 2 else None,
            cost_usd=None if i == 0 else 0.5,
        )
        store.save_run(r, source="cli")


def test_escape_cell() -> None:
    assert [escape_cell(v) for v in HOSTILE] == ["'" + v for v in HOSTILE]
    assert escape_cell("fine = ok") == "fine = ok"
    assert escape_cell(-1.5) == -1.5 and escape_cell(None) is None and escape_cell("") == ""


def test_csv_escapes_formulas_and_keeps_the_rest(
    store: Store, make_call: MakeCall, make_result: MakeResult, tmp_path: Path
) -> None:
    seed(store, make_call, make_result)
    path = tmp_path / "runs.csv"
    assert export_runs(store, path, "csv") == len(HOSTILE)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["input"] for r in rows] == ["'" + v for v in HOSTILE]
    assert [r["run_id"] for r in rows] == [f"r{i}" for i in range(len(HOSTILE))]
    assert rows[0]["cost_usd"] == "" and float(rows[1]["cost_usd"]) == 0.5
    assert json.loads(rows[0]["votes"]) == {"yes": 1}
    assert float(rows[0]["created_at"]) == 1000.0

    calls_path = tmp_path / "calls.csv"
    assert export_calls(store, calls_path, "csv") == 2 * len(HOSTILE)
    with calls_path.open(newline="", encoding="utf-8") as fh:
        calls = list(csv.DictReader(fh))
    raws = [c["raw"] for c in calls if c["model"] == "sim:a"]
    assert raws == ["'" + v for v in HOSTILE]
    assert calls[1]["raw"] == 'plain, with "quotes"\n0'  # quoted and kept as it came
    assert calls[1]["status"] == "invalid" and calls[1]["cost_usd"] == ""
    assert not list(tmp_path.glob(".*partial"))


def test_jsonl_nests_structured_values(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    seed(store, make_call, make_result)
    buf = io.StringIO()
    assert export_runs(store, buf, "jsonl", RunFilter(batch_id="B"), chunk_size=1) == 2
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [x["run_id"] for x in lines] == ["r0", "r1"]
    assert lines[0]["input"] == HOSTILE[0]  # only CSV is escaped
    assert lines[0]["votes"] == {"yes": 1} and lines[0]["branches"] == []
    assert lines[0]["cost_usd"] is None
    assert lines[0]["panel"] == Panel.build(["sim:a", "sim:b"]).model_dump(mode="json")
    assert lines[0]["task"]["name"] == "classify" and lines[0]["fields"] is None
    assert [x["confidence"] for x in lines] == [None, 0.75]

    out = io.BytesIO()  # a binary buffer gets UTF-8 text
    assert export_calls(store, out, "jsonl", RunFilter(batch_id="B")) == 4
    calls = [json.loads(line) for line in out.getvalue().decode().splitlines()]
    assert [(c["run_id"], c["slot"]) for c in calls] == [("r0", 0), ("r0", 1), ("r1", 0), ("r1", 1)]
    assert calls[0]["cached"] is False and calls[1]["answer"] is None


def test_parquet_is_readable_with_types(
    store: Store, make_call: MakeCall, make_result: MakeResult, tmp_path: Path
) -> None:
    seed(store, make_call, make_result)
    path = tmp_path / "runs.parquet"
    assert export_runs(store, path, "parquet", chunk_size=4) == len(HOSTILE)
    table = pq.read_table(path)
    assert table.num_rows == len(HOSTILE)
    df = table.to_pandas()
    assert list(df["input"]) == HOSTILE
    assert df["cost_usd"].isna().tolist() == [True] + [False] * (len(HOSTILE) - 1)
    assert str(table.schema.field("n_calls").type) == "int64"
    assert str(table.schema.field("margin").type) == "double"  # all null, still typed
    assert str(table.schema.field("confidence").type) == "double"

    calls_path = tmp_path / "calls.parquet"
    assert export_calls(store, calls_path, "parquet", RunFilter(model="nobody")) == 0
    empty = pq.read_table(calls_path)
    assert empty.num_rows == 0 and "raw" in empty.schema.names
    assert str(empty.schema.field("cached").type) == "bool"


def test_bad_format_and_unwritable_path(store: Store, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="csv, jsonl or parquet"):
        export_runs(store, tmp_path / "x.xlsx", "xlsx")
    with pytest.raises(InputError, match="cannot write"):
        export_runs(store, tmp_path / "missing" / "dir" / "x.csv", "csv")
