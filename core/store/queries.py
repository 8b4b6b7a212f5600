"""Reads for the dashboard, the CLI and the experiments: filters, pages and aggregates.

Everything here is computed by the database (WHERE, GROUP BY, window functions, LIMIT/OFFSET)
so a page stays fast with 100,000 runs: nothing loads a whole table into Python. Each function
takes an open ``Connection``; ``Store`` owns the transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Integer,
    Select,
    Table,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.sql.elements import KeyedColumnElement

from core.result import CallResult, DecisionStatus, Degraded, RunResult
from core.store.tables import (
    FINAL_CALL_STATUSES,
    PHASE_ORDER,
    RUNNING,
    call_from_row,
    call_t,
    loads,
    result_from_row,
    run_t,
    slot_names,
)

Bucket = Literal["hour", "day"]
BUCKET_SECONDS: dict[str, int] = {"hour": 3600, "day": 86400}
TIE_STATUSES = (
    DecisionStatus.TIE.value,
    DecisionStatus.NEEDS_REVIEW.value,
    DecisionStatus.RESOLVED.value,
)


@dataclass(frozen=True)
class RunFilter:
    """What the History page (and exports) narrow runs by. Every field is optional.

    ``since``/``until`` are unix seconds (``until`` exclusive); ``model`` keeps runs with at
    least one call of that model; ``ties_only`` keeps runs that tied or took a tie-break branch;
    a cost bound drops runs whose cost is unknown; ``text`` is a case-insensitive substring of
    the input.
    """

    since: float | None = None
    until: float | None = None
    model: str | None = None
    task_name: str | None = None
    statuses: Sequence[str] = ()
    ties_only: bool = False
    batch_id: str | None = None
    sources: Sequence[str] = ()
    min_cost: float | None = None
    max_cost: float | None = None
    text: str | None = None


@dataclass(frozen=True)
class RunRow:
    """One line of the History table: the run without its calls."""

    run_id: str
    created_at: float
    finished_at: float | None
    source: str
    status: str
    label: str | None
    margin: float | None
    branches: list[str]
    tied: list[str]
    task_name: str | None
    panel: list[str]
    input: str
    n_calls: int
    cost_usd: float | None
    latency_ms: float | None
    batch_id: str | None
    item_id: str | None
    item_index: int | None
    gold: str | None
    cost_known_usd: float | None = None  # the known part when ``cost_usd`` is unknown
    cost_unknown_calls: int = 0
    degraded: Degraded | None = None  # counted on fewer votes than planned, and why
    confidence: float | None = None  # the decision's (NULL before migration 0007)


@dataclass(frozen=True)
class CostPoint:
    bucket: float  # start of the bucket, unix seconds (UTC)
    runs: int
    cost_usd: float  # sum of the known costs, the known parts of unknown ones included
    unknown_cost_runs: int  # runs whose cost is unknown: not counted as $0


@dataclass(frozen=True)
class ModelCost:
    model: str
    calls: int
    ok_calls: int
    cost_usd: float  # sum of the known costs, the known parts of unknown ones included
    unknown_cost_calls: int
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class MixPoint:
    bucket: float
    status: str
    runs: int


@dataclass(frozen=True)
class PairAgreement:
    """How often two models' ok answers agree within the same run.

    Every pair of calls (one of each model, same run) counts once; when ``model_a`` equals
    ``model_b`` the pairs are samples of the same model, the diagonal of the heatmap.
    """

    model_a: str
    model_b: str
    pairs: int
    agree: int
    runs: int
    rate: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", self.agree / self.pairs if self.pairs else 0.0)


# -- filters -----------------------------------------------------------------------------------


def run_conditions(f: RunFilter | None) -> list[ColumnElement[bool]]:
    if f is None:
        return []
    c = run_t.c
    out: list[ColumnElement[bool]] = []
    if f.since is not None:
        out.append(c.created_at >= f.since)
    if f.until is not None:
        out.append(c.created_at < f.until)
    if f.model:
        # IN, not a correlated EXISTS: without statistics SQLite would probe the model index
        # once per run (quadratic); this reads the model's calls once. The alias keeps a
        # query that already reads ``call`` from correlating the subquery with it.
        other = call_t.alias("model_call")
        out.append(c.id.in_(select(other.c.run_id).where(other.c.model == f.model)))
    if f.task_name:
        out.append(c.task_name == f.task_name)
    if f.statuses:
        out.append(c.status.in_(list(f.statuses)))
    if f.ties_only:
        out.append(or_(c.status.in_(TIE_STATUSES), c.branches_json != "[]"))
    if f.batch_id:
        out.append(c.batch_id == f.batch_id)
    if f.sources:
        out.append(c.source.in_(list(f.sources)))
    if f.min_cost is not None:
        out.append(c.cost_usd >= f.min_cost)
    if f.max_cost is not None:
        out.append(c.cost_usd <= f.max_cost)
    if f.text:
        out.append(func.lower(c.input).contains(f.text.lower(), autoescape=True))
    return out


def calls_of_runs(f: RunFilter | None) -> list[ColumnElement[bool]]:
    """Conditions on ``call`` that keep the calls of the runs ``f`` matches (none: all)."""
    conds = run_conditions(f)
    if not conds:
        return []
    return [call_t.c.run_id.in_(select(run_t.c.id).where(*conds))]


def bucket_of(dialect: str, column: KeyedColumnElement[Any], bucket: str) -> ColumnElement[Any]:
    """The start of the hour or day (UTC) a unix time falls in, computed by the database.

    The size is a literal, not a bound parameter, so the same expression can be grouped by.
    """
    if bucket not in BUCKET_SECONDS:
        raise ValueError(f"bucket must be hour or day, not {bucket!r}")
    size: ColumnElement[Any] = literal_column(str(BUCKET_SECONDS[bucket]))
    if dialect == "sqlite":  # no floor() without the math extension; times are positive
        return cast(cast(column / size, Integer) * size, Integer)
    return cast(func.floor(column / size) * size, Integer)


# -- runs --------------------------------------------------------------------------------------


def row_to_run_row(r: Any) -> RunRow:
    return RunRow(
        run_id=r.id,
        created_at=r.created_at,
        finished_at=r.finished_at,
        source=r.source,
        status=r.status,
        label=r.label,
        margin=r.margin,
        branches=loads(r.branches_json, []),
        tied=loads(r.tied_json, []),
        task_name=r.task_name,
        panel=list(slot_names(r.panel_json)),
        input=r.input,
        n_calls=r.n_calls,
        cost_usd=r.cost_usd,
        latency_ms=r.latency_ms,
        batch_id=r.batch_id,
        item_id=r.item_id,
        item_index=r.item_index,
        gold=r.gold,
        cost_known_usd=r.cost_known_usd,
        cost_unknown_calls=r.cost_unknown_calls or 0,
        degraded=None if r.degraded_json is None else Degraded.model_validate_json(r.degraded_json),
        confidence=r.confidence,
    )


ROW_COLUMNS = [
    run_t.c[name]
    for name in (
        *("id", "created_at", "finished_at", "source", "status", "label", "margin"),
        *("branches_json", "tied_json", "task_name", "panel_json", "input", "n_calls"),
        *("cost_usd", "latency_ms", "batch_id", "item_id", "item_index", "gold"),
        *("cost_known_usd", "cost_unknown_calls", "degraded_json"),
        "confidence",
    )
]


def list_runs(
    conn: Connection, f: RunFilter | None, *, offset: int, limit: int
) -> tuple[list[RunRow], int]:
    """A page of runs, newest first, and how many match in all."""
    conds = run_conditions(f)
    total = conn.execute(select(func.count()).select_from(run_t).where(*conds)).scalar_one()
    page = conn.execute(
        select(*ROW_COLUMNS)
        .where(*conds)
        .order_by(run_t.c.created_at.desc(), run_t.c.id.desc())
        .offset(max(0, offset))
        .limit(max(0, limit))
    )
    return [row_to_run_row(r) for r in page], int(total)


def run_row(conn: Connection, run_id: str) -> RunRow | None:
    r = conn.execute(select(*ROW_COLUMNS).where(run_t.c.id == run_id)).first()
    return None if r is None else row_to_run_row(r)


def call_order() -> list[ColumnElement[Any]]:
    phase_rank = case(PHASE_ORDER, value=call_t.c.phase, else_=len(PHASE_ORDER))
    return [call_t.c.run_id, phase_rank, call_t.c.slot]


def calls_of(
    conn: Connection, run_ids: Sequence[str], *, final_only: bool = False
) -> dict[str, list[CallResult]]:
    """The calls of some runs, each list in the engine's order: panel, expand, escalate, slot."""
    out: dict[str, list[CallResult]] = {rid: [] for rid in run_ids}
    ids = list(out)
    for start in range(0, len(ids), 500):
        q = select(call_t).where(call_t.c.run_id.in_(ids[start : start + 500]))
        if final_only:
            q = q.where(call_t.c.status.in_(FINAL_CALL_STATUSES))
        for r in conn.execute(q.order_by(*call_order())).mappings():
            out[r["run_id"]].append(call_from_row(r))
    return out


