"""The shapes a run produces: calls, the decision, the run result, and the engine's events.

``RunResult.to_json()`` is the contract of ``tally run --json`` and of the library (DESIGN.md).
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.spec import RunSpec


class CallStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    INVALID = "invalid"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (CallStatus.PENDING, CallStatus.RUNNING)


CallPhase = Literal["panel", "expand", "escalate"]


class CallResult(BaseModel):
    """One request to one model for one slot, with its retries, in its end state.

    ``answer`` is the normalised vote (a string) for ``ok`` calls; ``raw`` keeps the reply
    text whatever the status, so an invalid answer can be inspected.

    Tokens and cost are summed over the call's attempts, failed ones included. ``tokens_in``
    is the whole prompt and ``tokens_cached`` the part of it read from the provider's cache.
    ``cost_usd`` is ``None`` when the cost is unknown (no price, or an attempt whose usage the
    provider never reported); ``cost_known_usd`` is then the part that is known.
    """

    slot: int
    model: str
    sample: int = 0
    phase: CallPhase = "panel"
    status: CallStatus = CallStatus.PENDING
    answer: str | None = None
    raw: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    cost_usd: float | None = None
    cost_known_usd: float | None = None
    retries: int = 0
    cached: bool = False
    queued_at: float | None = None  # unix seconds: when the fan-out asked for the call
    started_at: float | None = None  # when it held its ceilings and went out
    ended_at: float | None = None
    retry_at: list[float] = Field(default_factory=list)  # when each retry was decided
    request_slot: int | None = None  # several samples drawn in one request: its first slot


class DecisionStatus(StrEnum):
    DECIDED = "decided"
    TIE = "tie"
    ESCALATED = "escalated"  # decided by an escalate branch
    NEEDS_REVIEW = "needs_review"
    RESOLVED = "resolved"  # a reviewer decided
    NO_CONVERGENCE = "no_convergence"  # three or more valid votes, every one different
    FAILED = "failed"  # no quorum, a threshold not met, no acceptable answer, abstained


class Outcome(StrEnum):
    """What the vote itself gave, before any tie-break (the rows of docs/decisions.md)."""

    DECIDED = "decided"
    TIE = "tie"
    THRESHOLD_NOT_MET = "threshold_not_met"
    NO_CONVERGENCE = "no_convergence"
    NO_QUORUM = "no_quorum"
    NO_ANSWER = "no_answer"
    LOW_CONFIDENCE = "low_confidence"  # a winner below the policy's escalate-below confidence

    @property
    def open(self) -> bool:
        """Whether the tie-break chain takes this outcome up."""
        return self in (
            Outcome.TIE,
            Outcome.THRESHOLD_NOT_MET,
            Outcome.NO_CONVERGENCE,
            Outcome.LOW_CONFIDENCE,
        )


class QuorumCheck(BaseModel):
    """The quorum a decision was taken under: shown on every decision, so a reader sees how
    many valid votes it rested on and how many it needed."""

    need: int  # valid votes needed
    valid: int  # valid votes there were
    panel: int  # the panel's size, N
    rule: str  # where ``need`` comes from

    @property
    def met(self) -> bool:
        return self.valid >= self.need

    def describe(self) -> str:
        return f"quorum {self.need} of {self.panel} ({self.rule}): {self.valid} valid"


class Degraded(BaseModel):
    """A decision counted on fewer votes than were planned, and why."""

    planned: int  # calls planned for the vote: the panel's and any expansion's
    counted: int  # valid votes counted
    invalid: int = 0
    errors: int = 0
    timeouts: int = 0
    cut: int = 0  # cancelled before they answered (not by an early stop)
    why: str = ""


class Decision(BaseModel):
    status: DecisionStatus
    label: str | None = None
    branches: list[str] = Field(default_factory=list)  # tie-break branches taken, in order
    margin: float | None = None  # winner's count (or weight) minus the runner-up's
    reason: str = ""  # one line a person can read
    tied: list[str] = Field(default_factory=list)  # the candidates an open outcome left
    fields: dict[str, str | None] | None = None  # json format: the per-field winners
    outcome: Outcome | None = None  # the vote's own outcome (None: not taken by a vote)
    quorum: QuorumCheck | None = None
    degraded: Degraded | None = None  # None: every planned call was counted
    # the posterior probability that ``label`` is right (core.confidence); None without a
    # label, and for a label a branch gave rather than the votes
    confidence: float | None = None


class MissingVote(BaseModel):
    """A slot a re-vote has no vote for (its call was cancelled: early stop, fastest-acceptable
    or the user) and whose vote could change the decision under the re-vote's policy."""

    slot: int
    model: str


class RunResult(BaseModel):
    run_id: str
    input: str
    spec: RunSpec  # what ran: task, panel (models, params, weights, N) and policy
    decision: Decision
    votes: dict[str, int]
    field_votes: dict[str, dict[str, int]] | None = None
    calls: list[CallResult]
    cost_usd: float | None  # None when any call's cost is unknown
    cost_known_usd: float = 0.0  # the known part: all of it when cost_usd is known
    cost_unknown_calls: int = 0
    latency_ms: float
    batch_id: str | None = None
    item_id: str | None = None
    gold: str | None = None
    created_at: float = Field(default_factory=time.time)
    missing: list[MissingVote] = Field(default_factory=list)  # re-vote: votes it would need
    stopped_at: float | None = None  # unix seconds: when an early stop or a winner cut the rest
    decided_at: float | None = None  # when the decision was taken

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


EventKind = Literal[
    "run_started",
    "call_started",
    "call_retry",
    "call_usage",
    "call_finished",
    "concurrency",
    "tie_break",
    "decision",
]


class Event(BaseModel):
    """What the engine reports while a run goes on; the CLI and the dashboard render these."""

    kind: EventKind
    run_id: str
    at: float = Field(default_factory=time.time)
    slot: int | None = None
    call: CallResult | None = None
    decision: Decision | None = None
    message: str = ""
