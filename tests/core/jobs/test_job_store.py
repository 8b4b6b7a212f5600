"""Jobs in the store, on SQLite and PostgreSQL: idempotent submission, claims by lane and
priority under a lease, heartbeats that carry a cancel, guarded progress and finish, and
stale leases reaped with the reason."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from core.errors import InputError, NotFoundError
from core.jobs import ExecutorName, JobKind, JobStatus, JobStore, Lane
from core.store import Store
from core.store.lease import Owner

ELSEWHERE = "another-host.invalid"


@pytest.fixture
def jobs(store: Store) -> JobStore:
    return JobStore(store)


def other(token: str = "t-other") -> Owner:
    """A claim by a process of another host: only its lease says whether it lives."""
    return Owner(ELSEWHERE, 4242, token, 0.0)


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_a_submitted_job_is_queued_with_its_spec_and_read_back(jobs: JobStore) -> None:
    job = jobs.submit(
        JobKind.VOTE, {"input": "é?"}, submitted_by="ana", total=5, result_ref="r1", now=100.0
    )
    assert job.status == JobStatus.QUEUED and not job.finished
    assert job.lane == Lane.INTERACTIVE and job.executor == ExecutorName.IN_PROCESS
    assert (job.spec, job.submitted_by, job.total, job.done) == ({"input": "é?"}, "ana", 5, 0)
    assert jobs.get(job.id) == job
    assert jobs.for_ref("r1") == job and jobs.for_ref("nope") is None
    assert jobs.submit(JobKind.BATCH, {}).lane == Lane.BULK  # each kind has its lane
    with pytest.raises(NotFoundError, match="no job 'missing'"):
        jobs.get("missing")


def test_one_idempotency_key_makes_one_job(jobs: JobStore) -> None:
    first = jobs.submit(JobKind.VOTE, {"n": 1}, idempotency_key="form-1")
    again = jobs.submit(JobKind.VOTE, {"n": 2}, idempotency_key="form-1")
    assert again == first and again.spec == {"n": 1}  # the first submission's spec wins
    assert len(jobs.list_jobs()) == 1
    with pytest.raises(InputError, match="already started a vote job"):
        jobs.submit(JobKind.BATCH, {}, idempotency_key="form-1")
    # jobs without a key never collide
    jobs.submit(JobKind.VOTE, {})
    jobs.submit(JobKind.VOTE, {})
    assert len(jobs.list_jobs()) == 3


def test_two_threads_submitting_one_key_start_one_job(store_url: str) -> None:
    """Two tabs pressing the button at the same moment: each gets the same job, one row."""
    stores = [Store(store_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    seen: list[str] = []

    def press(store: Store) -> None:
        barrier.wait()
        mine = Owner.here()
        job = JobStore(store).submit(JobKind.VOTE, {}, idempotency_key="k", owner=mine)
        seen.append(job.id + ("*" if job.held_by(mine) else ""))

    threads = [threading.Thread(target=press, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert len(seen) == 2 and len({s.rstrip("*") for s in seen}) == 1
    assert sum(s.endswith("*") for s in seen) == 1  # exactly one of them runs it


def test_a_submission_with_an_owner_is_claimed_at_once(jobs: JobStore) -> None:
    mine = Owner.here()
    job = jobs.submit(JobKind.VOTE, {}, owner=mine, lease_s=10.0, now=50.0)
    assert job.status == JobStatus.RUNNING and job.held_by(mine)
    assert (job.started_at, job.lease_until, job.attempts) == (50.0, 60.0, 1)
    assert jobs.claim_next(Owner.here(), 10.0) is None  # nobody else can take it


def test_claims_take_the_interactive_lane_first_then_priority_then_age(jobs: JobStore) -> None:
    old_bulk = jobs.submit(JobKind.BATCH, {}, now=1.0)
    urgent_bulk = jobs.submit(JobKind.SWEEP, {}, priority=5, now=2.0)
    vote = jobs.submit(JobKind.VOTE, {}, now=3.0)
    later_vote = jobs.submit(JobKind.VOTE, {}, now=4.0)
    queued = jobs.submit(JobKind.CURVE, {}, executor=ExecutorName.QUEUE, now=0.0)
    assert [j.id for j in jobs.ahead_of(old_bulk.id)] == [vote.id, later_vote.id, urgent_bulk.id]
    order = []
    while (job := jobs.claim_next(Owner.here(), 30.0, now=10.0)) is not None:
        order.append(job.id)
        assert job.status == JobStatus.RUNNING and job.attempts == 1
    assert order == [vote.id, later_vote.id, urgent_bulk.id, old_bulk.id]
    # the queue's job is only for queue workers
    assert jobs.get(queued.id).status == JobStatus.QUEUED
    got = jobs.claim_next(Owner.here(), 30.0, executor="queue", kinds=[JobKind.CURVE])
    assert got is not None and got.id == queued.id


def test_claims_can_be_limited_to_lanes_and_kinds(jobs: JobStore) -> None:
    batch = jobs.submit(JobKind.BATCH, {})
    vote = jobs.submit(JobKind.VOTE, {})
    assert jobs.claim_next(Owner.here(), 30.0, kinds=["sweep"]) is None
    got = jobs.claim_next(Owner.here(), 30.0, lanes=[Lane.BULK])
    assert got is not None and got.id == batch.id
    assert jobs.get(vote.id).status == JobStatus.QUEUED
    with pytest.raises(InputError, match="unknown lane 'fast': use interactive, bulk"):
        jobs.claim_next(Owner.here(), 30.0, lanes=["fast"])


def test_a_job_is_claimed_once(jobs: JobStore) -> None:
    job = jobs.submit(JobKind.BATCH, {})
    first = jobs.claim(job.id, Owner.here(), 30.0)
    assert first is not None and first.status == JobStatus.RUNNING
    assert jobs.claim(job.id, Owner.here(), 30.0) is None


def test_concurrent_claimers_share_the_queue_without_taking_one_job_twice(
    store_url: str,
) -> None:
    with Store(store_url) as s:
        ids = {JobStore(s).submit(JobKind.BATCH, {}, now=float(i)).id for i in range(20)}
    taken: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def worker() -> None:
        with Store(store_url) as s:
            js = JobStore(s)
            barrier.wait()
            while (job := js.claim_next(Owner.here(), 30.0)) is not None:
                with lock:
                    taken.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)


def test_heartbeat_renews_the_lease_and_carries_a_cancel(jobs: JobStore) -> None:
    mine = Owner.here()
    job = jobs.submit(JobKind.BATCH, {}, owner=mine, lease_s=10.0, now=0.0)
    beat = jobs.heartbeat(job.id, mine.token, 10.0, now=5.0)
    assert beat.held and not beat.cancel_requested
    assert jobs.get(job.id).lease_until == 15.0
    asked = jobs.request_cancel(job.id)
    assert asked.status == JobStatus.RUNNING and asked.cancel_requested  # its executor stops it
    assert jobs.heartbeat(job.id, mine.token, 10.0, now=6.0).cancel_requested
    assert not jobs.heartbeat(job.id, "t-stranger", 10.0).held


def test_progress_and_finish_need_the_claim(jobs: JobStore) -> None:
    mine = Owner.here()
    job = jobs.submit(JobKind.BATCH, {}, owner=mine, total=10)
    assert jobs.progress(job.id, mine.token, done=3, note="waiting behind batch b1")
    seen = jobs.get(job.id)
    assert (seen.done, seen.total, seen.note) == (3, 10, "waiting behind batch b1")
    assert "3/10" in seen.describe() and "waiting behind batch b1" in seen.describe()
    assert jobs.progress(job.id, mine.token, note="", result_ref="b9")
    assert jobs.get(job.id).note is None and jobs.get(job.id).result_ref == "b9"
    # a stranger's claim changes nothing
    assert not jobs.progress(job.id, "t-stranger", done=9)
    assert not jobs.finish(job.id, "t-stranger", JobStatus.DONE)
    assert jobs.get(job.id).done == 3
    with pytest.raises(InputError, match="not running"):
        jobs.finish(job.id, mine.token, JobStatus.RUNNING)
    assert jobs.finish(job.id, mine.token, "done", result={"runs": 10}, now=99.0)
    end = jobs.get(job.id)
    assert (end.status, end.result, end.finished_at) == ("done", {"runs": 10}, 99.0)
    assert end.owner is None
    assert end.finished and end.result_ref == "b9"
    # a finished job cannot be finished again, nor cancelled
    assert not jobs.finish(job.id, mine.token, JobStatus.FAILED)
    assert jobs.request_cancel(job.id).status == JobStatus.DONE


def test_a_queued_job_cancelled_ends_at_once_and_is_never_claimed(jobs: JobStore) -> None:
    job = jobs.submit(JobKind.SWEEP, {})
    cancelled = jobs.request_cancel(job.id, now=7.0)
    assert cancelled.status == JobStatus.CANCELLED and cancelled.finished_at == 7.0
    assert cancelled.error == "cancelled before it started"
    assert jobs.claim_next(Owner.here(), 30.0) is None
    with pytest.raises(NotFoundError):
        jobs.request_cancel("missing")


def test_list_filters_newest_first(jobs: JobStore) -> None:
    a = jobs.submit(JobKind.VOTE, {}, submitted_by="ana", now=1.0)
    b = jobs.submit(JobKind.BATCH, {}, submitted_by="bo", now=2.0)
    c = jobs.submit(JobKind.VOTE, {}, submitted_by="ana", now=3.0)
    jobs.request_cancel(c.id)
    assert [j.id for j in jobs.list_jobs()] == [c.id, b.id, a.id]
    assert [j.id for j in jobs.list_jobs(kinds=["vote"])] == [c.id, a.id]
    assert [j.id for j in jobs.list_jobs(statuses=[JobStatus.QUEUED])] == [b.id, a.id]
    assert [j.id for j in jobs.list_jobs(submitted_by="bo")] == [b.id]
    assert [j.id for j in jobs.list_jobs(limit=1)] == [c.id]
    with pytest.raises(InputError, match="unknown job status 'stuck'"):
        jobs.list_jobs(statuses=["stuck"])


def test_an_expired_lease_on_another_host_is_reaped_with_the_reason(jobs: JobStore) -> None:
    batch = jobs.submit(JobKind.BATCH, {}, owner=other("t-b"), lease_s=30.0, now=0.0)
    vote = jobs.submit(JobKind.VOTE, {}, owner=other("t-v"), lease_s=30.0, now=0.0)
    assert jobs.reap(now=29.0) == []  # the lease still holds
    reaped = {r.job_id: r for r in jobs.reap(now=31.0)}
    assert set(reaped) == {batch.id, vote.id}
    assert reaped[vote.id].reason == (
        "its executor (pid 4242 on another-host.invalid) stopped renewing its lease "
        "(expired 00:00:30 UTC)"
    )
    # a batch resumes from the store: it is queued again, with why
    again = jobs.get(batch.id)
    assert again.status == JobStatus.QUEUED and again.owner is None
    assert again.note is not None and again.note.startswith("resumed: its executor")
    # a vote is marked, never shown running forever
    dead = jobs.get(vote.id)
    assert dead.status == JobStatus.INTERRUPTED and dead.error == reaped[vote.id].reason
    assert dead.finished_at == 31.0
    # the old executor, waking up, changes nothing
    assert not jobs.heartbeat(batch.id, "t-b", 30.0).held
    assert not jobs.finish(vote.id, "t-v", JobStatus.DONE)
    # the resumed batch is claimed again, its attempts counted
    taken = jobs.claim_next(Owner.here(), 30.0, now=32.0)
    assert taken is not None and taken.id == batch.id and taken.attempts == 2


def test_on_this_host_a_dead_process_is_reaped_at_once_and_a_live_one_never(
    jobs: JobStore,
) -> None:
    here = socket.gethostname()
    stalled = Owner(here, os.getppid(), "t-parent", 0.0)
    alive = jobs.submit(JobKind.VOTE, {}, owner=stalled, lease_s=1.0, now=0.0)
    gone = Owner(here, dead_pid(), "t-dead", 0.0)
    dead = jobs.submit(JobKind.VOTE, {}, owner=gone, lease_s=1e9, now=0.0)
    reaped = jobs.reap(now=10_000.0)
    assert [r.job_id for r in reaped] == [dead.id]
    assert reaped[0].reason == f"its executor (pid {gone.pid} on {here}) has exited"
    assert jobs.get(alive.id).status == JobStatus.RUNNING


def test_a_job_that_keeps_losing_its_executor_is_marked_after_its_attempts(
    jobs: JobStore,
) -> None:
    job = jobs.submit(JobKind.BATCH, {})
    for attempt in range(1, 4):
        claimed = jobs.claim(job.id, other(f"t{attempt}"), 30.0, now=100.0 * attempt)
        assert claimed is not None and claimed.attempts == attempt
        (reaped,) = jobs.reap(now=100.0 * attempt + 31.0, max_attempts=3)
        expected = JobStatus.QUEUED if attempt < 3 else JobStatus.INTERRUPTED
        assert reaped.status == expected
    assert jobs.get(job.id).status == JobStatus.INTERRUPTED


def test_bad_values_are_refused_and_store_nothing(jobs: JobStore) -> None:
    with pytest.raises(InputError, match="unknown job kind 'essay'"):
        jobs.submit("essay", {})
    with pytest.raises(InputError, match="unknown executor 'cloud'"):
        jobs.submit(JobKind.VOTE, {}, executor="cloud")
    assert jobs.list_jobs() == []


def test_an_active_key_holds_only_while_its_job_is_in_flight(jobs: JobStore) -> None:
    """A form's submission: pressed again while it runs, the same job; after it ended, anew."""
    mine = Owner.here()
    first = jobs.submit(JobKind.VOTE, {}, active_key="ana:vote:abc", owner=mine)
    again = jobs.submit(JobKind.VOTE, {}, active_key="ana:vote:abc", owner=Owner.here())
    assert again.id == first.id and not again.held_by(Owner.here())
    assert jobs.finish(first.id, mine.token, JobStatus.DONE)
    second = jobs.submit(JobKind.VOTE, {}, active_key="ana:vote:abc")
    assert second.id != first.id
    # cancelled before it started, or reaped: the key is free again as well
    jobs.request_cancel(second.id)
    third = jobs.submit(JobKind.VOTE, {}, active_key="ana:vote:abc", owner=other(), now=0.0)
    assert third.id not in (first.id, second.id)
    jobs.reap(now=1e6)
    assert jobs.submit(JobKind.VOTE, {}, active_key="ana:vote:abc").id != third.id
    # a lasting key stays taken after its job ended
    kept = jobs.submit(JobKind.VOTE, {}, idempotency_key="cli-1", owner=mine)
    jobs.finish(kept.id, mine.token, JobStatus.DONE)
    assert jobs.submit(JobKind.VOTE, {}, idempotency_key="cli-1").id == kept.id
    with pytest.raises(InputError, match="not both"):
        jobs.submit(JobKind.VOTE, {}, idempotency_key="x", active_key="y")