def results_of(conn: Connection, query: Select[Any]) -> list[RunResult]:
    """Full results (with calls) of the finished runs a query over ``run`` selects, in order."""
    rows = [r for r in conn.execute(query).mappings() if r["status"] != RUNNING]
    calls = calls_of(conn, [r["id"] for r in rows])
    return [result_from_row(r, calls[r["id"]]) for r in rows]


def distinct_values(conn: Connection, column: Column[Any]) -> list[str]:
    """The distinct values of an indexed column, by one index seek per value (a loose index
    scan as a recursive CTE) instead of reading every row: instant for the few models or
    task names of a large store."""
    q = conn.dialect.identifier_preparer.quote
    table, col = q(column.table.name), q(column.name)
    sql = text(
        f"WITH RECURSIVE v(x) AS (SELECT min({col}) FROM {table} UNION ALL "
        f"SELECT (SELECT min({col}) FROM {table} WHERE {col} > v.x) FROM v WHERE v.x IS NOT NULL) "
        "SELECT x FROM v WHERE x IS NOT NULL"
    )
    return [v for v in conn.execute(sql).scalars() if v]


# -- aggregates for the charts -----------------------------------------------------------------


def known_cost(table: Table) -> ColumnElement[Any]:
    """The sum of what is known of the rows' costs: a known cost whole, an unknown one by its
    known part (0 for rows stored before the part was kept), never the unknown rest."""
    return func.coalesce(func.sum(func.coalesce(table.c.cost_usd, table.c.cost_known_usd)), 0.0)


