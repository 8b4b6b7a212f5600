"""One gold comparison: the format reads the gold and judges the decided label against it, the
same way for the batch summary, the curve's draws and the pages' table; a gold the task cannot
read is refused before a batch is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from core.api import Tally, build_policy, build_task
from core.auth import LOCAL
from core.batch import batch_summary, check_gold, judged_runs
from core.cli import app
from core.errors import InputError
from core.experiments.curve import read_draws
from core.formats import JsonFormat, LabelFormat, NumberFormat, YesNoFormat, parse_format
from core.jobs.inprocess import InProcessExecutor
from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import BatchItem, Store
from core.task import Task
from tests.specs import spec

REGRESSION = LabelFormat(labels=("regression", "no regression"), synonyms={"bug": "regression"})
NEAR = NumberFormat(tolerance=1)
PERSON = JsonFormat.model_validate({"schema": {"type": "object"}})


@pytest.mark.parametrize(
    ("fmt", "label", "gold", "right"),
    [
        (REGRESSION, "regression", "regression", True),
        (REGRESSION, "regression", "Regression.", True),
        (REGRESSION, "regression", " REGRESSION ", True),
        (REGRESSION, "regression", "Bug", True),  # a synonym
        (REGRESSION, "regression", "no regression", False),
        (REGRESSION, "no regression", "No-Regression", True),
        (REGRESSION, None, "regression", False),  # no label is never right
        (YesNoFormat(), "yes", "True", True),
        (YesNoFormat(), "no", "N", True),
        (YesNoFormat(), "no", "yes", False),
        (NEAR, "10.5", "10", True),  # within tolerance
        (NEAR, "10", "11", True),
        (NEAR, "10", "11.5", False),
        (NumberFormat(), "42", "42.0", True),
        (NumberFormat(), "1000", "1,000", True),
        (NumberFormat(), "42", "43", False),
        (PERSON, '{"a":1,"b":"x"}', '{"b": "x", "a": 1.0}', True),
        (PERSON, '{"a":1}', '{"a": true}', False),
    ],
)
def test_gold_matches_through_the_format(
    fmt: LabelFormat | YesNoFormat | NumberFormat | JsonFormat,
    label: str | None,
    gold: str,
    right: bool,
) -> None:
    assert fmt.gold_matches(label, gold) is right


@pytest.mark.parametrize(
    ("fmt", "gold", "message"),
    [
        (REGRESSION, "maybe", "'maybe' is no label or synonym of regression, no regression"),
        (REGRESSION, "This is a regression", "no label or synonym"),  # gold is not a sentence
        (YesNoFormat(), "perhaps", "neither yes nor no"),
        (NumberFormat(), "forty", "no number"),
        (NumberFormat(), "3 or 4", "several numbers"),
        (PERSON, "not json", "not JSON"),
        (PERSON, "[1]", "not a JSON object"),
        (
            JsonFormat.model_validate({"schema": {"type": "object", "required": ["a"]}}),
            "{}",
            "does not match the schema",
        ),
    ],
)
def test_unreadable_gold_is_refused_with_its_row(
    fmt: LabelFormat | YesNoFormat | NumberFormat | JsonFormat, gold: str, message: str
) -> None:
    items = [
        BatchItem(0, "a", "t", None),
        BatchItem(1, "b", "t", "regression"),
        BatchItem(2, "c", "t", gold),
    ]
    if isinstance(fmt, LabelFormat):
        items[1] = BatchItem(1, "b", "t", "Bug")
    else:
        items[1] = BatchItem(1, "b", "t", None)
    with pytest.raises(InputError) as info:
        check_gold(fmt, items)
    text = str(info.value)
    assert text.startswith("row 3 (c): gold ") and message in text and "\n" not in text


# -- the batch summary, the curve's draws and the table agree on one batch --------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'gold.db'}") as s:
        s.upgrade()
        yield s


def stored_batch(store: Store, task: Task, rows: list[tuple[str | None, str | None]]) -> str:
    """A finished batch whose run ``i`` decided ``rows[i][0]`` against gold ``rows[i][1]``;
    each run's three calls all answered the decided label."""
    run_spec = spec(["sim:a"], 3, task=task)
    bid = store.create_batch(
        name="gold",
        source="cli",
        spec=run_spec,
        concurrency=1,
        items=[(i, f"item-{i}", f"text {i}", gold) for i, (_, gold) in enumerate(rows)],
    )
    for i, (label, gold) in enumerate(rows):
        run_id = f"{bid}-{i}"
        store.start_run(
            run_id,
            f"text {i}",
            run_spec,
            source="batch",
            batch_id=bid,
            item_id=f"item-{i}",
            item_index=i,
            gold=gold,
        )
        calls = [
            CallResult(slot=s, model="sim:a", status=CallStatus.OK, answer=label, raw=str(label))
            for s in range(3)
        ]
        store.finish_run(
            RunResult(
                run_id=run_id,
                input=f"text {i}",
                spec=run_spec,
                decision=Decision(status=DecisionStatus.DECIDED, label=label),
                votes={} if label is None else {label: 3},
                calls=calls,
                cost_usd=0.0,
                latency_ms=1.0,
                batch_id=bid,
                item_id=f"item-{i}",
                gold=gold,
            )
        )
    store.set_batch_status(bid, "done")
    return bid


