"""Ctrl-C on `tally run`: a real SIGINT to a real process, mid fan-out. The run is stored
``failed`` with every started call ``cancelled``; it is never left ``running``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from core.result import CallStatus, DecisionStatus
from core.sim.server import serve_in_thread
from core.store import Store

ROOT = Path(__file__).resolve().parents[2]
VOTES = 3


@pytest.fixture(scope="module")
def slow_sim_url() -> Iterator[str]:
    with serve_in_thread(seed=3, time_scale=100.0) as url:  # every reply takes many seconds
        yield url


def in_flight(url: str) -> int:
    return int(httpx2.get(url + "/stats", timeout=5).json()["in_flight"])


def test_ctrl_c_stores_the_run_as_failed(tmp_path: Path, slow_sim_url: str) -> None:
    config = tmp_path / "tally.toml"
    config.write_text(
        f'[providers.local]\nkind = "openai"\nbase_url = "{slow_sim_url}"\nsupports_n = false\n'
    )
    db = f"sqlite:///{tmp_path}/tally.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core",
            "run",
            "the header moved 4px after the deploy",
            "--model",
            "local:sim-mid",
            "-n",
            str(VOTES),
            "--labels",
            "regression,no regression",
            "--config",
            str(config),
            "--database-url",
            db,
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a shell that starts a job in the background ignores SIGINT for it, and children
        # inherit that; Ctrl-C at a terminal is what this test stands for
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while in_flight(slow_sim_url) < VOTES:
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the calls never reached the sim server"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr.decode()
    assert stderr.decode().strip().splitlines()[-1] == "tally: interrupted"
    with Store(db) as store:
        rows, total = store.list_runs()
        assert total == 1
        run = store.get_run(rows[0].run_id)
    assert run.decision.status == DecisionStatus.FAILED
    assert run.decision.reason == "run cancelled"
    assert [c.status for c in run.calls] == [CallStatus.CANCELLED] * VOTES