def cost_over_time(
    conn: Connection, dialect: str, f: RunFilter | None, bucket: str
) -> list[CostPoint]:
    b = bucket_of(dialect, run_t.c.created_at, bucket).label("bucket")
    q = (
        select(
            b,
            func.count().label("runs"),
            func.coalesce(
                func.sum(func.coalesce(run_t.c.cost_usd, run_t.c.cost_known_usd)), 0.0
            ).label("cost"),
            func.sum(case((run_t.c.cost_usd.is_(None), 1), else_=0)).label("unknown"),
        )
        .where(*run_conditions(f))
        .group_by(b)
        .order_by(b)
    )
    return [
        CostPoint(
            bucket=float(r.bucket),
            runs=int(r.runs),
            cost_usd=float(r.cost),
            unknown_cost_runs=int(r.unknown or 0),
        )
        for r in conn.execute(q)
    ]


def cost_by_model(conn: Connection, f: RunFilter | None) -> list[ModelCost]:
    c = call_t.c
    q = (
        select(
            c.model,
            func.count().label("calls"),
            func.sum(case((c.status == "ok", 1), else_=0)).label("ok_calls"),
            known_cost(call_t).label("cost"),
            func.sum(case((c.cost_usd.is_(None), 1), else_=0)).label("unknown"),
            func.coalesce(func.sum(c.tokens_in), 0).label("tokens_in"),
            func.coalesce(func.sum(c.tokens_out), 0).label("tokens_out"),
        )
        .where(*calls_of_runs(f))
        .group_by(c.model)
        .order_by(c.model)
    )
    return [
        ModelCost(
            model=r.model,
            calls=int(r.calls),
            ok_calls=int(r.ok_calls or 0),
            cost_usd=float(r.cost),
            unknown_cost_calls=int(r.unknown or 0),
            tokens_in=int(r.tokens_in),
            tokens_out=int(r.tokens_out),
        )
        for r in conn.execute(q)
    ]


