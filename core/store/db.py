"""The store: one engine per database URL, its migrations, and every read and write Tally makes.

The API is synchronous and thread-safe (SQLAlchemy's engine and pool); async code calls it
through ``anyio.to_thread.run_sync`` or, for the hot path of a run, through ``StoreWriter``.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE``: two processes writing at once (the dashboard's runner and a CLI batch) then
wait for each other instead of failing on a read lock that cannot be upgraded.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    Select,
    case,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.sql.dml import Insert

from core.auth import Identity
from core.errors import BusyError, InputError, NotFoundError, StoreError, StoreURLError
from core.result import CallResult, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import queries
from core.store import reviews as review_store
from core.store.commit import Target
from core.store.lease import BatchOwner, holds
from core.store.queries import (
    BatchAnswers,
    CostPoint,
    MixPoint,
    ModelCost,
    PairAgreement,
    RunFilter,
    RunRow,
)
from core.store.reviews import ReviewClaim, ReviewOutcome, ReviewRow, ReviewStage
from core.store.tables import (
    BATCH_STATUSES,
    FINAL_CALL_STATUSES,
    RUNNING,
    batch_item_t,
    batch_t,
    call_from_row,
    call_row,
    call_t,
    curve_t,
    dumps,
    finish_row,
    loads,
    result_from_row,
    review_t,
    run_t,
    spec_columns,
    spec_from_columns,
    start_row,
    sweep_t,
)
from core.store.upsert import (
    Upsert,
    WriteBatch,
    collapsed,
    error_message,
    first_line,
    set_up_sqlite,
    statements,
)

DEFAULT_URL = "sqlite:///data/tally.db"
MIGRATIONS = Path(__file__).parent / "migrations"
_UPGRADE_LOCK = 7_274_001  # PostgreSQL advisory lock: one migrating process at a time


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def mask_url(text: str) -> str:
    """A URL-ish string with any password replaced, for messages about unparseable URLs."""
    return re.sub(r"://([^:/@\s]*):[^@\s]*@", r"://\1:***@", text)


@dataclass(frozen=True)
class BatchInfo:
    batch_id: str
    created_at: float
    name: str
    source: str
    spec: RunSpec
    columns: dict[str, Any]
    concurrency: int
    total: int
    status: str
    finished_at: float | None


@dataclass(frozen=True)
class BatchItem:
    index: int
    item_id: str | None
    text: str
    gold: str | None


@dataclass(frozen=True)
class SavedResult:
    """A stored sweep (``name`` is its target) or curve (``name`` is its labelled set)."""

    id: str
    created_at: float
    name: str
    params: dict[str, Any]
    result: dict[str, Any]


class Store:
    """Runs, calls, reviews, batches, sweeps and curves in SQLite or PostgreSQL."""

    def __init__(self, url: str | None = None) -> None:
        raw = url if url is not None else os.environ.get("TALLY_DATABASE_URL", DEFAULT_URL)
        try:
            parsed = make_url(raw)
        except (ArgumentError, ValueError):
            raise StoreURLError(f"not a database URL: {mask_url(raw)!r}") from None
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.safe_url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreURLError(
                f"unsupported database {self.safe_url}: use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST/DB"
            )
        kwargs: dict[str, Any] = {}
        db = parsed.database
        self.in_memory = self.dialect == "sqlite" and (
            not db or db == ":memory:" or parsed.query.get("mode") == "memory"
        )
        """Only this process can see the database (another process would open an empty one)."""
        if self.dialect == "sqlite":
            if db and db != ":memory:" and not db.startswith("file:"):
                try:
                    Path(db).parent.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise StoreError(f"cannot create the folder of {db}: {err.strerror}") from None
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError) as err:
            raise StoreURLError(
                f"cannot open the store at {self.safe_url}: {first_line(err)}"
            ) from None
        if self.dialect == "sqlite":
            _sqlite_events(self.engine)
        self._upsert_cache: dict[str, Insert] = {}
        self._sql_cache: dict[str, Upsert] = {}

    def __repr__(self) -> str:
        return f"Store({self.safe_url!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections ---------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Database failures become one-line StoreErrors that never show a password."""
        try:
            yield
        except SQLAlchemyError as err:
            raise StoreError(error_message(self.safe_url, err)) from err

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._errors(), self.engine.connect() as conn:
            conn.execution_options(tally_write=True)
            with conn.begin():
                yield conn

    def _upsert(self, name: str) -> Insert:
        """Dialect-specific INSERT .. ON CONFLICT statements, built once per store."""
        stmt = self._upsert_cache.get(name)
        if stmt is not None:
            return stmt
        ins = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        if name == "start":
            s = ins(run_t)
            stmt = s.on_conflict_do_nothing(index_elements=["id"])
        elif name == "finish":
            s = ins(run_t)
            keep = {"id", "created_at", "source", "item_index"}
            merge = {"batch_id", "item_id", "gold", "submitted_by"}
            set_: dict[str, Any] = {
                c.name: s.excluded[c.name] for c in run_t.c if c.name not in keep | merge
            }
            for col in merge:
                set_[col] = func.coalesce(s.excluded[col], run_t.c[col])
            stmt = s.on_conflict_do_update(index_elements=["id"], set_=set_)
        elif name == "call":
            s = ins(call_t)
            key = {"id", "run_id", "phase", "slot"}
            set_ = {c.name: s.excluded[c.name] for c in call_t.c if c.name not in key}
            set_["cache_key"] = func.coalesce(s.excluded.cache_key, call_t.c.cache_key)
            stmt = s.on_conflict_do_update(index_elements=["run_id", "phase", "slot"], set_=set_)
        else:
            raise KeyError(name)
        self._upsert_cache[name] = stmt
        return stmt

    def _bulk_sql(self, name: str) -> Upsert:
        """The upsert compiled once for the driver (``core.store.upsert``)."""
        cached = self._sql_cache.get(name)
        if cached is None:
            t = call_t if name == "call" else run_t
            keys = [c.name for c in t.c if not (t is call_t and c.name == "id")]
            single = str(self._upsert(name).compile(dialect=self.engine.dialect, column_keys=keys))
            head, _, _ = single.partition(" VALUES ")
            _, _, conflict = single.partition(" ON CONFLICT ")
            cached = Upsert(single, head, conflict, str(t.name), tuple(keys))
            self._sql_cache[name] = cached
        return cached

    def target(self) -> Target:
        """This store for ``core.store.commit``: the driver, its connect arguments and the
        compiled upserts, so a committer writes without SQLAlchemy."""
        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        kwargs = {k: v for k, v in kwargs.items() if k != "context"}  # SQLAlchemy's adapters
        return Target(
            dialect=self.dialect,
            safe_url=self.safe_url,
            driver=self.engine.dialect.loaded_dbapi.__name__,
            connect_args=tuple(args),
            connect_kwargs=kwargs,
            upserts={name: self._bulk_sql(name) for name in ("start", "finish", "call")},
        )

    # -- migrations (Alembic is imported here only: the writer's process never needs it) -----

    def upgrade(self) -> None:
        """Apply every migration up to head (``tally db upgrade``), one process at a time."""
        from alembic import command
        from alembic.util import CommandError

        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_UPGRADE_LOCK})")
            try:
                command.upgrade(_alembic_config(conn), "head")
            except CommandError as err:
                raise StoreError(f"store {self.safe_url}: migrations: {first_line(err)}") from None

    def revision(self) -> str | None:
        """The migration the database is at (None for an empty database)."""
        from alembic.runtime.migration import MigrationContext

        with self._read() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def ensure_schema(self) -> None:
        """Upgrade when the database is behind; a single cheap query when it is at head."""
        if self.revision() != head_revision():
            self.upgrade()

    # -- writing runs and calls ----------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Write run starts, finished runs and calls in one transaction, with bulk statements.

        Order inside the transaction keeps foreign keys satisfied: runs exist before their
        calls. A start never overwrites an existing run; a finish and a call overwrite the
        earlier state of the same run or the same (run, phase, slot). Duplicates within the
        batch are collapsed first (the first start, the last finish and the last call win).
        """
        with self._write() as conn:
            for name, rows in collapsed(batch):
                for sql, params in statements(self.dialect, self._bulk_sql(name), rows):
                    conn.exec_driver_sql(sql, params)

    def save_run(self, result: RunResult, *, source: str) -> None:
        """Store a finished run and all its calls in one transaction."""
        self.write(
            WriteBatch(
                finishes=[finish_row(result, source=source, finished_at=time.time())],
                calls=[call_row(result.run_id, c) for c in result.calls],
            )
        )

    def start_run(
        self,
        run_id: str,
        input: str,
        spec: RunSpec,
        *,
        source: str,
        batch_id: str | None = None,
        item_id: str | None = None,
        item_index: int | None = None,
        gold: str | None = None,
    ) -> None:
        """Record a run as ``running``; a run id that already exists is left as it is."""
        row = start_row(
            run_id,
            input,
            spec,
            source=source,
            batch_id=batch_id,
            item_id=item_id,
            item_index=item_index,
            gold=gold,
            created_at=time.time(),
        )
        self.write(WriteBatch(starts=[row]))

    def record_call(self, run_id: str, call: CallResult, cache_key: str | None = None) -> None:
        self.write(WriteBatch(calls=[call_row(run_id, call, cache_key)]))

    def finish_run(self, result: RunResult, *, source: str = "library") -> None:
        """Write the decision of a run and its calls. ``source`` is used only when the run was
        never started in the store; otherwise the run keeps the source it started with."""
        self.save_run(result, source=source)

    # -- reading runs --------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunResult:
        """A finished run with its calls. An unknown id is a NotFoundError; a run still in
        flight (or cut off by a crash) is an InputError that says so."""
        with self._read() as conn:
            row = conn.execute(select(run_t).where(run_t.c.id == run_id)).mappings().first()
            if row is None:
                raise NotFoundError(f"no run {run_id!r} in the store")
            if row["status"] == RUNNING:
                raise InputError(f"run {run_id} has not finished (status: running)")
            calls = queries.calls_of(conn, [run_id])[run_id]
        return result_from_row(row, calls)

    def get_run_row(self, run_id: str) -> RunRow:
        """The run's row whatever its status, ``running`` included."""
        with self._read() as conn:
            row = queries.run_row(conn, run_id)
        if row is None:
            raise NotFoundError(f"no run {run_id!r} in the store")
        return row

    def run_calls(self, run_id: str) -> list[CallResult]:
        """Every stored call of a run, finished or not, in the engine's order."""
        with self._read() as conn:
            return queries.calls_of(conn, [run_id])[run_id]

    def finished_calls(self, run_id: str) -> list[CallResult]:
        """Calls of a run that reached a final state: what a resumed run need not pay again."""
        with self._read() as conn:
            return queries.calls_of(conn, [run_id], final_only=True)[run_id]

    def runs_finished_calls(self, run_ids: Sequence[str]) -> dict[str, list[CallResult]]:
        """``finished_calls`` of some runs in one query (a part of a batch, resumed)."""
        with self._read() as conn:
            return queries.calls_of(conn, list(run_ids), final_only=True)

    def batch_finished_calls(self, batch_id: str) -> dict[str, list[CallResult]]:
        """``finished_calls`` for every run of a batch in one query, keyed by run id (runs
        without any are absent): a resumed batch reads this once instead of once per item."""
        q = (
            select(call_t)
            .select_from(call_t.join(run_t, run_t.c.id == call_t.c.run_id))
            .where(run_t.c.batch_id == batch_id, call_t.c.status.in_(FINAL_CALL_STATUSES))
            .order_by(*queries.call_order())
        )
        out: dict[str, list[CallResult]] = {}
        with self._read() as conn:
            for r in conn.execute(q).mappings():
                out.setdefault(r["run_id"], []).append(call_from_row(r))
        return out

    def list_runs(
        self, f: RunFilter | None = None, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[RunRow], int]:
        """One page of matching runs (newest first) and the number of matching runs."""
        with self._read() as conn:
            return queries.list_runs(conn, f, offset=offset, limit=limit)

    def iter_chunks(
        self, query: Select[Any], *, chunk_size: int = 1000
    ) -> Iterator[list[RowMapping]]:
        """The rows of a query a chunk at a time (server-side cursor on PostgreSQL), for
        exports that must not hold the whole result in memory."""
        with self._read() as conn:
            result = conn.execute(query, execution_options={"yield_per": chunk_size})
            for part in result.mappings().partitions():
                yield list(part)

    def models(self) -> list[str]:
        """Every model name that has a stored call (for filter choices)."""
        with self._read() as conn:
            return queries.distinct_values(conn, call_t.c.model)

    def task_names(self) -> list[str]:
        with self._read() as conn:
            return queries.distinct_values(conn, run_t.c.task_name)

    # -- aggregates ----------------------------------------------------------------------------

    def cost_over_time(self, f: RunFilter | None = None, bucket: str = "hour") -> list[CostPoint]:
        with self._read() as conn:
            return queries.cost_over_time(conn, self.dialect, f, bucket)

    def cost_by_model(self, f: RunFilter | None = None) -> list[ModelCost]:
        with self._read() as conn:
            return queries.cost_by_model(conn, f)

    def recent_latencies(self, models: Sequence[str], limit: int = 50) -> dict[str, list[float]]:
        with self._read() as conn:
            return queries.recent_latencies(conn, models, limit)

    def latency_sample_by_model(
        self, f: RunFilter | None = None, per_model_limit: int = 2000, *, ok_only: bool = True
    ) -> dict[str, list[float]]:
        with self._read() as conn:
            return queries.latency_sample_by_model(conn, f, per_model_limit, ok_only=ok_only)

    def decision_mix_over_time(
        self, f: RunFilter | None = None, bucket: str = "hour"
    ) -> list[MixPoint]:
        with self._read() as conn:
            return queries.decision_mix_over_time(conn, self.dialect, f, bucket)

    def status_counts(self, f: RunFilter | None = None) -> dict[str, int]:
        with self._read() as conn:
            return queries.status_counts(conn, f)

    def pairwise_agreement(
        self, f: RunFilter | None = None, limit_runs: int = 5000
    ) -> list[PairAgreement]:
        with self._read() as conn:
            return queries.pairwise_agreement(conn, f, limit_runs)

    # -- reviews -------------------------------------------------------------------------------

    def review_queue(self, limit: int = 50) -> list[RunResult]:
        """Runs waiting for a human, oldest first."""
        q = (
            select(run_t)
            .where(run_t.c.status == DecisionStatus.NEEDS_REVIEW.value)
            .order_by(run_t.c.created_at, run_t.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return queries.results_of(conn, q)

    def decide_review(
        self, run_id: str, who: Identity, *, label: str, reason: str
    ) -> ReviewOutcome:
        """A reviewer's decision on a waiting run (``core.store.review_store.decide``): resolved,
        recorded blind, or escalated to an admin; refused whole with a ``ConflictError`` when
        another reviewer got there first."""
        with self._write() as conn:
            return review_store.decide(
                conn, run_id, who, label=label, reason=reason, now=time.time()
            )

    def claim_review(
        self, run_id: str, who: Identity, *, ttl_s: float = review_store.CLAIM_TTL_S
    ) -> ReviewClaim:
        """Claim (or renew) a seat on a waiting run; the other reviewers see it."""
        with self._write() as conn:
            return review_store.claim(conn, run_id, who, ttl_s=ttl_s, now=time.time())

    def release_review(self, run_id: str, who: Identity) -> None:
        with self._write() as conn:
            review_store.release(conn, run_id, who)

    def review_claims(self, run_ids: Sequence[str]) -> dict[str, list[ReviewClaim]]:
        with self._read() as conn:
            return review_store.claims(conn, list(run_ids), time.time())

    def review_stages(self, runs: Sequence[RunResult]) -> dict[str, ReviewStage]:
        """What each waiting run still needs (one decision, blind ones, an admin's)."""
        with self._read() as conn:
            trails = review_store.trail(conn, [r.run_id for r in runs])
        return {
            r.run_id: review_store.review_stage(r.decision.branches, trails[r.run_id]) for r in runs
        }

    def reviews(self, run_id: str) -> list[ReviewRow]:
        """The audit trail of a run, oldest first."""
        with self._read() as conn:
            if conn.execute(select(run_t.c.id).where(run_t.c.id == run_id)).first() is None:
                raise NotFoundError(f"no run {run_id!r} in the store")
            return review_store.trail(conn, [run_id])[run_id]

    def review_stats(self, since: float | None = None) -> dict[str, Any]:
        """Waiting runs, reviews since ``since`` (default: local midnight today), how often
        reviewers chose the panel's plurality label (None before any such review), and how
        often two blind reviewers agreed."""
        if since is None:
            midnight = (
                datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
            )
            since = midnight.timestamp()
        agree = func.sum(case((review_t.c.label == review_t.c.panel_plurality, 1), else_=0))
        with self._read() as conn:
            waiting = conn.execute(
                select(func.count())
                .select_from(run_t)
                .where(run_t.c.status == DecisionStatus.NEEDS_REVIEW.value)
            ).scalar_one()
            today = conn.execute(
                select(func.count()).select_from(review_t).where(review_t.c.created_at >= since)
            ).scalar_one()
            with_plurality, agreed = conn.execute(
                select(func.count(), agree).where(review_t.c.panel_plurality.is_not(None))
            ).one()
            blind = review_store.stats(conn)
        return {
            "waiting": int(waiting),
            "resolved_today": int(today),
            "agreement_with_plurality": (
                int(agreed or 0) / int(with_plurality) if with_plurality else None
            ),
            **blind,
        }

    # -- batches -------------------------------------------------------------------------------

    def create_batch(
        self,
        *,
        name: str,
        source: str,
        spec: RunSpec,
        columns: Mapping[str, str | None] | None = None,
        concurrency: int,
        items: Sequence[tuple[int, str | None, str, str | None]] = (),
        total: int | None = None,
        batch_id: str | None = None,
        submitted_by: str | None = None,
    ) -> str:
        """Record a new batch as ``running`` with its inputs (index, id, text, gold), so an
        interrupted batch can resume from the store alone. Returns the batch id."""
        bid = batch_id or new_id()
        with self._write() as conn:
            conn.execute(
                insert(batch_t).values(
                    id=bid,
                    created_at=time.time(),
                    name=name,
                    source=source,
                    **{k: v for k, v in spec_columns(spec).items() if k != "task_name"},
                    columns_json=dumps(dict(columns or {})),
                    concurrency=concurrency,
                    total=len(items) if total is None else total,
                    status="running",
                    submitted_by=submitted_by,
                    finished_at=None,
                )
            )
            rows = [
                {"batch_id": bid, "item_index": i, "item_id": iid, "input": text, "gold": gold}
                for i, iid, text, gold in items
            ]
            for start in range(0, len(rows), 1000):
                conn.execute(insert(batch_item_t), rows[start : start + 1000])
        return bid

    @staticmethod
    def _batch_info(r: Mapping[Any, Any]) -> BatchInfo:
        return BatchInfo(
            batch_id=r["id"],
            created_at=r["created_at"],
            name=r["name"],
            source=r["source"],
            spec=spec_from_columns(r["task_json"], r["panel_json"], r["policy_json"]),
            columns=loads(r["columns_json"], {}),
            concurrency=r["concurrency"],
            total=r["total"],
            status=r["status"],
            finished_at=r["finished_at"],
        )

    def _need_batch(self, conn: Connection, batch_id: str) -> Mapping[Any, Any]:
        row = conn.execute(select(batch_t).where(batch_t.c.id == batch_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no batch {batch_id!r} in the store")
        return row

    def get_batch(self, batch_id: str) -> BatchInfo:
        with self._read() as conn:
            return self._batch_info(self._need_batch(conn, batch_id))

    def list_batches(self, limit: int = 50) -> list[BatchInfo]:
        """Newest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(batch_t).order_by(batch_t.c.created_at.desc()).limit(limit)
            ).mappings()
            return [self._batch_info(r) for r in rows]

    def set_batch_status(self, batch_id: str, status: str) -> None:
        """``running`` clears the finish time; any other status sets it to now."""
        finished = _finished_at(status)
        with self._write() as conn:
            done = conn.execute(
                update(batch_t)
                .where(batch_t.c.id == batch_id)
                .values(status=status, finished_at=finished)
            )
            if done.rowcount != 1:
                raise NotFoundError(f"no batch {batch_id!r} in the store")

    def claim_batch(
        self, batch_id: str, owner: BatchOwner, lease_s: float, *, now: float | None = None
    ) -> None:
        """Make ``owner`` the one process that runs the batch, for ``lease_s`` seconds unless
        renewed; ``BusyError`` naming the holder while another live owner holds it.

        The update only applies if the holder read is still the holder (compare-and-set on
        its token), so of two processes claiming at once exactly one wins."""
        at = time.time() if now is None else now
        bc = batch_t.c
        with self._write() as conn:
            row = self._need_batch(conn, batch_id)
            token = row["owner_token"]
            if token is not None and token != owner.token:
                holder = BatchOwner(
                    row["owner_host"], row["owner_pid"], token, row["owner_since"] or 0.0
                )
                if holds(holder, row["lease_until"], at):
                    raise BusyError(
                        f"batch {batch_id} is running in another process ({holder.describe()}): "
                        "wait for it to end or stop it; nothing was run twice"
                    )
            claimed = conn.execute(
                update(batch_t)
                .where(
                    bc.id == batch_id,
                    bc.owner_token.is_(None) if token is None else bc.owner_token == token,
                )
                .values(
                    owner_host=owner.host,
                    owner_pid=owner.pid,
                    owner_token=owner.token,
                    owner_since=owner.since,
                    lease_until=at + lease_s,
                    status="running",
                    finished_at=None,
                )
            )
            if claimed.rowcount != 1:
                raise BusyError(f"batch {batch_id} was claimed by another process just now")

    def renew_lease(
        self, batch_id: str, token: str, lease_s: float, *, now: float | None = None
    ) -> bool:
        """Extend the lease of the claim ``token``; False when that claim no longer holds the
        batch (another process took it over)."""
        at = time.time() if now is None else now
        with self._write() as conn:
            done = conn.execute(
                update(batch_t)
                .where(batch_t.c.id == batch_id, batch_t.c.owner_token == token)
                .values(lease_until=at + lease_s)
            )
            return bool(done.rowcount == 1)

    def release_batch(self, batch_id: str, token: str, status: str) -> bool:
        """End the claim ``token`` with the batch's new status (the owner's host, pid and
        since stay as the last owner). False, and nothing changed, when the claim was lost."""
        finished = _finished_at(status)
        with self._write() as conn:
            done = conn.execute(
                update(batch_t)
                .where(batch_t.c.id == batch_id, batch_t.c.owner_token == token)
                .values(status=status, finished_at=finished, owner_token=None, lease_until=None)
            )
            return bool(done.rowcount == 1)

    def batch_owner(self, batch_id: str) -> tuple[BatchOwner | None, float | None]:
        """The batch's current claim and lease end, ``(None, None)`` when nobody holds it."""
        with self._read() as conn:
            row = self._need_batch(conn, batch_id)
        if row["owner_token"] is None:
            return None, None
        owner = BatchOwner(
            row["owner_host"], row["owner_pid"], row["owner_token"], row["owner_since"]
        )
        return owner, row["lease_until"]

    def batch_items(self, batch_id: str, indexes: range | None = None) -> list[BatchItem]:
        """The inputs of a batch in item order (only those of ``indexes``, a part's range)."""
        q = select(batch_item_t).where(batch_item_t.c.batch_id == batch_id)
        if indexes is not None:
            q = q.where(
                batch_item_t.c.item_index >= indexes.start,
                batch_item_t.c.item_index < indexes.stop,
            )
        with self._read() as conn:
            self._need_batch(conn, batch_id)
            rows = conn.execute(q.order_by(batch_item_t.c.item_index)).mappings()
            return [
                BatchItem(
                    index=r["item_index"], item_id=r["item_id"], text=r["input"], gold=r["gold"]
                )
                for r in rows
            ]

    def batch_counts(self, batch_id: str) -> dict[str, Any]:
        """Progress and outcome of a batch, counted in SQL.

        Keys: ``total``, ``started``, ``done``, ``running``, one per decision status, ``calls``,
        ``cost_known_usd`` (every finished run's known cost, the known part of an unknown one
        included), ``unknown_cost_runs`` and ``cost_usd``: the known sum, or ``None`` once any
        run's cost is unknown (a partial sum is never the total); ``degraded`` counts the runs
        decided on fewer votes than planned. Accuracy against gold needs the
        task's answer format: :func:`core.batch.batch_summary` adds it from :meth:`batch_gold`.
        """
        rc = run_t.c
        finished = rc.status != RUNNING
        with self._read() as conn:
            batch = self._need_batch(conn, batch_id)
            by_status: dict[str, int] = {
                status: int(n)
                for status, n in conn.execute(
                    select(rc.status, func.count())
                    .where(rc.batch_id == batch_id)
                    .group_by(rc.status)
                )
            }
            sums = conn.execute(
                select(
                    queries.known_cost(run_t),
                    func.sum(case((rc.cost_usd.is_(None) & finished, 1), else_=0)),
                    func.sum(case((rc.degraded_json.is_not(None) & finished, 1), else_=0)),
                ).where(rc.batch_id == batch_id)
            ).one()
            calls = conn.execute(
                select(func.count())
                .select_from(call_t.join(run_t, rc.id == call_t.c.run_id))
                .where(rc.batch_id == batch_id)
            ).scalar_one()
        counts: dict[str, Any] = {"batch_id": batch_id, "total": batch["total"]}
        running = int(by_status.get(RUNNING, 0))
        counts["started"] = sum(by_status.values())
        counts["done"] = counts["started"] - running
        counts["running"] = running
        for status in DecisionStatus:
            counts[status.value] = int(by_status.get(status.value, 0))
        known, unknown = float(sums[0]), int(sums[1] or 0)
        counts.update(
            degraded=int(sums[2] or 0),
            calls=int(calls),
            cost_usd=None if unknown else known,
            cost_known_usd=known,
            unknown_cost_runs=unknown,
        )
        return counts

    def batch_gold(self, batch_id: str) -> list[tuple[str | None, str, int]]:
        """(decided label, gold, runs) of the finished runs with gold, one row per distinct
        pair: few rows however large the batch, for the format to judge."""
        rc = run_t.c
        with self._read() as conn:
            self._need_batch(conn, batch_id)
            rows = conn.execute(
                select(rc.label, rc.gold, func.count())
                .where(rc.batch_id == batch_id, rc.status != RUNNING, rc.gold.is_not(None))
                .group_by(rc.label, rc.gold)
            ).all()
        return [(label, gold, int(n)) for label, gold, n in rows]

    def batch_runs(self, batch_id: str) -> list[RunRow]:
        """Every run of a batch (finished or not) in item order."""
        with self._read() as conn:
            self._need_batch(conn, batch_id)
            q = (
                select(*queries.ROW_COLUMNS)
                .where(run_t.c.batch_id == batch_id)
                .order_by(run_t.c.item_index, run_t.c.id)
            )
            return [queries.row_to_run_row(r) for r in conn.execute(q)]

    def batch_results(self, batch_id: str) -> list[RunResult]:
        """The finished runs of a batch with their calls, in item order (for re-vote)."""
        with self._read() as conn:
            self._need_batch(conn, batch_id)
            q = (
                select(run_t)
                .where(run_t.c.batch_id == batch_id)
                .order_by(run_t.c.item_index, run_t.c.id)
            )
            return queries.results_of(conn, q)

    def batch_answers(self, batch_id: str) -> BatchAnswers:
        """The panel votes of a batch's finished runs, counted in SQL (for reliability fits)."""
        with self._read() as conn:
            self._need_batch(conn, batch_id)
            return queries.batch_answers(conn, batch_id)

    def runs_done(self, batch_id: str) -> set[int]:
        """Item indexes of the batch whose run has finished."""
        with self._read() as conn:
            rows = conn.execute(
                select(run_t.c.item_index).where(
                    run_t.c.batch_id == batch_id,
                    run_t.c.status != RUNNING,
                    run_t.c.item_index.is_not(None),
                )
            ).scalars()
            return {int(i) for i in rows}

    # -- cache ---------------------------------------------------------------------------------

    def cache_lookup(self, keys: Sequence[str]) -> dict[str, CallResult]:
        """The latest ``ok`` call stored under each key; keys with none are absent."""
        wanted = list(dict.fromkeys(keys))
        out: dict[str, CallResult] = {}
        with self._read() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                latest = (
                    select(func.max(call_t.c.id))
                    .where(call_t.c.cache_key.in_(chunk), call_t.c.status == "ok")
                    .group_by(call_t.c.cache_key)
                )
                rows = conn.execute(select(call_t).where(call_t.c.id.in_(latest))).mappings()
                for r in rows:
                    out[r["cache_key"]] = call_from_row(r)
        return out

    # -- sweeps and curves ---------------------------------------------------------------------

    def save_sweep(self, target: str, params: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        return self._save_saved("sweep", target, params, result)

    def list_sweeps(self, limit: int = 50) -> list[SavedResult]:
        return self._list_saved("sweep", limit)

    def get_sweep(self, sweep_id: str) -> SavedResult:
        return self._get_saved("sweep", sweep_id)

    def save_curve(
        self, set_name: str, params: Mapping[str, Any], result: Mapping[str, Any]
    ) -> str:
        return self._save_saved("curve", set_name, params, result)

    def list_curves(self, limit: int = 50) -> list[SavedResult]:
        return self._list_saved("curve", limit)

    def get_curve(self, curve_id: str) -> SavedResult:
        return self._get_saved("curve", curve_id)

    def _save_saved(
        self, kind: str, name: str, params: Mapping[str, Any], result: Mapping[str, Any]
    ) -> str:
        t, name_col = (sweep_t, "target") if kind == "sweep" else (curve_t, "set_name")
        sid = new_id()
        with self._write() as conn:
            conn.execute(
                insert(t).values(
                    {
                        "id": sid,
                        "created_at": time.time(),
                        name_col: name,
                        "params_json": dumps(dict(params)),
                        "result_json": dumps(dict(result)),
                    }
                )
            )
        return sid

    @staticmethod
    def _saved(kind: str, r: Mapping[Any, Any]) -> SavedResult:
        return SavedResult(
            id=r["id"],
            created_at=r["created_at"],
            name=r["target" if kind == "sweep" else "set_name"],
            params=loads(r["params_json"], {}),
            result=loads(r["result_json"], {}),
        )

    def _list_saved(self, kind: str, limit: int) -> list[SavedResult]:
        t = sweep_t if kind == "sweep" else curve_t
        with self._read() as conn:
            rows = conn.execute(select(t).order_by(t.c.created_at.desc()).limit(limit)).mappings()
            return [self._saved(kind, r) for r in rows]

    def _get_saved(self, kind: str, sid: str) -> SavedResult:
        t = sweep_t if kind == "sweep" else curve_t
        with self._read() as conn:
            r = conn.execute(select(t).where(t.c.id == sid)).mappings().first()
        if r is None:
            raise NotFoundError(f"no {kind} {sid!r} in the store")
        return self._saved(kind, r)


_HEAD: list[str | None] = []


def _alembic_config(conn: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str | None:
    """The newest migration shipped with this code (read once)."""
    if not _HEAD:
        from alembic.script import ScriptDirectory

        _HEAD.append(ScriptDirectory.from_config(_alembic_config()).get_current_head())
    return _HEAD[0]


def _sqlite_events(engine: Engine) -> None:
    """WAL, busy timeout, foreign keys, and explicit BEGIN (IMMEDIATE for writes)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        set_up_sqlite(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("tally_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _finished_at(status: str) -> float | None:
    """A batch's finish time for its new ``status``: none while ``running``, else now."""
    if status not in BATCH_STATUSES:
        raise InputError(f"unknown batch status {status!r}: use {', '.join(BATCH_STATUSES)}")
    return None if status == "running" else time.time()
