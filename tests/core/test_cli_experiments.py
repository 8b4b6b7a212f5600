"""``tally curve`` and ``tally sweep`` as people run them: one JSON document with --json, the
exit codes of the contract (0 ok, 1 the work failed, 2 bad input), one line on stderr."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import app
from core.config import load_config
from core.sim.server import serve_in_thread
from core.store import Store

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("TALLY_DATABASE_URL", url)
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.001")
    monkeypatch.setenv("TALLY_TRUST_ENV", "0")
    for name in ("TALLY_CONFIG", "TALLY_SIM_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return url


@pytest.fixture(scope="module")
def capacity_one() -> Iterator[str]:
    # levels of about 2.5 s each: a pause of the test process (GC, a busy neighbour) then
    # moves a level's throughput by a few percent, far from the 30% that would hide the shape
    with serve_in_thread(time_scale=1.0, capacity=1) as url:
        yield url


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "tally.toml"
    path.write_text(f'[providers.wall]\nkind = "openai"\nbase_url = "{url}"\n')
    return path


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- curve ----------------------------------------------------------------------------------


def test_curve_json_is_one_document_with_the_recommendation(env: str) -> None:
    done = runner.invoke(
        app, ["curve", "--set", "regression", "--items", "40", "-k", "3", "--n", "1,3", "--json"]
    )
    assert done.exit_code == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["set_name"] == "regression" and doc["items"] == 40 and doc["k"] == 3
    assert doc["headline"] == "mixed panel"
    head = next(p for p in doc["panels"] if p["name"] == doc["headline"])
    assert [p["n"] for p in head["curve"]["points"]] == [1, 3]
    assert head["recommendation"]["n"] in (1, 3)
    assert {r["rule"] for r in head["early_stop"]["rules"]} == {
        "fixed",
        "decided",
        "beta",
        "window",
        "dawid-skene",
    }
    assert len(doc["panels"]) == 6  # five models alone, and mixed
    fitted = {m["model"]: m for m in doc["reliability"]}  # Dawid–Skene on the draw, no gold
    assert set(fitted) == set(doc["models"])
    for m in fitted.values():
        assert 0.0 <= m["accuracy"] <= 1.0 and 0 < m["votes"] <= 40 * 3
        assert all(abs(sum(row.values()) - 1.0) < 1e-6 for row in m["confusion"].values())
    with Store(env) as store:
        assert store.get_curve(doc["curve_id"]).result["batch_id"] == doc["batch_id"]
        assert store.get_batch(doc["batch_id"]).total == 40


def test_curve_prints_the_recommendation_and_the_halving_check() -> None:
    done = runner.invoke(
        app,
        ["curve", "--items", "30", "-k", "5", "--n", "1,3,5", "-m", "sim:sim-mid", "-m",
         "sim:sim-fast", "--panel", "sim:sim-mid,sim:sim-mid,sim:sim-fast"],
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "recommended N=" in text
    assert "halving check: error(5) / error(1) =" in text
    assert "sim:sim-mid,sim:sim-mid,sim:sim-fast" in text  # the named panel is curved too


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "nope"], "tally: unknown labelled set 'nope'"),
        (["-k", "3", "--n", "1,3,5"], "tally: K=3 samples per model is fewer than N=5 needs"),
        (["--n", "1,three"], "tally: --n takes whole numbers separated by commas"),
        (["-m", "nope:x"], "tally: unknown provider 'nope'"),
        (["--panel", "sim:sim-mid,sim:nope"], "tally: unknown sim model 'nope'"),
    ],
)
def test_curve_refuses_bad_input_with_exit_2(args: list[str], message: str, env: str) -> None:
    done = runner.invoke(app, ["curve", "--items", "5", *args, "--json"])
    assert done.exit_code == 2
    assert done.stdout == ""
    assert one_line(done.stderr).startswith(message)
    with Store(env) as store:
        store.ensure_schema()
        assert store.list_batches() == []  # nothing drawn, nothing paid


def test_curve_without_gold_says_so(tmp_path: Path) -> None:
    path = tmp_path / "inputs.csv"
    path.write_text("text\nthe checkout button moved\nthe logo is blurry\n")
    done = runner.invoke(app, ["curve", "--set", str(path), "--json"])
    assert done.exit_code == 2
    assert one_line(done.stderr) == (
        "tally: curve needs gold labels: inputs.csv has no column 'label' "
        "(name the gold column with --gold-column)"
    )


# -- sweep ----------------------------------------------------------------------------------


def test_sweep_json_against_a_serialising_server(
    tmp_path: Path, capacity_one: str, env: str
) -> None:
    config = write_config(tmp_path, capacity_one)
    done = runner.invoke(
        app,
        ["sweep", "--model", "wall:sim-fast", "--levels", "1,2,4", "--calls-per-level", "8",
         "--config", str(config), "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["verdict"]["shape"] == "serialises"
    assert doc["verdict"]["warning"]
    assert doc["verdict"]["client_bound"] is False  # the server serialises, not the client
    assert doc["saved"] is None
    assert [p["concurrency"] for p in doc["verdict"]["points"]] == [1, 2, 4]
    assert all(p["cpu_ms_per_call"] > 0 for p in doc["verdict"]["points"])
    with Store(env) as store:
        assert store.get_sweep(doc["sweep_id"]).name == "wall:sim-fast"


def test_sweep_prints_the_verdict_and_saves_the_ceiling(tmp_path: Path, capacity_one: str) -> None:
    config = write_config(tmp_path, capacity_one)
    done = runner.invoke(
        app,
        ["sweep", "-m", "wall:sim-fast", "--levels", "1,2,4", "--calls-per-level", "8",
         "--config", str(config), "--save-ceiling"],
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    text = " ".join(done.stdout.split())
    ceiling = load_config(config).providers["wall"].max_concurrency
    assert f"saved max_concurrency = {ceiling} for [providers.wall] in {config}" in text
    assert "ceiling:" in text and "handbook:" in text
    header = next(line for line in done.stdout.splitlines() if "concurrency" in line)
    assert "cpu" in header and "loop" in header


def test_sweep_of_an_unreachable_endpoint_exits_1_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/v1")
    done = runner.invoke(
        app, ["sweep", "-m", "wall:m", "--levels", "1,2", "--config", str(config), "--json"]
    )
    assert done.exit_code == 1
    assert done.stdout == ""
    line = one_line(done.stderr)
    assert line.startswith("tally: sweep of wall:m stopped: the probe call failed (cannot connect")
    assert line.endswith("nothing was measured")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--levels", "4"], "tally: a sweep needs at least two concurrency levels"),
        (["--levels", "1,x"], "tally: --levels takes whole numbers separated by commas"),
        (["--save-ceiling", "--levels", "1,2"], "tally: no tally.toml is in use"),
        (["--calls-per-level", "0", "--levels", "1,2"], "tally: calls per level must be"),
    ],
)
def test_sweep_refuses_bad_input_with_exit_2(args: list[str], message: str) -> None:
    done = runner.invoke(app, ["sweep", "-m", "sim:sim-fast", *args, "--json"])
    assert done.exit_code == 2
    assert done.stdout == ""
    assert one_line(done.stderr).startswith(message)
