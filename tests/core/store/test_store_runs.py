"""Runs and calls: round trips, upserts, resume reads, filters, pages, aggregates and the cache,
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from core.errors import InputError, NotFoundError, StoreError
from core.panel import ModelSpec, Panel
from core.policy import Policy
from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import RunFilter, Store, WriteBatch
from core.store.tables import call_row, run_t
from core.task import Task
from tests.specs import spec

MakeCall = Callable[..., CallResult]
MakeResult = Callable[..., RunResult]
HOUR = 3600.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 86400)  # a UTC midnight


def set_created(store: Store, run_id: str, at: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(run_t).where(run_t.c.id == run_id).values(created_at=at))


def test_save_and_get_round_trip(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    calls = [
        make_call(2, "sim:b", "no", retries=2),
        make_call(0, "sim:a", "yes", cached=True),
        make_call(1, "sim:a", None, CallStatus.INVALID, raw="<b>maybe</b>", cost_usd=None),
        make_call(5, "sim:c", "yes", phase="escalate"),
        make_call(3, "sim:b", "yes", phase="expand", sample=1),
    ]
    engine_order = [calls[1], calls[2], calls[0], calls[4], calls[3]]
    decision = Decision(
        status=DecisionStatus.ESCALATED,
        label="yes",
        branches=["expand:1", "escalate:sim:c"],
        margin=0.0,
        reason="tie between yes and no; escalated",
        tied=["no", "yes"],
        fields={"a": "1", "b": None},
    )
    original = make_result(
        "run-1",
        engine_order,
        decision=decision,
        votes={"yes": 2, "no": 1},
        field_votes={"a": {"1": 2}},
        cost_usd=None,
        batch_id="b1",
        item_id="row-7",
        gold="yes",
        created_at=1_700_000_123.25,
    )
    store.save_run(original, source="cli")
    back = store.get_run("run-1")
    assert back == original
    assert [(c.phase, c.slot) for c in back.calls] == [
        ("panel", 0),
        ("panel", 1),
        ("panel", 2),
        ("expand", 3),
        ("escalate", 5),
    ]
    row = store.get_run_row("run-1")
    assert row.source == "cli" and row.status == "escalated" and row.n_calls == 5
    assert row.branches == ["expand:1", "escalate:sim:c"] and row.cost_usd is None


def test_unknown_ids_are_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        store.get_run("nope")
    with pytest.raises(NotFoundError):
        store.get_run_row("nope")
    with pytest.raises(NotFoundError):
        store.reviews("nope")
    with pytest.raises(NotFoundError, match="no batch"):
        store.get_batch("nope")
    with pytest.raises(NotFoundError, match="no sweep"):
        store.get_sweep("nope")
    with pytest.raises(NotFoundError, match="no curve"):
        store.get_curve("nope")
    assert store.run_calls("nope") == [] and store.finished_calls("nope") == []


def test_start_then_finish_keeps_what_only_the_start_knew(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    panel = Panel.build([ModelSpec.parse("sim:a"), ModelSpec.parse("sim:b")], 3)
    store.start_run(
        "r",
        "text",
        RunSpec(task=Task.for_yesno(name="triage"), panel=panel, policy=Policy()),
        source="batch",
        batch_id="B",
        item_id="i-3",
        item_index=3,
        gold="yes",
    )
    row = store.get_run_row("r")
    assert row.status == "running" and row.panel == ["sim:a", "sim:b", "sim:a"]
    assert row.task_name == "triage" and row.item_index == 3
    with pytest.raises(InputError, match="has not finished"):
        store.get_run("r")

    # starting the same run again (a resumed batch) leaves it as it is
    store.start_run("r", "other", spec(["x:y"]), source="cli")
    assert store.get_run_row("r").input == "text"

    store.finish_run(make_result("r", batch_id=None, gold=None), source="library")
    row = store.get_run_row("r")
    assert row.status == "decided" and row.source == "batch"
    assert (row.batch_id, row.item_id, row.item_index, row.gold) == ("B", "i-3", 3, "yes")
    assert row.finished_at is not None


def test_calls_are_upserted_by_run_phase_and_slot(store: Store, make_call: MakeCall) -> None:
    store.start_run("r", "x", spec(["sim:a"]), source="library")
    store.record_call("r", make_call(0, status=CallStatus.ERROR, error="boom"), cache_key="k0")
    store.record_call("r", make_call(0, status=CallStatus.RUNNING))
    store.record_call("r", make_call(0, phase="expand", answer="no"))
    assert [c.status for c in store.run_calls("r")] == [CallStatus.RUNNING, CallStatus.OK]
    assert store.finished_calls("r") == [make_call(0, phase="expand", answer="no")]

    store.record_call("r", make_call(0, answer="yes"))  # re-run on resume: replaces the row
    calls = store.run_calls("r")
    assert len(calls) == 2 and calls[0] == make_call(0, answer="yes")
    # the later write carried no cache key: the stored one is kept
    assert store.cache_lookup(["k0"])["k0"] == make_call(0, answer="yes")


def test_a_call_of_an_unknown_run_is_refused(store: Store, make_call: MakeCall) -> None:
    with pytest.raises(StoreError, match="store "):
        store.record_call("ghost", make_call(0))


def test_finished_calls_skip_calls_still_in_flight(store: Store, make_call: MakeCall) -> None:
    store.start_run("r", "x", spec(["sim:a"], 6), source="library")
    statuses = list(CallStatus)
    for i, status in enumerate(statuses):
        store.record_call("r", make_call(i, status=status))
    done = store.finished_calls("r")
    assert [c.status for c in done] == [s for s in statuses if s.final]
    assert len(store.run_calls("r")) == len(statuses)


def _seed_history(store: Store, make_call: MakeCall, make_result: MakeResult) -> None:
    """Twelve runs across two days, four statuses, two tasks, three models, known costs."""
    statuses = [
        DecisionStatus.DECIDED,
        DecisionStatus.TIE,
        DecisionStatus.NEEDS_REVIEW,
        DecisionStatus.FAILED,
    ]
    for i in range(12):
        model = ["sim:a", "sim:b", "sim:c"][i % 3]
        calls = [make_call(0, "sim:a", "yes"), make_call(1, model, "no" if i % 2 else "yes")]
        status = statuses[i % 4]
        r = make_result(
            f"r{i:02d}",
            calls,
            status=status,
            label=None if status == DecisionStatus.TIE else "yes",
            cost_usd=None if i == 11 else 0.01 * (i + 1),
            batch_id="B" if i < 5 else None,
            task={"name": "odd" if i % 2 else "even"},
            input=f"Case {i}: the page {'Shows' if i == 4 else 'has'} 100% layout_shift",
            branches=["conservative"] if i == 8 else [],
        )
        store.save_run(r, source="ui" if i == 0 else "cli")
        set_created(store, f"r{i:02d}", T0 + i * HOUR + (86400 if i >= 6 else 0))


def test_list_runs_filters_pages_and_total(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    _seed_history(store, make_call, make_result)

    def ids(f: RunFilter | None = None, **kw: Any) -> list[str]:
        rows, total = store.list_runs(f, limit=100, **kw)
        assert total == len(rows)
        return [r.run_id for r in rows]

    everything = ids()
    assert everything == [f"r{i:02d}" for i in reversed(range(12))]  # newest first
    assert ids(RunFilter(since=T0 + 86400)) == everything[:6]
    assert ids(RunFilter(until=T0 + 2 * HOUR)) == ["r01", "r00"]
    assert ids(RunFilter(model="sim:c")) == ["r11", "r08", "r05", "r02"]
    assert ids(RunFilter(task_name="odd")) == [f"r{i:02d}" for i in (11, 9, 7, 5, 3, 1)]
    assert ids(RunFilter(statuses=["failed", "tie"])) == ["r11", "r09", "r07", "r05", "r03", "r01"]
    assert ids(RunFilter(ties_only=True)) == ["r10", "r09", "r08", "r06", "r05", "r02", "r01"]
    assert ids(RunFilter(batch_id="B")) == ["r04", "r03", "r02", "r01", "r00"]
    assert ids(RunFilter(sources=["ui"])) == ["r00"]
    assert ids(RunFilter(min_cost=0.095)) == ["r10", "r09"]  # the unknown cost is not >= anything
    assert ids(RunFilter(max_cost=0.025)) == ["r01", "r00"]
    assert ids(RunFilter(text="SHOWS")) == ["r04"]
    assert ids(RunFilter(text="100%")) == everything  # % and _ are matched literally
    assert ids(RunFilter(text="0%")) == everything
    assert ids(RunFilter(text="y_u")) == []  # "_" would match the "you" in "layout"
    assert ids(RunFilter(model="sim:b", statuses=["needs_review"], since=T0)) == ["r10"]

    seen: list[str] = []
    for offset in range(0, 12, 5):
        rows, total = store.list_runs(RunFilter(), offset=offset, limit=5)
        assert total == 12
        seen += [r.run_id for r in rows]
    assert seen == everything
    rows, total = store.list_runs(RunFilter(batch_id="B"), offset=3, limit=5)
    assert [r.run_id for r in rows] == ["r01", "r00"] and total == 5
    assert store.models() == ["sim:a", "sim:b", "sim:c"]
    assert store.task_names() == ["even", "odd"]


def test_aggregates_are_computed_in_sql(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    _seed_history(store, make_call, make_result)
    by_day = store.cost_over_time(bucket="day")
    assert [(p.bucket, p.runs, p.unknown_cost_runs) for p in by_day] == [
        (T0, 6, 0),
        (T0 + 86400, 6, 1),
    ]
    assert by_day[0].cost_usd == pytest.approx(0.01 * sum(range(1, 7)))
    assert by_day[1].cost_usd == pytest.approx(0.01 * sum(range(7, 12)))
    by_hour = store.cost_over_time(RunFilter(batch_id="B"), bucket="hour")
    assert [p.bucket for p in by_hour] == [T0 + i * HOUR for i in range(5)]
    with pytest.raises(ValueError):
        store.cost_over_time(bucket="week")

    costs = {m.model: m for m in store.cost_by_model()}
    assert costs["sim:a"].calls == 16 and costs["sim:b"].calls == 4 and costs["sim:c"].calls == 4
    assert costs["sim:a"].cost_usd == pytest.approx(0.016)
    assert costs["sim:a"].tokens_in == 16 * 50
    narrowed = {m.model: m.calls for m in store.cost_by_model(RunFilter(model="sim:c"))}
    assert narrowed == {"sim:a": 4, "sim:c": 4}  # every call of the runs that used sim:c
    sample = store.latency_sample_by_model(RunFilter(model="sim:b"))
    assert {m: len(v) for m, v in sample.items()} == {"sim:a": 4, "sim:b": 4}
    pairs = store.pairwise_agreement(RunFilter(model="sim:b"))
    assert {(p.model_a, p.model_b, p.runs) for p in pairs} == {("sim:a", "sim:b", 4)}

    mix = store.decision_mix_over_time(RunFilter(until=T0 + 86400), bucket="day")
    assert [(p.status, p.runs) for p in mix] == [
        ("decided", 2),
        ("failed", 1),
        ("needs_review", 1),
        ("tie", 2),
    ]
    assert store.status_counts() == {"decided": 3, "tie": 3, "needs_review": 3, "failed": 3}
    assert store.status_counts(RunFilter(model="sim:b")) == {
        "tie": 1,
        "needs_review": 1,
        "decided": 1,
        "failed": 1,
    }


def test_latency_sample_keeps_the_latest_per_model(store: Store, make_call: MakeCall) -> None:
    store.start_run("r", "x", spec(), source="library")
    for i in range(6):
        store.record_call("r", make_call(i, "sim:a", latency_ms=float(i)))
    store.record_call("r", make_call(6, "sim:b", latency_ms=60.0))
    store.record_call("r", make_call(7, "sim:b", status=CallStatus.ERROR, latency_ms=70.0))
    sample = store.latency_sample_by_model(per_model_limit=4)
    assert sample == {"sim:a": [5.0, 4.0, 3.0, 2.0], "sim:b": [60.0]}
    assert store.latency_sample_by_model(ok_only=False)["sim:b"] == [70.0, 60.0]


def test_pairwise_agreement_by_hand(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    # run 1: a=yes, a=yes, b=no, c=yes -> a/a agree; a/b 0 of 2; a/c 2 of 2; b/c 0 of 1
    store.save_run(
        make_result(
            "p1",
            [
                make_call(0, "sim:a", "yes"),
                make_call(1, "sim:a", "yes"),
                make_call(2, "sim:b", "no"),
                make_call(3, "sim:c", "yes"),
                make_call(4, "sim:c", None, CallStatus.ERROR),
            ],
        ),
        source="cli",
    )
    # run 2: a=no, b=no -> a/b 1 of 1
    store.save_run(
        make_result("p2", [make_call(0, "sim:a", "no"), make_call(1, "sim:b", "no")]),
        source="cli",
    )
    got = {(p.model_a, p.model_b): (p.agree, p.pairs, p.runs) for p in store.pairwise_agreement()}
    assert got == {
        ("sim:a", "sim:a"): (1, 1, 1),
        ("sim:a", "sim:b"): (1, 3, 2),
        ("sim:a", "sim:c"): (2, 2, 1),
        ("sim:b", "sim:c"): (0, 1, 1),
    }
    rates = {(p.model_a, p.model_b): p.rate for p in store.pairwise_agreement()}
    assert rates[("sim:a", "sim:b")] == pytest.approx(1 / 3)
    set_created(store, "p1", 1.0)  # the older run falls outside a one-run window
    assert {(p.model_a, p.model_b) for p in store.pairwise_agreement(limit_runs=1)} == {
        ("sim:a", "sim:b")
    }


def test_cache_lookup_returns_the_latest_ok_call(store: Store, make_call: MakeCall) -> None:
    store.start_run("r1", "x", spec(), source="library")
    store.start_run("r2", "x", spec(), source="library")
    store.record_call("r1", make_call(0, answer="old"), cache_key="k")
    store.record_call("r2", make_call(0, answer="new"), cache_key="k")
    store.record_call("r2", make_call(1, status=CallStatus.ERROR), cache_key="bad")
    many_calls = [call_row("r1", make_call(10 + i, answer=str(i)), f"s{i}") for i in range(600)]
    store.write(WriteBatch(calls=many_calls))  # more keys than one IN list carries
    got = store.cache_lookup(["k", "bad", "missing", "k"])
    assert set(got) == {"k"} and got["k"].answer == "new"
    many = store.cache_lookup([f"s{i}" for i in range(600)])
    assert len(many) == 600 and many["s599"].answer == "599"
    assert store.cache_lookup([]) == {}


def test_sweeps_and_curves(store: Store) -> None:
    sid = store.save_sweep("sim:sim-fast", {"levels": [1, 2, 4]}, {"ceiling": 4})
    cid = store.save_curve("regression", {"k": 9}, {"n": [1, 3], "error": [0.2, 0.1]})
    store.save_sweep("local:m", {}, {"ceiling": 1})
    sweep = store.get_sweep(sid)
    assert (sweep.name, sweep.params, sweep.result) == (
        "sim:sim-fast",
        {"levels": [1, 2, 4]},
        {"ceiling": 4},
    )
    assert [s.name for s in store.list_sweeps()] == ["local:m", "sim:sim-fast"]
    assert store.get_curve(cid).result == {"n": [1, 3], "error": [0.2, 0.1]}
    assert [c.id for c in store.list_curves()] == [cid]


def test_bad_urls_are_one_line_store_errors_without_passwords(tmp_path: Any) -> None:
    with pytest.raises(StoreError) as err:
        Store("not a url at all")
    assert "\n" not in str(err.value)
    with pytest.raises(StoreError, match="unsupported database") as err:
        Store("mysql://root:hunter2@localhost/db")
    assert "hunter2" not in str(err.value)
    with pytest.raises(StoreError, match=r"no such table.*tally db upgrade"):
        Store(f"sqlite:///{tmp_path}/empty.db").list_runs()


@pytest.mark.postgres
def test_unreachable_postgres_is_a_store_error() -> None:
    store = Store("postgresql://postgres:hunter2@127.0.0.1:1/test")
    assert store.safe_url == "postgresql+psycopg://postgres:***@127.0.0.1:1/test"
    with pytest.raises(StoreError) as err:
        store.ensure_schema()
    message = str(err.value)
    assert "hunter2" not in message and "\n" not in message
    assert message.startswith("store postgresql+psycopg://postgres:***@127.0.0.1:1/test: ")


def test_default_url_comes_from_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "deep" / "er" / "t.db"
    monkeypatch.setenv("TALLY_DATABASE_URL", f"sqlite:///{path}")
    store = Store()
    assert store.safe_url == f"sqlite:///{path}"
    store.ensure_schema()
    assert path.exists()
    assert store.status_counts() == {}
    store.close()


def test_one_write_with_repeated_keys_keeps_the_last(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    """PostgreSQL refuses to upsert one row twice in a statement: the batch is collapsed."""
    from core.store.tables import finish_row, start_row

    first = start_row(
        "r",
        "first",
        spec(),
        source="cli",
        batch_id=None,
        item_id=None,
        item_index=1,
        gold=None,
        created_at=5.0,
    )
    second = start_row(
        "r",
        "second",
        spec(),
        source="ui",
        batch_id=None,
        item_id=None,
        item_index=2,
        gold=None,
        created_at=6.0,
    )
    calls = [call_row("r", make_call(0, answer=a)) for a in ("a", "b", "c")]
    store.write(WriteBatch(starts=[first, second], calls=calls))
    row = store.get_run_row("r")
    assert (row.input, row.source, row.item_index) == ("first", "cli", 1)  # the first start
    assert [c.answer for c in store.run_calls("r")] == ["c"]  # the last call
    done = [finish_row(make_result("r", label=x), source="cli", finished_at=9.0) for x in "xy"]
    store.write(WriteBatch(finishes=done))
    assert store.get_run("r").decision.label == "y"
