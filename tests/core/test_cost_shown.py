"""An unknown cost is never shown as $0: one wording (``≥ $x + unknown``, ``unknown``) from
``core.cost`` in the call table, the CLI's run, batch and re-vote output, the JSON, the batch
counts and the exports; sim prices are labelled simulated."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.calls import CALL_COLUMNS, call_rows
from core.cli import app
from core.cost import (
    batch_cost_text,
    call_cost_text,
    describe_cost,
    dollars,
    is_simulated,
    run_cost_text,
)
from core.result import CallResult, CallStatus
from core.store import Store

# a provider the price book knows nothing of, served by the in-process sim
CONFIG = '[providers.unpriced]\nkind = "openai"\nbase_url = "http://sim.invalid/v1"\n'
LABELS = ("--labels", "yes,no")
RUN = ("run", "Is the checkout broken?", *LABELS)


@pytest.mark.parametrize(
    ("usd", "known", "unknown", "shown"),
    [
        (0.0042, 0.0042, 0, "$0.0042"),
        (0.0, 0.0, 0, "$0"),  # a known zero (a free local model) is $0
        (None, 0.0042, 2, "≥ $0.0042 + unknown"),
        (None, 0.0042, 0, "≥ $0.0042 + unknown"),  # a call: no count, unknown all the same
        (None, 0.0, 3, "unknown"),  # nothing known: never "$0"
        (None, None, 0, "unknown"),
        (0.5, 0.5, 1, "≥ $0.50 + unknown"),  # a count of unknowns outweighs a stale total
    ],
)
def test_one_wording_for_known_partly_known_and_unknown_costs(
    usd: float | None, known: float | None, unknown: int, shown: str
) -> None:
    assert describe_cost(usd, known, unknown) == shown
    simulated = shown if shown == "unknown" else shown + " (simulated)"
    assert describe_cost(usd, known, unknown, simulated=True) == simulated


def test_only_sim_models_are_priced_as_simulated() -> None:
    assert is_simulated(["sim:sim-strong", "openai:gpt-4.1-mini"])
    assert not is_simulated(["openai:gpt-4.1-mini", "local:sim-strong", "simulated:x"])


def test_the_call_table_words_each_cost_and_shows_the_cached_tokens() -> None:
    calls = [
        CallResult(slot=0, model="m", status=CallStatus.OK, answer="a", cost_usd=0.002,
                   cost_known_usd=0.002, tokens_in=100, tokens_out=3, tokens_cached=64),
        CallResult(slot=1, model="m", status=CallStatus.TIMEOUT, cost_known_usd=0.001,
                   tokens_in=100),
        CallResult(slot=2, model="m", status=CallStatus.OK, answer="a", cost_known_usd=0.0,
                   tokens_in=100, tokens_out=3),
        CallResult(slot=3, model="m", status=CallStatus.RUNNING, started_at=0.0),
    ]  # fmt: skip
    rows = call_rows(calls, now=1.0)
    assert [r.cost for r in rows] == ["$0.002", "≥ $0.001 + unknown", "unknown", "-"]
    assert [r.tokens_cached for r in rows] == [64, None, None, None]
    assert [r.tokens for r in rows] == ["100 / 3", "100 / ?", "100 / 3", "-"]
    assert "cached" in CALL_COLUMNS and CALL_COLUMNS.index("cached") < CALL_COLUMNS.index("cost")
    assert call_cost_text(calls[1], lambda v: f"{v:.3f}") == "≥ 0.001 + unknown"


def invoke(tmp_path: Path, *args: str, config_text: str = CONFIG) -> Any:
    config = tmp_path / "tally.toml"
    config.write_text(config_text)
    env = {
        "TALLY_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        "TALLY_CONFIG": str(config),
        "COLUMNS": "200",
    }
    done = CliRunner().invoke(app, list(args), env=env)
    assert done.exit_code == 0, done.output
    return done


def test_cli_run_shows_the_known_part_and_the_unknown_never_zero(tmp_path: Path) -> None:
    done = invoke(tmp_path, *RUN, "-m", "sim:sim-strong", "-m", "unpriced:sim-mid", "--json")
    doc = json.loads(done.stdout)
    assert doc["cost_usd"] is None and doc["cost_unknown_calls"] == 1
    assert doc["cost_known_usd"] > 0  # the sim call's price is kept beside the unknown
    priced, unpriced = doc["calls"]
    assert unpriced["cost_usd"] is None and priced["cost_usd"] == doc["cost_known_usd"]

    text = invoke(tmp_path, *RUN, "-m", "sim:sim-strong", "-m", "unpriced:sim-mid").stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("cost "))
    assert line.startswith(f"cost ≥ ${doc['cost_known_usd']:.6f} + unknown (simulated)"), line
    assert "cost (simulated)" in text  # the call table's column says so once

    alone = invoke(tmp_path, *RUN, "-m", "unpriced:sim-mid").stdout
    line = next(ln for ln in alone.splitlines() if ln.startswith("cost "))
    assert line.startswith("cost unknown ") and "$0" not in line, line


def test_cli_batch_and_revote_word_the_cost_alike(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("text\nIs it broken?\nDoes it render?\n")
    args = ("batch", str(rows), *LABELS, "-m", "sim:sim-strong")
    doc = json.loads(invoke(tmp_path, *args, "-m", "unpriced:sim-mid", "--json").stdout)
    assert doc["cost_usd"] is None and doc["unknown_cost_runs"] == 2
    assert doc["cost_known_usd"] > 0 and doc["simulated_cost"] is True
    text = invoke(tmp_path, *args, "-m", "unpriced:sim-mid").stdout
    assert "≥ $" in text and "+ unknown (simulated)" in text
    assert "cost_known_usd" not in text  # read in the cost line, not a row of its own

    known = json.loads(invoke(tmp_path, *args, "--json").stdout)
    assert known["cost_usd"] == pytest.approx(known["cost_known_usd"]) and known["cost_usd"] > 0
    assert batch_cost_text(known).endswith(" (simulated)") and "unknown" not in batch_cost_text(
        known
    )

    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    run_id = store.batch_runs(doc["batch_id"])[0].run_id
    assert run_cost_text(store.get_run(run_id)).endswith("+ unknown (simulated)")
    # a re-vote makes no request: it pays nothing, neither the known part again nor "unknown"
    again = json.loads(invoke(tmp_path, "revote", run_id, "--json").stdout)
    assert (again["cost_usd"], again["cost_known_usd"], again["cost_unknown_calls"]) == (0, 0, 0)
    assert "cost $0.000000 (simulated)" in invoke(tmp_path, "revote", run_id).stdout


def test_exports_carry_the_known_part_the_unknown_and_the_cached_tokens(tmp_path: Path) -> None:
    invoke(tmp_path, *RUN, "-m", "sim:sim-strong", "-m", "unpriced:sim-mid")
    invoke(tmp_path, "export", "runs", str(tmp_path / "runs.csv"))
    invoke(tmp_path, "export", "calls", str(tmp_path / "calls.jsonl"))
    with (tmp_path / "runs.csv").open() as fh:
        (run,) = list(csv.DictReader(fh))
    assert run["cost_usd"] == "" and float(run["cost_known_usd"]) > 0
    assert run["cost_unknown_calls"] == "1"
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c["cost_unknown"] for c in calls] == [False, True]
    assert all("tokens_cached" in c and "cost_known_usd" in c for c in calls)
    assert calls[0]["cost_known_usd"] == calls[0]["cost_usd"] > 0


def test_the_cost_of_a_stored_run_that_is_still_running_is_a_dash(tmp_path: Path) -> None:
    from core.store.queries import RunRow

    row = RunRow(
        *("r", 0.0, None, "cli", "running", None, None, [], [], None, ["sim:a"], "x", 0),
        *(None, None, None, None, None, None),
    )
    assert run_cost_text(row) == "-"
    finished = RunRow(
        *("r", 0.0, 1.0, "cli", "decided", "a", 1.0, [], [], None, ["local:a"], "x", 2),
        *(None, None, None, None, None, None),
        cost_known_usd=0.25,
        cost_unknown_calls=1,
    )
    assert run_cost_text(finished) == "≥ $0.25 + unknown" and dollars(None) == "unknown"


# -- degraded decisions, as the CLI shows them ---------------------------------------------------

BROKEN = (
    '[providers.broken]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
    "[defaults]\nmax_attempts = 1\n"
)  # a closed loopback port: every call fails at once, and is not retried


def test_a_decision_with_a_failed_call_is_marked_degraded_in_json_text_and_batch(
    tmp_path: Path,
) -> None:
    def cli(*args: str) -> Any:
        return invoke(tmp_path, *args, config_text=CONFIG + BROKEN)

    panel = ("-m", "sim:sim-strong", "-m", "sim:sim-mid", "-m", "broken:m")
    doc = json.loads(cli(*RUN, *panel, "--json").stdout)
    degraded = doc["decision"]["degraded"]
    assert (degraded["planned"], degraded["counted"], degraded["errors"]) == (3, 2, 1)
    assert degraded["why"] == "2 of 3 counted: 1 failed"
    text = " ".join(cli(*RUN, *panel).stdout.split())
    assert "DEGRADED: 2 of 3 counted: 1 failed" in text

    rows = tmp_path / "rows.csv"
    rows.write_text("text\nIs it broken?\nDoes it render?\n")
    summary = json.loads(cli("batch", str(rows), *LABELS, *panel, "--json").stdout)
    assert summary["degraded"] == 2
    clean = json.loads(cli("batch", str(rows), *LABELS, "-m", "sim:sim-strong", "--json").stdout)
    assert clean["degraded"] == 0
