"""The SQL shape of what Tally keeps, and how runs and calls map onto it.

Conventions, the same in every table so SQLite and PostgreSQL hold identical data:
- every time is unix seconds as a float (``time.time()``), UTC by definition; buckets by hour
  or day are computed on those numbers, so no timezone ever depends on the server;
- structured values (task, policy, votes, branches...) are TEXT holding JSON, so the schema stays
  portable and a row reads the same from either backend;
- ids of runs, batches, sweeps and curves are short hex strings made by the caller or the store;
  calls and reviews have integer ids.

Indexes follow the dashboard's queries: recent runs by status, runs of a batch in item order,
calls of a run, calls per model, and cache look-ups by key. An index already covered by the
leading column of a composite one is not declared twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import Double, Index, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.panel import Panel
from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.spec import RunSpec

RUNNING = "running"
"""The status of a run row while its calls are in flight (not a decision status)."""

BATCH_STATUSES = ("running", "done", "cancelled", "interrupted", "failed")
FINAL_CALL_STATUSES = tuple(s.value for s in CallStatus if s.final)
PHASE_ORDER = {"panel": 0, "expand": 1, "escalate": 2}


class BatchRecord(SQLModel, table=True):
    __tablename__ = "batch"

    id: str = Field(primary_key=True)
    created_at: float = Field(sa_type=Double, index=True)
    name: str
    source: str
    task_json: str = Field(sa_type=Text)
    panel_json: str = Field(sa_type=Text)
    policy_json: str = Field(sa_type=Text)
    columns_json: str = Field(sa_type=Text)
    concurrency: int
    total: int
    status: str
    finished_at: float | None = Field(default=None, sa_type=Double)
    # who runs it (``core.store.lease``): set by a claim, the token cleared on release
    owner_host: str | None = None
    owner_pid: int | None = None
    owner_token: str | None = None
    owner_since: float | None = Field(default=None, sa_type=Double)
    lease_until: float | None = Field(default=None, sa_type=Double)
    submitted_by: str | None = Field(default=None, sa_type=Text)
    """Who started it (``core.auth.Identity.to_json``); NULL before migration 0009."""


class BatchItemRecord(SQLModel, table=True):
    """The inputs of a batch, kept so an interrupted batch can resume without its file."""

    __tablename__ = "batch_item"

    batch_id: str = Field(foreign_key="batch.id", primary_key=True, ondelete="CASCADE")
    item_index: int = Field(primary_key=True)
    item_id: str | None = None
    input: str = Field(sa_type=Text)
    gold: str | None = None


class RunRecord(SQLModel, table=True):
    __tablename__ = "run"
    __table_args__ = (
        Index("ix_run_status_created_at", "status", "created_at"),
        Index("ix_run_batch_id_item_index", "batch_id", "item_index"),
    )

    id: str = Field(primary_key=True)
    created_at: float = Field(sa_type=Double, index=True)
    finished_at: float | None = Field(default=None, sa_type=Double)
    source: str
    batch_id: str | None = None
    item_id: str | None = None
    item_index: int | None = None
    input: str = Field(sa_type=Text)
    task_name: str | None = Field(default=None, index=True)
    task_json: str = Field(sa_type=Text)
    panel_json: str = Field(sa_type=Text)
    policy_json: str = Field(sa_type=Text)
    status: str
    label: str | None = None
    branches_json: str = Field(default="[]", sa_type=Text)
    tied_json: str = Field(default="[]", sa_type=Text)
    margin: float | None = Field(default=None, sa_type=Double)
    reason: str = Field(default="", sa_type=Text)
    fields_json: str | None = Field(default=None, sa_type=Text)
    outcome: str | None = None  # the vote's own outcome (docs/decisions.md); NULL before 0005
    quorum_json: str | None = Field(default=None, sa_type=Text)
    degraded_json: str | None = Field(default=None, sa_type=Text)
    confidence: float | None = Field(default=None, sa_type=Double)  # NULL before 0007
    votes_json: str = Field(default="{}", sa_type=Text)
    field_votes_json: str | None = Field(default=None, sa_type=Text)
    n_calls: int = 0
    cost_usd: float | None = Field(default=None, sa_type=Double)  # NULL: unknown
    cost_known_usd: float | None = Field(default=None, sa_type=Double)  # the known part
    cost_unknown_calls: int = 0
    latency_ms: float | None = Field(default=None, sa_type=Double)
    gold: str | None = None
    submitted_by: str | None = Field(default=None, sa_type=Text)
    """Who started a run of their own (a batch's runs: the batch's); NULL before 0009."""
    stopped_at: float | None = Field(default=None, sa_type=Double)  # early stop or a winner
    decided_at: float | None = Field(default=None, sa_type=Double)


class CallRecord(SQLModel, table=True):
    __tablename__ = "call"
    __table_args__ = (
        UniqueConstraint("run_id", "phase", "slot", name="uq_call_run_phase_slot"),
        Index("ix_call_model_id", "model", "id"),  # per model, newest first
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", ondelete="CASCADE")
    slot: int
    model: str
    sample: int = 0
    phase: str
    status: str
    answer: str | None = Field(default=None, sa_type=Text)
    raw: str | None = Field(default=None, sa_type=Text)
    error: str | None = Field(default=None, sa_type=Text)
    latency_ms: float | None = Field(default=None, sa_type=Double)
    ttft_ms: float | None = Field(default=None, sa_type=Double)
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    cost_usd: float | None = Field(default=None, sa_type=Double)
    cost_known_usd: float | None = Field(default=None, sa_type=Double)
    retries: int = 0
    cached: bool = False
    queued_at: float | None = Field(default=None, sa_type=Double)
    started_at: float | None = Field(default=None, sa_type=Double)
    ended_at: float | None = Field(default=None, sa_type=Double)
    retry_at: str = Field(default="[]", sa_type=Text)  # JSON list of unix times
    request_slot: int | None = None
    cache_key: str | None = Field(default=None, index=True)


class ReviewRecord(SQLModel, table=True):
    """One reviewer's decision on a run. Rows are only ever inserted: the audit trail.

    ``stage`` is ``single`` (one reviewer resolved it), ``blind`` (one of the two decisions of
    a ``human:2`` review, ``seat`` 1 or 2, which resolve the run when they agree) or ``admin``
    (an admin settled two blind decisions that disagreed)."""

    __tablename__ = "review"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True, ondelete="CASCADE")
    reviewer: str
    label: str
    reason: str = Field(sa_type=Text)
    created_at: float = Field(sa_type=Double, index=True)
    previous_status: str
    panel_plurality: str | None = None
    previous_reason: str | None = Field(default=None, sa_type=Text)
    """The decision's reason the review replaced (None in reviews older than migration 0002)."""
    reviewer_issuer: str | None = None  # the signed-in identity; NULL before migration 0009
    reviewer_subject: str | None = None
    reviewer_email: str | None = None
    stage: str = Field(default="single", sa_column_kwargs={"server_default": "single"})
    seat: int | None = None


