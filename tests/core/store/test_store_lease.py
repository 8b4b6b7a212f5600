"""A batch's owner and lease in the store, on SQLite and PostgreSQL: one live owner at a time,
a dead one taken over, a lost claim that changes nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from core.errors import BusyError
from core.store import Store
from core.store.lease import BatchOwner, holds
from tests.specs import spec

ELSEWHERE = "another-host.invalid"


def new_batch(store: Store) -> str:
    return store.create_batch(name="b", source="cli", spec=spec(), concurrency=2, total=1)


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_a_live_owner_on_another_host_holds_until_its_lease_ends(store: Store) -> None:
    bid = new_batch(store)
    other = BatchOwner(ELSEWHERE, 4242, "t-other", 1000.0)
    store.claim_batch(bid, other, 30.0, now=1000.0)
    with pytest.raises(BusyError) as info:
        store.claim_batch(bid, BatchOwner.here(), 30.0, now=1029.0)
    message = str(info.value)
    assert "pid 4242 on another-host.invalid, since 1970-01-01 00:16:40 UTC" in message
    assert "\n" not in message
    # a heartbeat pushes the lease on; past its end the batch can be taken over
    assert store.renew_lease(bid, "t-other", 30.0, now=1029.0)
    with pytest.raises(BusyError):
        store.claim_batch(bid, BatchOwner.here(), 30.0, now=1058.0)
    mine = BatchOwner.here()
    store.claim_batch(bid, mine, 30.0, now=1060.0)
    assert store.batch_owner(bid) == (mine, 1090.0)
    # the old owner, waking up, finds its claim gone and changes nothing
    assert not store.renew_lease(bid, "t-other", 30.0, now=1061.0)
    assert not store.release_batch(bid, "t-other", "interrupted")
    assert store.get_batch(bid).status == "running"


def test_on_this_host_the_process_decides_not_the_lease(store: Store) -> None:
    bid = new_batch(store)
    here = socket.gethostname()
    # a stalled process of this host keeps its batch even when its lease ran out
    store.claim_batch(bid, BatchOwner(here, os.getppid(), "t-parent", 1.0), 1.0, now=1.0)
    with pytest.raises(BusyError):
        store.claim_batch(bid, BatchOwner.here(), 30.0, now=10_000.0)
    # a killed one loses it at once, lease or not
    bid2 = new_batch(store)
    store.claim_batch(bid2, BatchOwner(here, dead_pid(), "t-dead", 1.0), 1e9, now=1.0)
    store.claim_batch(bid2, BatchOwner.here(), 30.0, now=2.0)


def test_release_ends_the_claim_and_keeps_the_last_owner(store: Store) -> None:
    bid = new_batch(store)
    mine = BatchOwner.here()
    store.claim_batch(bid, mine, 30.0)
    assert store.release_batch(bid, mine.token, "interrupted")
    assert store.batch_owner(bid) == (None, None)
    info = store.get_batch(bid)
    assert info.status == "interrupted" and info.finished_at is not None
    # an unowned batch is claimed by whoever resumes it; the claim marks it running again
    store.claim_batch(bid, BatchOwner.here(), 30.0)
    assert store.get_batch(bid).status == "running"


def test_holds_reads_the_lease_only_for_other_hosts() -> None:
    other = BatchOwner(ELSEWHERE, 1, "t", 0.0)
    assert holds(other, 10.0, now=5.0) and not holds(other, 10.0, now=11.0)
    assert not holds(other, None, now=0.0)