def curve_right(store: Store, bid: str, task: Task) -> dict[str, bool]:
    """Per item, whether the curve counts its unanimous answer as the gold."""
    draws = read_draws(store.batch_results(bid), task.format)
    return {
        item: all(a == draws.gold[item] for answers in row.values() for a in answers)
        for item, row in draws.samples.items()
    }


@pytest.mark.parametrize(
    ("fmt", "rows", "right"),
    [
        (
            {
                "kind": "label",
                "labels": ["regression", "no regression"],
                "synonyms": {"bug": "regression"},
            },
            [
                ("regression", "Bug"),
                ("regression", "Regression."),
                ("no regression", "regression"),
                ("no regression", " No Regression "),
            ],
            [True, True, False, True],
        ),
        (
            {"kind": "number", "tolerance": 1},
            [("10.5", "10"), ("42", "42.0"), ("7", "9")],
            [True, True, False],
        ),
        (
            {"kind": "json", "schema": {"type": "object"}},
            [('{"a":1,"b":2}', '{"b": 2, "a": 1.0}'), ('{"a":1}', '{"a": 2}')],
            [True, False],
        ),
    ],
)
def test_summary_curve_and_table_judge_one_batch_alike(
    store: Store, fmt: dict[str, object], rows: list[tuple[str, str]], right: list[bool]
) -> None:
    task = Task(name="t", format=parse_format(fmt))
    bid = stored_batch(store, task, rows)
    summary = batch_summary(store, bid)
    assert (summary["with_gold"], summary["correct"]) == (len(rows), sum(right))
    assert summary["accuracy"] == pytest.approx(sum(right) / len(rows))
    assert [ok for _, ok in judged_runs(store, bid)] == right
    assert curve_right(store, bid, task) == {f"item-{i}": ok for i, ok in enumerate(right)}


def test_a_run_without_label_or_gold_and_a_running_run(store: Store) -> None:
    task = Task(name="t", format=REGRESSION)
    bid = stored_batch(store, task, [(None, "regression"), ("regression", None)])
    summary = batch_summary(store, bid)
    assert (summary["with_gold"], summary["correct"], summary["accuracy"]) == (1, 0, 0.0)
    assert [ok for _, ok in judged_runs(store, bid)] == [False, None]


# -- refused before the batch runs: library, CLI, dashboard -------------------------------------


BAD_ITEMS = [
    BatchItem(0, "one", "Is it fine?", "yes"),
    BatchItem(1, "two", "Is it broken?", "no idea"),
]


@pytest.fixture
def sim_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.01")
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'refuse.db'}"
    monkeypatch.setenv("TALLY_DATABASE_URL", url)
    return url


def test_the_library_refuses_unreadable_gold_and_stores_nothing(sim_env: str) -> None:
    async def go() -> None:
        async with Tally.open(database_url=sim_env) as tally:
            await tally.run_batch(
                BAD_ITEMS,
                RunSpec(
                    task=build_task(answer_format={"kind": "yesno"}),
                    panel=tally.panel(["sim:sim-mid"], 3),
                    policy=build_policy(),
                ),
            )

    with pytest.raises(InputError, match=r"^row 2 \(two\): gold 'no idea' is neither yes nor no"):
        anyio.run(go)
    with Store(sim_env) as store:
        assert store.list_batches() == []


def test_the_dashboard_runner_refuses_unreadable_gold_and_stores_nothing(sim_env: str) -> None:
    with InProcessExecutor(database_url=sim_env) as runner:
        with pytest.raises(InputError, match=r"^row 2 \(two\): gold 'no idea'"):
            runner.submit_batch(
                BAD_ITEMS,
                RunSpec(
                    task=build_task(answer_format={"kind": "yesno"}),
                    panel=runner.tally.panel(["sim:sim-mid"], 3),
                    policy=build_policy(),
                ),
                name="bad gold",
                columns={"text": "text", "gold": "gold", "id": "id"},
                actor=LOCAL,
            )
        assert runner.store.list_batches() == []


def test_the_cli_refuses_unreadable_gold_with_exit_2(sim_env: str, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,text,label\n1,the page is blank,regression\n2,fine now,maybe\n")
    done = CliRunner().invoke(
        app,
        [
            "batch",
            str(path),
            "--labels",
            "regression,no regression",
            "--model",
            "sim:sim-mid",
            "--gold-column",
            "label",
            "--id-column",
            "id",
        ],
    )
    assert done.exit_code == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "row 2 (2): gold 'maybe' is no label or synonym" in lines[0]
    with Store(sim_env) as store:
        assert store.list_batches() == []