def recent_latencies(conn: Connection, models: Sequence[str], limit: int) -> dict[str, list[float]]:
    """The latest ``limit`` latencies of each of ``models``' ``ok`` calls, read backwards along
    the (model, id) index: what a spend estimate takes a model's latency from."""
    c = call_t.c
    out: dict[str, list[float]] = {}
    for model in dict.fromkeys(models):
        ok = (c.model == model, c.status == "ok", c.latency_ms.is_not(None))
        q = select(c.latency_ms).where(*ok)
        sample = [float(v) for v in conn.execute(q.order_by(c.id.desc()).limit(limit)).scalars()]
        if sample:
            out[model] = sample
    return out


def latency_sample_by_model(
    conn: Connection, f: RunFilter | None, per_model_limit: int, *, ok_only: bool = True
) -> dict[str, list[float]]:
    """The latest ``per_model_limit`` call latencies of each model, for box plots.

    Unfiltered, one LIMIT query per model reads backwards along the (model, id) index, so the
    cost follows the sample size, not the number of stored calls. Filtered, the calls of the
    matching runs are numbered per model by a window function.
    """
    c = call_t.c
    keep = [c.latency_ms.is_not(None), *([c.status == "ok"] if ok_only else [])]
    limit = max(0, per_model_limit)
    out: dict[str, list[float]] = {}
    conds = calls_of_runs(f)
    if not conds:
        for model in distinct_values(conn, c.model):
            q = select(c.latency_ms).where(c.model == model, *keep).order_by(c.id.desc())
            sample = [float(v) for v in conn.execute(q.limit(limit)).scalars()]
            if sample:
                out[model] = sample
        return out
    rn = func.row_number().over(partition_by=c.model, order_by=c.id.desc()).label("rn")
    sub = select(c.model, c.latency_ms, rn).where(*conds, *keep).subquery()
    q = select(sub.c.model, sub.c.latency_ms).where(sub.c.rn <= limit)
    for model, latency in conn.execute(q.order_by(sub.c.model, sub.c.rn)):
        out.setdefault(model, []).append(float(latency))
    return out


def decision_mix_over_time(
    conn: Connection, dialect: str, f: RunFilter | None, bucket: str
) -> list[MixPoint]:
    b = bucket_of(dialect, run_t.c.created_at, bucket).label("bucket")
    q = (
        select(b, run_t.c.status, func.count().label("runs"))
        .where(*run_conditions(f))
        .group_by(b, run_t.c.status)
        .order_by(b, run_t.c.status)
    )
    return [
        MixPoint(bucket=float(r.bucket), status=r.status, runs=int(r.runs)) for r in conn.execute(q)
    ]


def status_counts(conn: Connection, f: RunFilter | None) -> dict[str, int]:
    q = select(run_t.c.status, func.count()).where(*run_conditions(f)).group_by(run_t.c.status)
    return {status: int(n) for status, n in conn.execute(q)}