class ReviewClaimRecord(SQLModel, table=True):
    """A reviewer's claim on a waiting run: a lease the others see. A ``human:2`` run has two
    seats, every other run one; the primary key makes a seat held by one reviewer at a time."""

    __tablename__ = "review_claim"

    run_id: str = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE")
    seat: int = Field(primary_key=True)
    holder_issuer: str
    holder_subject: str
    holder_email: str | None = None
    holder_name: str
    claimed_at: float = Field(sa_type=Double)
    expires_at: float = Field(sa_type=Double)


class SweepRecord(SQLModel, table=True):
    __tablename__ = "sweep"

    id: str = Field(primary_key=True)
    created_at: float = Field(sa_type=Double, index=True)
    target: str
    params_json: str = Field(sa_type=Text)
    result_json: str = Field(sa_type=Text)


class CurveRecord(SQLModel, table=True):
    __tablename__ = "curve"

    id: str = Field(primary_key=True)
    created_at: float = Field(sa_type=Double, index=True)
    set_name: str
    params_json: str = Field(sa_type=Text)
    result_json: str = Field(sa_type=Text)


class JobRecord(SQLModel, table=True):
    """One piece of submitted work (``core.jobs``): what it is, who asked, where it stands.

    The claim index serves "the next queued job of this executor, interactive lane first,
    highest priority, oldest"; the idempotency key makes one form submission one job."""

    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_job_idempotency_key"),
        Index("ix_job_claim", "executor", "status", "lane", "priority", "created_at"),
        Index("ix_job_status_lease_until", "status", "lease_until"),
    )

    id: str = Field(primary_key=True)
    kind: str  # vote | batch | curve | sweep | revote
    spec_json: str = Field(sa_type=Text)
    submitted_by: str | None = None
    status: str  # queued | running | done | failed | cancelled | interrupted
    lane: str  # interactive | bulk
    priority: int = 0  # higher first, within a lane
    executor: str  # in-process | queue: who may claim it
    idempotency_key: str | None = None
    created_at: float = Field(sa_type=Double, index=True)
    started_at: float | None = Field(default=None, sa_type=Double)
    finished_at: float | None = Field(default=None, sa_type=Double)
    progress_done: int = 0
    progress_total: int | None = None
    note: str | None = Field(default=None, sa_type=Text)  # what it does or waits for now
    result_ref: str | None = None  # the run, batch, sweep or curve it made
    result_json: str | None = Field(default=None, sa_type=Text)
    error: str | None = Field(default=None, sa_type=Text)
    cancel_requested: bool = False
    attempts: int = 0  # claims so far: a reaped job that resumes counts again
    owner_host: str | None = None
    owner_pid: int | None = None
    lease_token: str | None = None
    heartbeat_at: float | None = Field(default=None, sa_type=Double)
    lease_until: float | None = Field(default=None, sa_type=Double)


