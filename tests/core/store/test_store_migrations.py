"""Migrations: an empty database upgraded to head matches the SQLModel tables exactly, on
SQLite and on a fresh PostgreSQL database; upgrading is idempotent and cheap at head."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, column, inspect, table, text

from core.store import Store
from core.store.db import head_revision
from core.store.tables import finish_row, metadata


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that has never seen a migration."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
    else:
        yield request.getfixturevalue("pg_databases").create()


def diffs(store: Store, target: MetaData) -> list[Any]:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, target))


def test_upgrade_from_empty_matches_the_models(empty_url: str) -> None:
    with Store(empty_url) as store:
        assert store.revision() is None
        store.upgrade()
        assert store.revision() == head_revision() == "0011"
        assert diffs(store, metadata) == []
        tables = set(inspect(store.engine).get_table_names())
        assert {"batch", "batch_item", "run", "call", "review", "sweep", "curve", "job"} <= tables


def test_the_comparison_would_see_a_difference(empty_url: str) -> None:
    """The check above can fail: a model the migrations do not know about shows up."""
    with Store(empty_url) as store:
        store.upgrade()
        changed = MetaData()
        for t in metadata.sorted_tables:
            t.to_metadata(changed)
        changed.tables["run"].append_column(Column("extra", Integer))
        found = diffs(store, changed)
        assert [d[0] for d in found] == ["add_column"] and found[0][3].name == "extra"


def test_ensure_schema_is_idempotent(empty_url: str) -> None:
    with Store(empty_url) as store:
        store.ensure_schema()
        store.ensure_schema()
        store.upgrade()
        assert store.revision() == head_revision()
        store.save_sweep("t", {}, {})
        store.upgrade()  # data survives a no-op upgrade
        assert len(store.list_sweeps()) == 1


def test_sqlite_settings_are_applied(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path}/s.db") as store, store.engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
        }
    assert pragma == {
        "journal_mode": "wal",
        "busy_timeout": 5000,
        "synchronous": 1,
        "foreign_keys": 1,
    }


def test_a_store_at_the_first_migration_upgrades_with_its_reviews(
    empty_url: str, make_call: Any, make_result: Any
) -> None:
    """0002 adds the replaced decision's reason to reviews: older reviews stay, without one,
    and the step can be taken back and forth."""
    from alembic import command

    from core.store.db import _alembic_config

    def migrate(store: Store, step: Any, to: str) -> None:
        with store.engine.begin() as conn:
            step(_alembic_config(conn), to)

    with Store(empty_url) as store:
        migrate(store, command.upgrade, "0001")
        assert store.revision() == "0001"
        with store.engine.begin() as conn:
            # the run as a store at 0001 held it: only the columns that existed then
            row = finish_row(make_result("r"), source="cli", finished_at=1.0)
            then = [c["name"] for c in inspect(conn).get_columns("run")]
            conn.execute(
                table("run", *map(column, then)).insert().values({name: row[name] for name in then})
            )
            conn.execute(
                text(
                    "INSERT INTO review (run_id, reviewer, label, reason, created_at, "
                    "previous_status) VALUES ('r', 'ana', 'yes', 'clear', 1.0, 'needs_review')"
                )
            )
        store.upgrade()
        assert store.revision() == head_revision() and diffs(store, metadata) == []
        (old,) = store.reviews("r")
        assert (old.reviewer, old.reason, old.previous_reason) == ("ana", "clear", None)
        migrate(store, command.downgrade, "0001")
        assert store.revision() == "0001"
        assert "previous_reason" not in {
            c["name"] for c in inspect(store.engine).get_columns("review")
        }
        store.upgrade()
        assert [r.reason for r in store.reviews("r")] == ["clear"]


def test_0005_keeps_the_outcome_quorum_and_degradation_of_new_runs_and_reads_old_ones(
    empty_url: str, make_result: Any
) -> None:
    """Runs stored before 0005 read back with no outcome, quorum or degradation; runs after
    it keep all three; the step can be taken back and forth."""
    from alembic import command

    from core.result import Decision, DecisionStatus, Degraded, Outcome, QuorumCheck
    from core.store.db import _alembic_config

    decision = Decision(
        status=DecisionStatus.FAILED,
        reason="threshold not met: yes has 2 of 5 counted votes, more than half needed",
        outcome=Outcome.THRESHOLD_NOT_MET,
        quorum=QuorumCheck(need=3, valid=3, panel=5, rule="default: half the panel"),
        degraded=Degraded(planned=5, counted=3, timeouts=2, why="3 of 5 counted: 2 timed out"),
    )
    with Store(empty_url) as store:
        store.upgrade()
        store.save_run(make_result("new", decision=decision), source="cli")
        assert store.get_run("new").decision == decision
        with store.engine.begin() as conn:
            command.downgrade(_alembic_config(conn), "0004")
        assert "outcome" not in {c["name"] for c in inspect(store.engine).get_columns("run")}
        store.upgrade()
        back = store.get_run("new")
        assert len(back.calls) == 3  # the run's calls survive both steps
        old = back.decision
        assert (old.status, old.reason) == (decision.status, decision.reason)
        assert (old.outcome, old.quorum, old.degraded) == (None, None, None)


def test_0007_keeps_the_confidence_of_new_runs_and_reads_old_ones_without(
    empty_url: str, make_result: Any
) -> None:
    """A decision's confidence is stored and read back; a run stored before 0007 reads back
    without one; the step can be taken back and forth."""
    from alembic import command

    from core.result import Decision, DecisionStatus, Outcome
    from core.store.db import _alembic_config

    decision = Decision(
        status=DecisionStatus.DECIDED,
        label="yes",
        reason="yes: 4 of 5 votes, margin 3",
        outcome=Outcome.DECIDED,
        confidence=57 / 64,
    )
    with Store(empty_url) as store:
        store.upgrade()
        store.save_run(make_result("new", decision=decision), source="cli")
        assert store.get_run("new").decision.confidence == 57 / 64
        with store.engine.begin() as conn:
            command.downgrade(_alembic_config(conn), "0006")
        assert "confidence" not in {c["name"] for c in inspect(store.engine).get_columns("run")}
        store.upgrade()
        old = store.get_run("new").decision
        assert (old.label, old.outcome, old.confidence) == ("yes", Outcome.DECIDED, None)