def pairwise_agreement(
    conn: Connection, f: RunFilter | None, limit_runs: int
) -> list[PairAgreement]:
    """Agreement of ok answers for each pair of models over the latest ``limit_runs`` runs."""
    runs = (
        select(run_t.c.id)
        .where(*run_conditions(f))
        .order_by(run_t.c.created_at.desc())
        .limit(limit_runs)
    )
    a = call_t.alias("a")
    b = call_t.alias("b")
    pair = and_(
        a.c.run_id == b.c.run_id,
        or_(a.c.model < b.c.model, and_(a.c.model == b.c.model, a.c.id < b.c.id)),
    )
    q = (
        select(
            a.c.model.label("model_a"),
            b.c.model.label("model_b"),
            func.count().label("pairs"),
            func.sum(case((a.c.answer == b.c.answer, 1), else_=0)).label("agree"),
            func.count(a.c.run_id.distinct()).label("runs"),
        )
        .select_from(a.join(b, pair))
        .where(
            a.c.run_id.in_(runs),
            a.c.status == "ok",
            b.c.status == "ok",
            a.c.answer.is_not(None),
            b.c.answer.is_not(None),
        )
        .group_by(a.c.model, b.c.model)
        .order_by(a.c.model, b.c.model)
    )
    return [
        PairAgreement(
            model_a=r.model_a,
            model_b=r.model_b,
            pairs=int(r.pairs),
            agree=int(r.agree or 0),
            runs=int(r.runs),
        )
        for r in conn.execute(q)
    ]


# -- answers of a batch, for learned reliability -----------------------------------------------


@dataclass(frozen=True)
class BatchAnswers:
    """A batch's panel votes as the reliability fit reads them, keyed by run id.

    ``votes``: run -> model -> vote -> how many of the model's ``ok`` panel calls gave it
    (invalid and failed calls are not votes). ``calls``: run -> panel calls in a final state,
    valid or not. ``gold``: the stored gold of the runs that have one, as stored (read it
    through the task's format before comparing). ``resolved``: run -> a reviewer's label.
    """

    votes: dict[str, dict[str, dict[str, int]]]
    calls: dict[str, int]
    gold: dict[str, str]
    resolved: dict[str, str]
    item_ids: dict[str, str | None]

    @property
    def models(self) -> list[str]:
        return sorted({m for row in self.votes.values() for m in row})

    @property
    def answers(self) -> int:
        """How many valid votes the batch holds."""
        return sum(n for row in self.votes.values() for c in row.values() for n in c.values())


def batch_answers(conn: Connection, batch_id: str) -> BatchAnswers:
    """The finished runs of a batch and their panel votes, counted by the database."""
    r, c = run_t.c, call_t.c
    finished = and_(r.batch_id == batch_id, r.status != RUNNING)
    calls = func.count(c.id)
    runs = (
        select(r.id, r.item_id, r.gold, r.status, r.label, calls.label("calls"))
        .select_from(
            run_t.outerjoin(
                call_t,
                and_(c.run_id == r.id, c.phase == "panel", c.status.in_(FINAL_CALL_STATUSES)),
            )
        )
        .where(finished)
        .group_by(r.id, r.item_id, r.gold, r.status, r.label)
    )
    item_ids: dict[str, str | None] = {}
    counted: dict[str, int] = {}
    gold: dict[str, str] = {}
    resolved: dict[str, str] = {}
    for row in conn.execute(runs):
        item_ids[row.id] = row.item_id
        counted[row.id] = int(row.calls)
        if row.gold:
            gold[row.id] = row.gold
        if row.status == DecisionStatus.RESOLVED.value and row.label:
            resolved[row.id] = row.label
    votes: dict[str, dict[str, dict[str, int]]] = {run_id: {} for run_id in item_ids}
    q = (
        select(c.run_id, c.model, c.answer, func.count().label("n"))
        .select_from(call_t.join(run_t, r.id == c.run_id))
        .where(finished, c.phase == "panel", c.status == "ok", c.answer.is_not(None))
        .group_by(c.run_id, c.model, c.answer)
    )
    for run_id, model, answer, n in conn.execute(q):
        votes[run_id].setdefault(model, {})[answer] = int(n)
    return BatchAnswers(votes=votes, calls=counted, gold=gold, resolved=resolved, item_ids=item_ids)
