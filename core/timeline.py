"""The fan-out timeline: one lane per request, the moments each went through, and the run's marks.

What the Run page and a run's details draw while the calls land and after: when each call was
queued, when it held its ceilings and went out, its first token, each retry, and how it ended;
then when an early stop or a fastest answer cut the rest, and when the run decided. Samples an
endpoint drew in one request with ``n`` are one lane with k samples and the prompt billed once,
as they were sent, not k lanes of which all but one read 0 prompt tokens.

Pure: it reads calls and times, never the clock (``now`` is given for calls still going).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from core.engine import call_order
from core.result import CallResult, CallStatus, RunResult


@dataclass(frozen=True)
class Lane:
    """One request: its slots (several when samples went together), its moments in seconds from
    the run's start (None: not reached), how it ended, and what it consumed."""

    slots: tuple[int, ...]
    phase: str
    model: str
    status: CallStatus
    queued: float | None
    started: float | None
    first_token: float | None
    ended: float | None
    retries: tuple[float, ...] = ()
    tokens_in: int | None = None
    tokens_out: int | None = None
    cached: bool = False
    answers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def samples(self) -> int:
        return len(self.slots)

    @property
    def name(self) -> str:
        """``slot 3`` or ``slots 0-4`` (one request, 5 samples), with the phase when not the
        panel's."""
        where = (
            f"slot {self.slots[0]}"
            if len(self.slots) == 1
            else f"slots {self.slots[0]}-{self.slots[-1]}"
        )
        return where if self.phase == "panel" else f"{self.phase} {where}"


@dataclass(frozen=True)
class Timeline:
    lanes: list[Lane]
    stopped: float | None = None  # the early stop or the fastest answer, from the start
    decided: float | None = None
    now: float | None = None  # a run still going: how far the clock has gone
    origin: float | None = None  # unix time of second 0

    @property
    def empty(self) -> bool:
        return not any(lane.started is not None or lane.queued is not None for lane in self.lanes)


def _sum(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def lanes_of(calls: Sequence[CallResult], origin: float) -> list[Lane]:
    """The calls as requests: calls that share a ``request_slot`` are one lane."""
    groups: dict[tuple[str, int], list[CallResult]] = {}
    for call in sorted(calls, key=call_order):
        key = (call.phase, call.request_slot if call.request_slot is not None else call.slot)
        groups.setdefault(key, []).append(call)

    def at(ts: float | None) -> float | None:
        return None if ts is None else max(0.0, ts - origin)

    out = []
    for (phase, _), group in groups.items():
        first = group[0]
        ttft = min((c.ttft_ms for c in group if c.ttft_ms is not None), default=None)
        started = at(first.started_at)
        ended = [c.ended_at for c in group if c.ended_at is not None]
        # a request ends when its last sample is read; its status is the first sample's
        out.append(
            Lane(
                slots=tuple(c.slot for c in group),
                phase=phase,
                model=first.model,
                status=first.status,
                queued=at(first.queued_at),
                started=started,
                first_token=None if ttft is None or started is None else started + ttft / 1000,
                ended=at(max(ended)) if ended else None,
                retries=tuple(t for t in (at(r) for r in first.retry_at) if t is not None),
                tokens_in=_sum([c.tokens_in for c in group]),  # the prompt billed once
                tokens_out=_sum([c.tokens_out for c in group]),
                cached=first.cached,
                answers=tuple(c.answer for c in group if c.answer is not None),
            )
        )
    return out


def _origin(calls: Sequence[CallResult], started_at: float | None) -> float | None:
    times: list[float | None] = [started_at]
    times += [c.queued_at if c.queued_at is not None else c.started_at for c in calls]
    known = [t for t in times if t is not None]
    return min(known) if known else None


def timeline(
    calls: Sequence[CallResult],
    *,
    started_at: float | None = None,
    stopped_at: float | None = None,
    decided_at: float | None = None,
    now: float | None = None,
) -> Timeline:
    """The timeline of calls, in seconds from ``started_at`` (default: the first moment any call
    reached). ``now`` is given while the run goes on: lanes still open run to it."""
    origin = _origin(calls, started_at)
    if origin is None:
        return Timeline(lanes=lanes_of(calls, 0.0))

    def at(ts: float | None) -> float | None:
        return None if ts is None else max(0.0, ts - origin)

    return Timeline(
        lanes=lanes_of(calls, origin),
        stopped=at(stopped_at),
        decided=at(decided_at),
        now=at(now),
        origin=origin,
    )


def run_timeline(result: RunResult) -> Timeline:
    """A finished run's timeline, from what the store keeps."""
    return timeline(result.calls, stopped_at=result.stopped_at, decided_at=result.decided_at)
