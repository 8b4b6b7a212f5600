"""A batch killed with SIGKILL half-way resumes without paying twice, and ends as an
uninterrupted batch does. Real processes, a real SIGKILL, the sim server over loopback."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from core.datasets import load_set
from core.result import CallStatus
from core.sim.server import serve_in_thread
from core.store import Store

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 48
MODELS = ["local:sim-mid", "local:sim-fast", "local:sim-strong"]


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve_in_thread(seed=9, time_scale=0.05) as url:
        yield url


def requests_served(url: str) -> int:
    return int(httpx2.get(url + "/stats", timeout=5).json()["requests"])


def setup_files(tmp_path: Path, url: str) -> tuple[Path, Path]:
    items = load_set("regression").items[:ITEMS]
    data = tmp_path / "items.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "label"])
        writer.writerows([i.id, i.text, i.gold] for i in items)
    config = tmp_path / "tally.toml"
    config.write_text(
        f'[providers.local]\nkind = "openai"\nbase_url = "{url}"\n'
        "max_concurrency = 4\nsupports_n = false\n"
    )
    return data, config


def batch_args(data: Path, config: Path) -> list[str]:
    args = [
        sys.executable,
        "-m",
        "core",
        "batch",
        str(data),
        "--text-column",
        "text",
        "--gold-column",
        "label",
        "--id-column",
        "id",
        "--labels",
        "regression,no regression",
        "-n",
        "3",
        "--concurrency",
        "4",
        "--seed",
        "5",
        "--config",
        str(config),
        "--json",
    ]
    for model in MODELS:
        args += ["--model", model]
    return args


def finished_runs(store: Store) -> tuple[str | None, int]:
    batches = store.list_batches()
    if not batches:
        return None, 0
    batch_id = batches[0].batch_id
    return batch_id, len(store.runs_done(batch_id))


def test_sigkill_half_way_then_resume(tmp_path: Path, sim_url: str) -> None:
    data, config = setup_files(tmp_path, sim_url)
    db = f"sqlite:///{tmp_path / 'killed.db'}"
    env = {**os.environ, "TALLY_DATABASE_URL": db}
    proc = subprocess.Popen(
        batch_args(data, config),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = Store(db)
    deadline = time.monotonic() + 120
    batch_id, done = None, 0
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("the batch finished before it could be killed: make it slower")
            if Path(db.removeprefix("sqlite:///")).exists():
                try:
                    batch_id, done = finished_runs(store)
                except Exception:  # the schema may not exist yet
                    batch_id, done = None, 0
            if done >= ITEMS // 3:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert batch_id is not None and ITEMS // 3 <= done < ITEMS

    # what was finished and stored before the kill
    before = {}
    for row in store.batch_runs(batch_id):
        for call in store.finished_calls(row.run_id):
            if call.status != CallStatus.CANCELLED:
                before[(row.run_id, call.phase, call.slot)] = (call.answer, call.ended_at)
    served_before = requests_served(sim_url)

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "batch",
            "--resume",
            batch_id,
            "--config",
            str(config),
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["done"] == ITEMS and summary["status"] == "done"

    # no finished call was made again: same answers, same end times
    after_calls = {}
    for result in store.batch_results(batch_id):
        for call in result.calls:
            after_calls[(result.run_id, call.phase, call.slot)] = call
    for key, (answer, ended_at) in before.items():
        assert after_calls[key].answer == answer
        assert after_calls[key].ended_at == pytest.approx(ended_at)
    # and the server saw exactly the calls that were still owed (with their retries)
    owed = [c for k, c in after_calls.items() if k not in before]
    assert requests_served(sim_url) - served_before == sum(1 + c.retries for c in owed)

    # the same batch run without interruption decides every item the same way
    fresh_db = f"sqlite:///{tmp_path / 'fresh.db'}"
    clean = subprocess.run(
        batch_args(data, config),
        cwd=ROOT,
        env={**os.environ, "TALLY_DATABASE_URL": fresh_db},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert clean.returncode == 0, clean.stderr
    fresh = Store(fresh_db)
    fresh_id = fresh.list_batches()[0].batch_id

    def outcomes(s: Store, bid: str) -> dict[int, tuple[str, str | None]]:
        return {r.item_index: (r.status, r.label) for r in s.batch_runs(bid)}

    assert outcomes(store, batch_id) == outcomes(fresh, fresh_id)
