"""``tally jobs``, and the CLI's and the library's work as jobs: a vote and a batch leave a job
each, listed, shown and cancellable; a dead executor's job is listed with why; bad ids exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from core.cli import app
from core.jobs import JobKind, JobStatus, JobStore
from core.store import Store
from core.store.lease import Owner
from core.store.tables import batch_t, run_t


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.01")
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("TALLY_DATABASE_URL", url)
    return url


def tally(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, list(args))
    return done.exit_code, done.output


def listed(*args: str) -> list[dict[str, object]]:
    code, output = tally("jobs", "list", "--json", *args)
    assert code == 0, output
    return json.loads(output)  # type: ignore[no-any-return]


def test_a_cli_vote_and_batch_are_jobs(db: str, tmp_path: Path) -> None:
    code, output = tally(
        "run", "Is it fine?", "-m", "sim:sim-mid", "-n", "3", "--labels", "yes,no", "--json"
    )
    assert code == 0, output
    run_id = json.loads(output)["run_id"]
    rows = tmp_path / "rows.csv"
    rows.write_text("text,gold\nfine?,yes\nbroken?,no\n", encoding="utf-8")
    code, output = tally(
        "batch",
        str(rows),
        "-m",
        "sim:sim-mid",
        "-n",
        "3",
        "--labels",
        "yes,no",
        "--gold-column",
        "gold",
        "--json",
    )
    assert code == 0, output
    batch_id = json.loads(output)["batch_id"]
    batch, vote = listed()
    assert (vote["kind"], vote["status"], vote["result_ref"]) == ("vote", "done", run_id)
    assert (batch["kind"], batch["status"], batch["result_ref"]) == ("batch", "done", batch_id)
    assert (batch["done"], batch["total"]) == (2, 2) and vote["total"] == 3
    assert vote["result"]["status"] in ("decided", "escalated", "tie", "needs_review", "failed")
    assert vote["owner"] is None  # the claim ended with the job
    # the CLI's work is recorded as the local user's: jobs, the run and the batch
    for job in (vote, batch):
        assert json.loads(str(job["submitted_by"]))["iss"] == "local"
    with Store(db) as store, store.engine.connect() as db_conn:
        who = [
            db_conn.execute(select(run_t.c.submitted_by).where(run_t.c.id == run_id)).scalar(),
            db_conn.execute(
                select(batch_t.c.submitted_by).where(batch_t.c.id == batch_id)
            ).scalar(),
        ]
    assert [json.loads(w)["iss"] for w in who] == ["local", "local"]
    assert [j["id"] for j in listed("--kind", "vote")] == [vote["id"]]
    assert listed("--status", "running") == []
    code, output = tally("jobs", "show", str(vote["id"]))
    assert code == 0 and run_id in output and "status" in output
    code, output = tally("jobs", "list")
    assert code == 0 and batch_id in output


def test_cancel_a_queued_job_and_a_finished_one(db: str) -> None:
    with Store(db) as store:
        store.upgrade()
        queued = JobStore(store).submit(JobKind.SWEEP, {}, executor="queue")
    code, output = tally("jobs", "cancel", queued.id)
    assert code == 0 and "cancelled" in output
    code, output = tally("jobs", "cancel", queued.id)
    assert code == 0 and "cancelled" in output
    (shown,) = listed()
    assert shown["status"] == "cancelled" and shown["error"] == "cancelled before it started"


def test_a_dead_executors_job_is_listed_with_the_reason(db: str) -> None:
    with Store(db) as store:
        store.upgrade()
        dead = Owner("another-host.invalid", 7, "t", 0.0)
        job = JobStore(store).submit(JobKind.VOTE, {}, owner=dead, lease_s=1.0, now=0.0)
    (shown,) = listed()
    assert shown["id"] == job.id and shown["status"] == JobStatus.INTERRUPTED
    assert "(pid 7 on another-host.invalid) stopped renewing its lease" in str(shown["error"])


def test_bad_ids_and_filters_exit_2_with_one_line(db: str) -> None:
    code, output = tally("jobs", "show", "nope")
    assert code == 2 and "no job 'nope'" in output and len(output.strip().splitlines()) == 1
    code, output = tally("jobs", "cancel", "nope")
    assert code == 2 and "no job 'nope'" in output
    code, output = tally("jobs", "list", "--status", "stuck")
    assert code == 2 and "unknown job status 'stuck'" in output


def test_the_librarys_vote_is_a_job(db: str) -> None:
    from core.api import vote_sync

    result = vote_sync("Is it fine?", labels=["yes", "no"], models=["sim:sim-fast"], n=3)
    (job,) = listed()
    assert (job["kind"], job["status"], job["result_ref"]) == ("vote", "done", result.run_id)
    assert job["spec"]["source"] == "library"  # type: ignore[index]
