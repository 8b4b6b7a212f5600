"""The call table's rows: the raw reply, on one line and as written, beside the vote."""

from __future__ import annotations

from core.calls import REPLY_CHARS, call_rows, call_state, reply_line
from core.result import CallResult, CallStatus


def test_each_row_has_the_raw_reply_and_the_vote_it_was_read_as() -> None:
    calls = [
        CallResult(slot=0, model="m", status=CallStatus.OK, answer="yes", raw="**Yes.**\n\nSure."),
        CallResult(slot=1, model="m", status=CallStatus.INVALID, raw="No idea", error="no answer"),
        CallResult(slot=2, model="m", status=CallStatus.ERROR, error="HTTP 500"),
    ]
    rows = call_rows(calls, now=0.0)
    assert [(r.reply, r.vote) for r in rows] == [
        ("**Yes.** Sure.", "yes"),
        ("No idea", ""),
        ("", ""),
    ]
    assert [r.state for r in rows] == ["ok", "invalid: no answer", "error: HTTP 500"]


def test_a_long_reply_is_cut_on_one_line() -> None:
    line = reply_line("word " * 100)
    assert len(line) == REPLY_CHARS and line.endswith("…") and "\n" not in line


def test_a_running_call_says_for_how_long() -> None:
    call = CallResult(slot=0, model="m", status=CallStatus.RUNNING, started_at=10.0)
    assert call_state(call, now=12.5) == "running 2.5 s"