class LimiterPaceRecord(SQLModel, table=True):
    """One provider's rate-limit pace shared by every worker (``core.limits``): seconds
    between request starts, the next start and a hold, on the database server's clock."""

    __tablename__ = "limiter_pace"

    provider: str = Field(primary_key=True)
    interval_s: float = Field(sa_type=Double)
    next_start: float = Field(sa_type=Double)
    blocked_until: float = Field(sa_type=Double)


metadata = SQLModel.metadata


def table(name: str) -> Table:
    """The Core table behind a record class: queries and bulk writes use Core, not the ORM."""
    return metadata.tables[name]


batch_t = table("batch")
batch_item_t = table("batch_item")
run_t = table("run")
call_t = table("call")
review_t = table("review")
review_claim_t = table("review_claim")
sweep_t = table("sweep")
curve_t = table("curve")
job_t = table("job")


# -- JSON columns ------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


def spec_columns(spec: RunSpec) -> dict[str, Any]:
    """The run spec as a run or batch row holds it: its JSON by part (task, the whole panel
    with every model's params and weight and N, policy), and the task's name to filter on."""
    stored = spec.to_json()
    return {
        "task_name": spec.task.name,
        "task_json": dumps(stored["task"]),
        "panel_json": dumps(stored["panel"]),
        "policy_json": dumps(stored["policy"]),
    }


