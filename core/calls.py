"""The call table of a run, as the dashboard shows it: each call's state, its raw reply beside
the vote it was read as, and what it took. Built here so every page draws the same rows."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.cost import call_cost_text, dollars
from core.result import CallResult, CallStatus

FAILED_STATUSES = (CallStatus.INVALID, CallStatus.ERROR, CallStatus.TIMEOUT, CallStatus.CANCELLED)

CALL_COLUMNS = [
    "slot",
    "phase",
    "model",
    "state",
    "reply",
    "vote",
    "latency",
    "tokens in / out",
    "cached",
    "cost",
    "retries",
]
"""The call table's columns, in order, on every page."""

REPLY_CHARS = 160
"""A reply longer than this is cut in the table; the whole reply stays in the raw replies."""


def call_state(call: CallResult, now: float | None = None) -> str:
    """What a call is doing or how it ended, with the reason when it did not answer."""
    status = call.status
    if status == CallStatus.RUNNING and call.started_at is not None:
        return f"running {(now or time.time()) - call.started_at:.1f} s"
    if status in FAILED_STATUSES and call.error:
        return f"{status.value}: {call.error}"
    if status == CallStatus.OK and call.cached:
        return "ok (reused)"
    return status.value


def reply_line(raw: str | None, limit: int = REPLY_CHARS) -> str:
    """A raw reply on one line, bounded: the text as the model wrote it, spaces folded."""
    flat = " ".join((raw or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class CallRow:
    """One line of the call table. ``reply`` is the raw reply (plain text, one line) and
    ``vote`` what the format read it as; empty when the call gave no vote. ``tokens_cached``
    is the part of the prompt read from the provider's cache; ``cost`` is worded as
    :func:`core.cost.describe_cost` words it (``-`` while the call runs)."""

    slot: int
    phase: str
    model: str
    state: str
    reply: str
    vote: str
    final: bool
    latency_ms: float | None
    tokens_in: int | None
    tokens_out: int | None
    tokens_cached: int | None
    cost_usd: float | None
    cost: str
    retries: int
    billed_on: int | None = None  # a later sample of one request: the slot its prompt is on

    @property
    def tokens(self) -> str:
        """``in / out``, ``?`` for a side the provider did not report, ``-`` for neither."""
        if self.tokens_in is None and self.tokens_out is None:
            return "-"
        if self.billed_on is not None:  # not 0 prompt tokens: one prompt for the request
            out = "?" if self.tokens_out is None else str(self.tokens_out)
            return f"prompt on slot {self.billed_on} / {out}"
        return " / ".join("?" if n is None else str(n) for n in (self.tokens_in, self.tokens_out))


def call_rows(
    calls: Sequence[CallResult],
    now: float | None = None,
    money: Callable[[float | None], str] = dollars,
) -> list[CallRow]:
    """The rows of the call table, in the order given (``money`` formats dollars)."""
    now = time.time() if now is None else now
    return [
        CallRow(
            slot=call.slot,
            phase=call.phase,
            model=call.model,
            state=call_state(call, now),
            reply=reply_line(call.raw),
            vote=call.answer if call.status == CallStatus.OK and call.answer is not None else "",
            final=call.status.final,
            latency_ms=call.latency_ms,
            tokens_in=call.tokens_in,
            tokens_out=call.tokens_out,
            tokens_cached=call.tokens_cached,
            cost_usd=call.cost_usd,
            cost=call_cost_text(call, money) if call.status.final else "-",
            retries=call.retries,
            billed_on=call.request_slot
            if call.request_slot is not None and call.request_slot != call.slot
            else None,
        )
        for call in calls
    ]
