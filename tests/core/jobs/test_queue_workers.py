"""Queue workers against the real PostgreSQL server and the sim server: three ``tally worker``
processes (each its own host where the machine allows network namespaces) run one queued
batch; one is SIGKILLed mid-part. Its parts are leased again once its heartbeat is stale and
finished by the others, no finished call is made again, and every decision is the one an
uninterrupted batch with the same seed takes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from core.jobs.queue import Part, QueueExecutor, split
from core.store import Store
from tests.core.jobs.hosts import Hosts
from tests.core.store.conftest import PgDatabases
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.postgres

ITEMS, N, SEED = 48, 3, 11
REPO = Path(__file__).resolve().parents[3]


def items_file(tmp_path: Path) -> Path:
    lines = (REPO / "data" / "regression.csv").read_text().splitlines()
    path = tmp_path / "items.csv"
    path.write_text("\n".join(lines[: ITEMS + 1]) + "\n")
    return path


BATCH_ARGS = [
    "--id-column",
    "id",
    "--gold-column",
    "label",
    "--labels",
    "regression,no regression",
    "--model",
    "sim:sim-mid",
    "-n",
    str(N),
    "--seed",
    str(SEED),
]


@pytest.fixture
def sim_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "sim-server", "--port", str(port), "--time-scale", "0.5"],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx2.get(f"{url}/health", timeout=1.0)
                break
            except httpx2.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def pg_url() -> Iterator[str]:
    dbs = PgDatabases()
    url = dbs.create()
    with Store(url) as store:
        store.upgrade()
    yield url
    dbs.drop_all()


def cli(*args: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "core", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def outcome(store: Store, batch_id: str) -> dict[str | None, Any]:
    """Per item: the decision and every call's answer, as the batch left them."""
    out = {}
    for r in store.batch_results(batch_id):
        calls = sorted((c.phase, c.slot, c.status.value, c.answer) for c in r.calls)
        d = r.decision
        out[r.item_id] = (d.status.value, d.label, dict(r.votes), calls)
    return out


def finished_calls(store: Store, batch_id: str) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    found = store.batch_finished_calls(batch_id)
    return {
        (run_id, c.phase, c.slot): (c.started_at, c.ended_at, c.answer)
        for run_id, calls in found.items()
        for c in calls
    }