class SpecCache:
    """``spec_columns`` remembered per spec object.

    Every run of a batch shares one frozen spec: its JSON is computed once instead of once
    per run.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._cache: dict[int, tuple[RunSpec, dict[str, Any]]] = {}

    def columns(self, spec: RunSpec) -> dict[str, Any]:
        hit = self._cache.get(id(spec))
        if hit is not None and hit[0] is spec:
            return hit[1]
        cols = spec_columns(spec)
        if len(self._cache) >= self.size:
            del self._cache[next(iter(self._cache))]
        self._cache[id(spec)] = (spec, cols)  # holding it keeps the id valid
        return cols


@lru_cache(maxsize=64)
def spec_from_columns(task_json: str, panel_json: str, policy_json: str) -> RunSpec:
    """The spec a stored row holds (rows of one batch share their JSON, so it is read once).
    Runs stored before the whole panel was kept hold slot names: see ``RunSpec.from_json``."""
    return RunSpec.from_json(
        {"task": loads(task_json), "panel": loads(panel_json), "policy": loads(policy_json)}
    )


@lru_cache(maxsize=256)
def slot_names(panel_json: str) -> tuple[str, ...]:
    """The model of every slot of a stored panel, whichever form it was stored in."""
    panel = loads(panel_json, [])
    if isinstance(panel, list):
        return tuple(str(name) for name in panel)
    return tuple(s.model.name for s in Panel.model_validate(panel).slots())


def start_row(
    run_id: str,
    input: str,
    spec: RunSpec,
    *,
    source: str,
    batch_id: str | None,
    item_id: str | None,
    item_index: int | None,
    gold: str | None,
    created_at: float,
    specs: SpecCache | None = None,
    submitted_by: str | None = None,
) -> dict[str, Any]:
    """The run row written when a run starts: status ``running``, no decision yet."""
    return {
        "id": run_id,
        "created_at": created_at,
        "finished_at": None,
        "source": source,
        "batch_id": batch_id,
        "item_id": item_id,
        "item_index": item_index,
        "input": input,
        **(specs.columns if specs else spec_columns)(spec),
        "status": RUNNING,
        "label": None,
        "branches_json": "[]",
        "tied_json": "[]",
        "margin": None,
        "reason": "",
        "fields_json": None,
        "outcome": None,
        "quorum_json": None,
        "degraded_json": None,
        "confidence": None,
        "votes_json": "{}",
        "field_votes_json": None,
        "n_calls": 0,
        "cost_usd": None,
        "cost_known_usd": None,
        "cost_unknown_calls": 0,
        "latency_ms": None,
        "gold": gold,
        "submitted_by": submitted_by,
        "stopped_at": None,
        "decided_at": None,
    }


def finish_row(
    result: RunResult, *, source: str, finished_at: float, item_index: int | None = None
) -> dict[str, Any]:
    """The complete run row of a finished run."""
    d = result.decision
    return {
        "id": result.run_id,
        "created_at": result.created_at,
        "finished_at": finished_at,
        "source": source,
        "batch_id": result.batch_id,
        "item_id": result.item_id,
        "item_index": item_index,
        "input": result.input,
        **spec_columns(result.spec),
        "status": d.status.value,
        "label": d.label,
        "branches_json": dumps(d.branches),
        "tied_json": dumps(d.tied),
        "margin": d.margin,
        "reason": d.reason,
        "fields_json": None if d.fields is None else dumps(d.fields),
        "outcome": None if d.outcome is None else d.outcome.value,
        "quorum_json": None if d.quorum is None else d.quorum.model_dump_json(),
        "degraded_json": None if d.degraded is None else d.degraded.model_dump_json(),
        "confidence": d.confidence,
        "votes_json": dumps(result.votes),
        "field_votes_json": None if result.field_votes is None else dumps(result.field_votes),
        "n_calls": len(result.calls),
        "cost_usd": result.cost_usd,
        "cost_known_usd": result.cost_known_usd,
        "cost_unknown_calls": result.cost_unknown_calls,
        "latency_ms": result.latency_ms,
        "gold": result.gold,
        "submitted_by": None,  # kept from the run's start (the finish upsert merges it)
        "stopped_at": result.stopped_at,
        "decided_at": result.decided_at,
    }


def call_row(run_id: str, call: CallResult, cache_key: str | None = None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "slot": call.slot,
        "model": call.model,
        "sample": call.sample,
        "phase": call.phase,
        "status": call.status.value,
        "answer": call.answer,
        "raw": call.raw,
        "error": call.error,
        "latency_ms": call.latency_ms,
        "ttft_ms": call.ttft_ms,
        "tokens_in": call.tokens_in,
        "tokens_out": call.tokens_out,
        "tokens_cached": call.tokens_cached,
        "cost_usd": call.cost_usd,
        "cost_known_usd": call.cost_known_usd,
        "retries": call.retries,
        "cached": call.cached,
        "queued_at": call.queued_at,
        "started_at": call.started_at,
        "ended_at": call.ended_at,
        "retry_at": dumps(call.retry_at),
        "request_slot": call.request_slot,
        "cache_key": cache_key,
    }


CALL_FIELDS = tuple(CallResult.model_fields)


def call_from_row(row: Mapping[Any, Any]) -> CallResult:
    data = {k: row[k] for k in CALL_FIELDS}
    data["cached"] = bool(data["cached"])
    data["retry_at"] = loads(data["retry_at"], [])
    return CallResult.model_validate(data)


def decision_from_row(row: Mapping[Any, Any]) -> Decision:
    return Decision(
        status=DecisionStatus(row["status"]),
        label=row["label"],
        branches=loads(row["branches_json"], []),
        margin=row["margin"],
        reason=row["reason"],
        tied=loads(row["tied_json"], []),
        fields=loads(row["fields_json"]),
        outcome=row["outcome"],
        quorum=loads(row["quorum_json"]),
        degraded=loads(row["degraded_json"]),
        confidence=row["confidence"],
    )


def result_from_row(row: Mapping[Any, Any], calls: list[CallResult]) -> RunResult:
    """A finished run row and its calls, back into the result the engine returned."""
    return RunResult(
        run_id=row["id"],
        input=row["input"],
        spec=spec_from_columns(row["task_json"], row["panel_json"], row["policy_json"]),
        decision=decision_from_row(row),
        votes=loads(row["votes_json"], {}),
        field_votes=loads(row["field_votes_json"]),
        calls=calls,
        cost_usd=row["cost_usd"],
        cost_known_usd=row["cost_known_usd"] if row["cost_known_usd"] is not None else 0.0,
        cost_unknown_calls=row["cost_unknown_calls"] or 0,
        latency_ms=row["latency_ms"] if row["latency_ms"] is not None else 0.0,
        batch_id=row["batch_id"],
        item_id=row["item_id"],
        gold=row["gold"],
        created_at=row["created_at"],
        stopped_at=row["stopped_at"],
        decided_at=row["decided_at"],
    )
