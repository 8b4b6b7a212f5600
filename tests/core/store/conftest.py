"""Fixtures of the store tests: every test using ``store`` runs on SQLite and on PostgreSQL.

PostgreSQL: one uniquely named database per test session (created through the ``postgres``
database, migrated once, dropped at the end), emptied before each test, so parallel sessions
never share tables. The server is the one of the test environment (127.0.0.1:5432, trust auth);
``TALLY_TEST_POSTGRES_URL`` points elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import Store

PG_URL = os.environ.get(
    "TALLY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TABLES = "batch, batch_item, run, call, review, review_claim, sweep, curve, job"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def pg_url(database: str) -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


class PgDatabases:
    """Creates and drops uniquely named databases on the test server."""

    def __init__(self) -> None:
        self.admin = create_engine(pg_url("postgres"), isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self) -> str:
        name = f"tally_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return pg_url(name)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def pg_store_url(pg_databases: PgDatabases) -> str:
    url = pg_databases.create()
    with Store(url) as store:
        store.upgrade()
    return url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/tally.db"
        with Store(url) as store:
            store.upgrade()
        return url
    url: str = request.getfixturevalue("pg_store_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as s:
        yield s


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- factories ---------------------------------------------------------------------------------


def call(
    slot: int,
    model: str = "sim:a",
    answer: str | None = "yes",
    status: CallStatus = CallStatus.OK,
    **kw: Any,
) -> CallResult:
    data: dict[str, Any] = {
        "slot": slot,
        "model": model,
        "status": status,
        "answer": answer if status == CallStatus.OK else None,
        "raw": f"reply {slot}: {answer}",
        "latency_ms": 100.0 + slot,
        "ttft_ms": 20.0 + slot,
        "tokens_in": 50,
        "tokens_out": 5,
        "cost_usd": 0.001,
        "started_at": 1_700_000_000.0 + slot,
        "ended_at": 1_700_000_000.5 + slot,
    }
    data.update(kw)
    return CallResult(**data)


def result(
    run_id: str,
    calls: list[CallResult] | None = None,
    *,
    status: DecisionStatus = DecisionStatus.DECIDED,
    label: str | None = "yes",
    votes: dict[str, int] | None = None,
    **kw: Any,
) -> RunResult:
    calls = calls if calls is not None else [call(i) for i in range(3)]
    if votes is None:
        votes = {}
        for c in calls:
            if c.status == CallStatus.OK and c.answer is not None and c.phase != "escalate":
                votes[c.answer] = votes.get(c.answer, 0) + 1
    decision = kw.pop("decision", None) or Decision(
        status=status, label=label, margin=1.0, reason="majority", branches=kw.pop("branches", [])
    )
    data: dict[str, Any] = {
        "run_id": run_id,
        "input": f"input of {run_id}",
        "spec": RunSpec.from_json(
            {
                "task": {"name": "classify", "format": {"kind": "yesno"}, **kw.pop("task", {})},
                "panel": kw.pop("panel", None)
                or [c.model for c in calls if c.phase == "panel"]
                or ["sim:a"],
                "policy": kw.pop("policy", {"aggregation": "majority"}),
            }
        ),
        "decision": decision,
        "votes": votes,
        "calls": calls,
        "cost_usd": sum(c.cost_usd or 0 for c in calls),
        "latency_ms": 250.0,
    }
    data.update(kw)
    return RunResult(**data)


@pytest.fixture
def make_call() -> Callable[..., CallResult]:
    return call


@pytest.fixture
def make_result() -> Callable[..., RunResult]:
    return result
