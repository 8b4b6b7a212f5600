"""Who runs a batch or a job: its owner and the lease the owner keeps renewing.

Two processes running one batch pay for every call twice (a ``--resume`` started while the
batch still ran elsewhere once re-made 1,277 of 1,500 calls). So a batch is claimed before its
first call: the claim records the owner (host, pid, a token unique to the claim, since when)
and a lease, renewed by a heartbeat while the batch runs. Another claim is refused while the
owner is alive: on the same host while its pid exists, on another host while its lease lasts.
A dead owner's claim (pid gone, or lease expired) can be taken over. Times are unix seconds of
the claiming host's clock, so hosts sharing a store need clocks roughly in step (NTP).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Owner:
    """The process that runs a batch or a job; ``token`` tells two claims of one process
    apart."""

    host: str
    pid: int
    token: str
    since: float

    @classmethod
    def here(cls) -> Owner:
        """A new claim by this process."""
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex, time.time())

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"pid {self.pid} on {self.host}, since {when}"


BatchOwner = Owner


def holds(owner: Owner, lease_until: float | None, now: float) -> bool:
    """Whether ``owner`` still holds its batch: on this host its process decides (a stalled
    process keeps its claim, a killed one loses it at once); elsewhere its lease does."""
    if owner.host == socket.gethostname():
        return _pid_alive(owner.pid)
    return lease_until is not None and lease_until > now


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True
