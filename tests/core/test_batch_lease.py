"""A resume while the batch still runs in another process is refused, so no call is paid
twice; once that process is killed, the resume takes the batch over and makes only the calls
still owed. Real processes, a real SIGKILL, the sim server over loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from core.api import Tally, build_policy, build_task
from core.result import CallStatus
from core.sim.server import serve_in_thread
from core.spec import RunSpec
from core.store import BatchItem, Store
from core.store.lease import BatchOwner
from tests.core.test_batch_resume import ROOT, batch_args, requests_served, setup_files

LEASE_S = 1.0


@pytest.fixture(scope="module")
def slow_sim_url() -> Iterator[str]:
    with serve_in_thread(seed=4, time_scale=1.0) as url:  # outlasts a slow resume under load
        yield url


def resume(batch_id: str, config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", "batch", "--resume", batch_id, "--config", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_resume_is_refused_while_the_owner_lives_and_takes_over_once_it_is_dead(
    tmp_path: Path, slow_sim_url: str
) -> None:
    data, config = setup_files(tmp_path, slow_sim_url)
    db = tmp_path / "lease.db"
    env = {**os.environ, "TALLY_DATABASE_URL": f"sqlite:///{db}", "TALLY_BATCH_LEASE_S": "1"}
    owner = subprocess.Popen(
        batch_args(data, config),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = Store(f"sqlite:///{db}")
    batch_id = None
    try:
        deadline = time.monotonic() + 120
        while batch_id is None or not store.runs_done(batch_id):
            assert time.monotonic() < deadline, "the batch never started"
            assert owner.poll() is None, "the batch ended before it could be resumed"
            try:
                batches = store.list_batches()
            except Exception:  # the schema may not exist yet
                batches = []
            batch_id = batches[0].batch_id if batches else None
            time.sleep(0.05)

        # while it runs, its heartbeat keeps the lease ahead of the clock
        holder, first_until = store.batch_owner(batch_id)
        assert holder is not None and holder.pid == owner.pid
        time.sleep(LEASE_S * 1.5)
        holder, later_until = store.batch_owner(batch_id)
        assert holder is not None and first_until is not None and later_until is not None
        assert later_until > first_until and later_until > time.time()

        refused = resume(batch_id, config, env)
        assert owner.poll() is None, "the batch ended before the resume was tried"
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.splitlines()
        assert line.startswith(f"tally: batch {batch_id} is running in another process")
        assert f"pid {owner.pid} on " in line and "since " in line
        assert refused.stdout == ""
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)

    # the killed owner's writer commits what it was handed, then the calls stop changing
    time.sleep(LEASE_S * 2)
    finished: dict[tuple[str, str, int], float | None] = {}
    for row in store.batch_runs(batch_id):
        for call in store.finished_calls(row.run_id):
            if call.status != CallStatus.CANCELLED:
                finished[(row.run_id, call.phase, call.slot)] = call.ended_at
    served_before = requests_served(slow_sim_url)

    taken_over = resume(batch_id, config, env)
    assert taken_over.returncode == 0, taken_over.stderr
    results = store.batch_results(batch_id)
    assert len(results) == store.get_batch(batch_id).total
    assert store.get_batch(batch_id).status == "done"
    assert store.batch_owner(batch_id) == (None, None)
    calls = {(r.run_id, c.phase, c.slot): c for r in results for c in r.calls}
    for key, ended_at in finished.items():  # reused, not made again
        assert calls[key].ended_at == pytest.approx(ended_at)
    owed = [c for key, c in calls.items() if key not in finished]
    assert owed, "the owner finished every call before it was killed: make it slower"
    # the server was asked exactly for the calls still owed, each once (with its retries)
    assert requests_served(slow_sim_url) - served_before == sum(1 + c.retries for c in owed)


def test_a_batch_cancelled_right_after_its_claim_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that lands while the batch reads what is already done (right after it claimed
    the batch) still releases the claim: left ``running`` and owned, it would read as busy
    elsewhere and could not be resumed until its lease ran out."""
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'cancel.db'}"
    reading = threading.Event()
    items = [BatchItem(i, None, f"page {i}", None) for i in range(3)]

    async def go() -> str:
        async with Tally.open(database_url=url) as tally:
            store = tally.store
            assert store is not None
            runs_done = store.runs_done

            def slow_runs_done(batch_id: str) -> set[int]:
                reading.set()
                time.sleep(0.3)  # the cancel arrives while this read is under way
                return runs_done(batch_id)

            monkeypatch.setattr(store, "runs_done", slow_runs_done)
            spec = RunSpec(
                task=build_task(labels=["yes", "no"]),
                panel=tally.panel(["sim:sim-mid"], 3),
                policy=build_policy(),
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(tally.run_batch, items, spec)
                await anyio.to_thread.run_sync(reading.wait)
                tg.cancel_scope.cancel()
            (info,) = store.list_batches()
            return info.status

    assert anyio.run(go) == "interrupted"
    with Store(url) as store:
        (info,) = store.list_batches()
        store.claim_batch(info.batch_id, BatchOwner.here(), 30.0)  # not busy: released