class Lines:
    """A worker's stderr, read as it comes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        assert proc.stderr is not None
        stream = proc.stderr
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").strip())
                self.cond.notify_all()

    def wait_for(self, prefix: str, count: int, timeout: float) -> list[str]:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(ln.startswith(prefix) for ln in self.lines) >= count, timeout
            )
            assert ok, f"worker said: {self.lines}"
            return [ln for ln in self.lines if ln.startswith(prefix)]


def test_three_workers_one_killed_mid_batch_finish_it_as_an_uninterrupted_batch(
    tmp_path: Path, pg_url: str, sim_url: str
) -> None:
    data = items_file(tmp_path)
    config = tmp_path / "tally.toml"
    config.write_text("[defaults]\nconcurrency = 4\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    base.update(TALLY_CONFIG=str(config), TALLY_TRUST_ENV="0")

    # the same batch, uninterrupted, on the in-process sim (same seed, same answers)
    ref_url = f"sqlite:///{tmp_path / 'ref.db'}"
    ref_env = dict(base, TALLY_DATABASE_URL=ref_url, TALLY_SIM_TIME_SCALE="0")
    ref = cli("batch", str(data), *BATCH_ARGS, env=ref_env)

    env = dict(base, TALLY_DATABASE_URL=pg_url, TALLY_SIM_URL=f"{sim_url}/v1")
    queued = cli("batch", str(data), *BATCH_ARGS, "--queue", "--part-size", "4", env=env)
    job_id, batch_id = queued["job_id"], queued["batch_id"]
    httpx2.delete(f"{sim_url}/v1/stats")

    pg_port = Store(pg_url).engine.url.port or 5432
    hosts = Hosts(3, [pg_port, int(sim_url.rsplit(":", 1)[1])])
    workers: list[subprocess.Popen[bytes]] = []

    def start(host: Any) -> subprocess.Popen[bytes]:
        worker_env = dict(
            env,
            TALLY_DATABASE_URL=host.reach(pg_url),
            TALLY_SIM_URL=host.reach(f"{sim_url}/v1"),
            TALLY_QUEUE_HEARTBEAT_S="2",
            TALLY_BATCH_LEASE_S="6",
        )
        args = ["-m", "core", "worker", "--concurrency", "1"]
        return hosts.start(host, args, worker_env, subprocess.PIPE)

    try:
        # the one to kill starts first, so it is sure to be mid-batch when the others run
        workers.append(start(hosts.hosts[0]))
        victim = Lines(workers[0])
        victim.wait_for("part ", 1, timeout=240)
        workers.extend(start(host) for host in hosts.hosts[1:])
        # SIGKILL it just after it takes its second part: its first part's calls are
        # stored, the second's are under way
        parts = victim.wait_for("part ", 2, timeout=240)
        time.sleep(0.3)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(30)
        killed_part = parts[1]
        with Store(pg_url) as store:
            before = finished_calls(store, batch_id)
            done_at_kill = store.runs_done(batch_id)

            deadline = time.monotonic() + 300
            while store.get_batch(batch_id).status != "done":
                assert time.monotonic() < deadline, "the batch did not finish"
                assert all(w.poll() is None for w in workers[1:]), "a worker stopped"
                time.sleep(0.5)
            from core.jobs.store import JobStore

            job = JobStore(store).get(job_id)
            after = finished_calls(store, batch_id)
            got = outcome(store, batch_id)
        stats = httpx2.get(f"{sim_url}/v1/stats").json()
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(60)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        hosts.close()
    print(f"hosts: {'network namespaces' if hosts.isolated else 'processes on one host'}")

    # the killed worker's part was run again by the others, to the end
    start, stop = (int(x) for x in killed_part.split()[1].split("-"))
    assert set(range(start, stop)) - done_at_kill, "its part had finished before the kill"
    assert job.status == "done" and job.done == ITEMS and job.error is None
    # nothing finished before the kill was made again
    assert {k: after[k] for k in before} == before
    # one request per item (the sim draws the n samples in one); requests served but never
    # stored can only be those the killed worker had in flight, at most its ceiling of 4
    assert ITEMS <= stats["served"] <= ITEMS + 4
    # the same decisions and the same answers as the uninterrupted batch
    with Store(ref_url) as ref_store:
        expected = outcome(ref_store, ref["batch_id"])
    assert got == expected


def test_a_batch_is_split_into_parts_that_cover_it_once() -> None:
    parts = split("j", "b", 45, 20)
    assert [(p.start, p.stop) for p in parts] == [(0, 20), (20, 40), (40, 45)]
    assert Part.from_payload(parts[1].payload()) == parts[1]
    assert len({p.key for p in parts}) == 3


def test_the_queue_refuses_a_sqlite_store(tmp_path: Path) -> None:
    from core.errors import InputError

    with Store(f"sqlite:///{tmp_path}/x.db") as store, pytest.raises(InputError, match="Postgre"):
        QueueExecutor(store)


def test_a_resume_elsewhere_is_refused_while_workers_hold_the_batch(tmp_path: Path) -> None:
    """The queue's shared claim lives by its lease only (its host is no host), so a
    ``tally batch --resume`` is refused until the workers' lease runs out."""
    from core.errors import BusyError
    from core.jobs.queue import queue_owner
    from core.store.lease import Owner
    from tests.specs import spec

    with Store(f"sqlite:///{tmp_path}/x.db") as store:
        store.upgrade()
        batch_id = store.create_batch(
            name="b", source="queue", spec=spec(), concurrency=4, items=[(0, None, "x", None)]
        )
        store.claim_batch(batch_id, queue_owner("j"), 30.0)
        with pytest.raises(BusyError, match="queue workers"):
            store.claim_batch(batch_id, Owner.here(), 30.0)
        store.claim_batch(batch_id, Owner.here(), 30.0, now=time.time() + 60)  # lease over


@pytest.mark.anyio
async def test_a_job_reaped_while_a_part_runs_is_claimed_again_and_finished(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose lease ran out mid-part (its workers busy, not dead) is queued again by the
    reaper; the part that ends afterwards claims it back and finishes it, instead of leaving a
    complete batch queued for ever."""
    import anyio

    from core.api import Tally
    from core.jobs.queue import queue_batch, run_part
    from core.jobs.store import JobStore
    from core.store import BatchItem
    from tests.specs import spec

    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0")
    monkeypatch.delenv("TALLY_SIM_URL", raising=False)
    async with Tally.open(database_url=pg_url) as tally:
        store = tally.store
        assert store is not None
        items = [BatchItem(index=i, item_id=None, text=f"item {i}", gold=None) for i in range(3)]
        run_spec = spec(["sim:sim-mid"], 3)
        job = queue_batch(store, items, run_spec, name="b", columns={}, concurrency=4, part_items=3)
        jobs = JobStore(store)
        engine_run, reaped = tally.engine.run, []

        async def run_then_reap(*args: Any, **kw: Any) -> Any:
            if not reaped:  # as if the lease had run out while this part started its runs
                reaped.extend(await anyio.to_thread.run_sync(lambda: jobs.reap(now=1e12)))
            return await engine_run(*args, **kw)

        monkeypatch.setattr(tally.engine, "run", run_then_reap)
        assert job.result_ref is not None
        await run_part(tally, Part(job.id, job.result_ref, 0, 3), lease_s=30.0)
        assert [r.status for r in reaped] == ["queued"]
        ended = jobs.get(job.id)
    assert ended.status == "done" and ended.done == 3
