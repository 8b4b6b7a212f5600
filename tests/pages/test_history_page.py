"""History under AppTest: filters and pages in SQL, run details drawn like the Run page, and a
store of 100,000 runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core.api import build_policy, build_task
from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import Store, WriteBatch
from core.store.tables import call_row, finish_row

PageTest = Callable[[str], AppTest]
TASK = build_task(labels=["yes", "no"]).model_dump(mode="json")
POLICY = build_policy(tie_break="human").model_dump(mode="json")
PAYLOAD = "<script>window.__pwned=1</script> ![img](http://127.0.0.1:9/x.png) [link](http://x)"


def make_result(
    run_id: str,
    *,
    status: DecisionStatus = DecisionStatus.DECIDED,
    label: str | None = "yes",
    models: tuple[str, ...] = ("sim:sim-mid", "sim:sim-fast"),
    answers: tuple[str | None, ...] = ("yes", "yes", "no"),
    created_at: float | None = None,
    cost: float | None = 0.001,
    text: str = "Is it fine?",
    batch_id: str | None = None,
    branches: tuple[str, ...] = (),
    tied: tuple[str, ...] = (),
    raw: str | None = None,
) -> RunResult:
    calls = []
    for slot, answer in enumerate(answers):
        calls.append(
            CallResult(
                slot=slot,
                model=models[slot % len(models)],
                status=CallStatus.OK if answer is not None else CallStatus.ERROR,
                answer=answer,
                raw=raw if raw is not None else (f"The answer is {answer}" if answer else None),
                error=None if answer is not None else "HTTP 500 from the provider",
                latency_ms=100.0 + 10 * slot,
                tokens_in=20,
                tokens_out=5,
                cost_usd=None if cost is None else cost / len(answers),
            )
        )
    votes: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            votes[answer] = votes.get(answer, 0) + 1
    return RunResult(
        run_id=run_id,
        input=text,
        spec=RunSpec.from_json(
            {
                "task": TASK,
                "panel": [models[i % len(models)] for i in range(len(answers))],
                "policy": POLICY,
            }
        ),
        decision=Decision(
            status=status,
            label=label,
            margin=1.0 if label else None,
            branches=list(branches),
            tied=list(tied),
            reason=f"{status.value} for the test",
        ),
        votes=votes,
        calls=calls,
        cost_usd=cost,
        latency_ms=321.0,
        batch_id=batch_id,
        created_at=created_at if created_at is not None else time.time(),
    )


def total_line(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "match" in m.value)


def run_table_ids(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["run id"])


def test_empty_store(page_test: PageTest, store: Store) -> None:
    at = page_test("pages/history.py").run()
    assert not at.exception
    assert total_line(at) == "**No runs match these filters.**"
    assert "No run on this page." in [c.value for c in at.caption]


def test_filters_narrow_the_runs(page_test: PageTest, store: Store) -> None:
    now = time.time()
    batch = store.create_batch(
        name="nightly", source="cli", spec=RunSpec.from_json(
            {"task": TASK, "panel": ["sim:sim-mid"], "policy": POLICY}),
        concurrency=4, items=[(0, None, "batch input", None)],
    )  # fmt: skip
    results = [
        make_result("r-decided", created_at=now - 60),
        make_result(
            "r-tie", status=DecisionStatus.TIE, label=None, answers=("yes", "no"),
            tied=("yes", "no"), created_at=now - 120,
        ),
        make_result(
            "r-review", status=DecisionStatus.NEEDS_REVIEW, label=None, answers=("yes", "no"),
            branches=("human",), tied=("yes", "no"), created_at=now - 180,
        ),
        make_result("r-oracle", models=("sim:sim-oracle",), created_at=now - 240, cost=0.5),
        make_result("r-old", created_at=now - 10 * 86400),
        make_result("r-batch", batch_id=batch, created_at=now - 300, text="batch input"),
        make_result("r-unknown-cost", cost=None, created_at=now - 360),
    ]  # fmt: skip
    for r in results:
        store.save_run(r, source="library")

    at = page_test("pages/history.py").run()
    assert not at.exception
    assert total_line(at).startswith("**6 runs**")  # the last 24 hours by default
    at.selectbox(key="hist.range").set_value("all time").run()
    assert total_line(at).startswith("**7 runs**")
    assert run_table_ids(at)[0] == "r-decided"  # newest first

    at.multiselect(key="hist.statuses").set_value(["tie"]).run()
    assert run_table_ids(at) == ["r-tie"]
    at.multiselect(key="hist.statuses").set_value([]).run()

    at.checkbox(key="hist.ties").check().run()
    assert sorted(run_table_ids(at)) == ["r-review", "r-tie"]
    at.checkbox(key="hist.ties").uncheck().run()

    at.selectbox(key="hist.model").set_value("sim:sim-oracle").run()
    assert run_table_ids(at) == ["r-oracle"]
    at.selectbox(key="hist.model").set_value("(any)").run()

    at.selectbox(key="hist.batch").set_value(batch).run()
    assert run_table_ids(at) == ["r-batch"]
    at.selectbox(key="hist.batch").set_value("(any)").run()

    at.number_input(key="hist.min_cost").set_value(0.1).run()
    assert run_table_ids(at) == ["r-oracle"]  # unknown costs never pass a cost bound
    at.number_input(key="hist.min_cost").set_value(None).run()
    at.number_input(key="hist.max_cost").set_value(0.01).run()
    assert "r-oracle" not in run_table_ids(at) and "r-unknown-cost" not in run_table_ids(at)
    at.number_input(key="hist.max_cost").set_value(None).run()

    at.text_input(key="hist.text").set_value("BATCH in").run()
    assert run_table_ids(at) == ["r-batch"]
    assert not at.exception

    table = at.dataframe[0].value
    assert list(table["cost"]) == ["$0.001 (simulated)"]  # sim prices are labelled


def test_pages_are_cut_in_sql(page_test: PageTest, store: Store) -> None:
    now = time.time()
    rows = [make_result(f"run-{i:03d}", created_at=now - i) for i in range(120)]
    store.write(WriteBatch(finishes=[finish_row(r, source="cli", finished_at=now) for r in rows]))
    at = page_test("pages/history.py").run()
    assert total_line(at) == "**120 runs** match · showing 1–50 · page 1 of 3"
    assert len(at.dataframe[0].value) == 50
    at.number_input(key="hist.page").set_value(3).run()
    assert total_line(at) == "**120 runs** match · showing 101–120 · page 3 of 3"
    assert run_table_ids(at) == [f"run-{i:03d}" for i in range(100, 120)]
    # narrowing the filter below the page shown falls back to the last page
    at.text_input(key="hist.text").set_value("nothing like this").run()
    assert not at.exception
    assert total_line(at) == "**No runs match these filters.**"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (DecisionStatus.DECIDED, "DECIDED: yes"),
        (DecisionStatus.TIE, "TIE"),
        (DecisionStatus.NEEDS_REVIEW, "Review queue"),
        (DecisionStatus.NO_CONVERGENCE, "Votes on prose are vibes"),
        (DecisionStatus.FAILED, "FAILED"),
    ],
)
def test_a_run_opens_as_the_run_page_shows_it(
    page_test: PageTest, store: Store, status: DecisionStatus, expected: str
) -> None:
    label = "yes" if status == DecisionStatus.DECIDED else None
    store.save_run(
        make_result(
            "r1", status=status, label=label, answers=("yes", "no", None),
            branches=("expand:2",) if status == DecisionStatus.TIE else (),
        ),
        source="ui",
    )  # fmt: skip
    at = page_test("pages/history.py").run()
    at.selectbox(key="hist.run").set_value("r1").run()
    assert not at.exception
    banners = [e.value for e in (*at.success, *at.warning, *at.error)]
    assert any(expected in b for b in banners), banners
    if status == DecisionStatus.TIE:
        assert any(r"expand\:2" in b for b in banners)  # markdown-escaped
    calls = at.dataframe[1].value
    assert list(calls["slot"]) == [0, 1, 2]
    assert list(calls["state"])[2] == "error: HTTP 500 from the provider"
    raws = [c.value for c in at.code]
    assert "The answer is yes" in raws and "(no reply)" in raws
    assert len(at.get("plotly_chart")) >= 1


def test_model_output_is_never_markdown(page_test: PageTest, store: Store) -> None:
    store.save_run(
        make_result("r-x", label=PAYLOAD, answers=(PAYLOAD, PAYLOAD), raw=PAYLOAD), source="ui"
    )
    at = page_test("pages/history.py").run()
    at.selectbox(key="hist.run").set_value("r-x").run()
    assert not at.exception
    assert PAYLOAD in [c.value for c in at.code]  # the raw reply, verbatim, as plain text
    markdown = [m.value for m in (*at.markdown, *at.caption, *at.success, *at.warning)]
    for text in markdown:
        assert "](http" not in text and "<script>" not in text
    assert any(r"\!\[img\]\(http" in t for t in markdown)  # escaped in the banner


def test_the_call_table_shows_each_raw_reply_beside_its_vote(
    page_test: PageTest, store: Store
) -> None:
    result = make_result("r-rv", answers=("yes", "no", None))
    result.calls[0].raw = "**Yes.** The sky is blue."
    result.calls[1].raw = "No, it isn't.\nNot today."
    store.save_run(result, source="ui")
    at = page_test("pages/history.py").run()
    at.selectbox(key="hist.run").set_value("r-rv").run()
    assert not at.exception
    calls = at.dataframe[1].value
    assert list(calls.columns[calls.columns.get_indexer(["reply", "vote"])]) == ["reply", "vote"]
    assert list(calls["reply"]) == ["**Yes.** The sky is blue.", "No, it isn't. Not today.", ""]
    assert list(calls["vote"]) == ["yes", "no", ""]
    cols = list(calls.columns)
    assert cols.index("reply") + 1 == cols.index("vote")  # raw reply, then what it counted as


def test_a_markup_reply_stays_text_in_the_call_table(page_test: PageTest, store: Store) -> None:
    store.save_run(make_result("r-m", answers=("yes",), raw=PAYLOAD), source="ui")
    at = page_test("pages/history.py").run()
    at.selectbox(key="hist.run").set_value("r-m").run()
    assert list(at.dataframe[1].value["reply"]) == [PAYLOAD]  # a dataframe cell: never markup


def test_a_running_run_shows_its_calls_so_far(page_test: PageTest, store: Store) -> None:
    spec = RunSpec.from_json({"task": TASK, "panel": ["sim:sim-mid"], "policy": POLICY})
    store.start_run("r-live", "still going", spec, source="ui")
    store.record_call("r-live", CallResult(slot=0, model="sim:sim-mid", status="running"))
    at = page_test("pages/history.py").run()
    at.selectbox(key="hist.run").set_value("r-live").run()
    assert not at.exception
    assert any("has not finished" in i.value for i in at.info)
    assert list(at.dataframe[1].value["state"]) == ["running"]


def test_one_hundred_thousand_runs(page_test: PageTest, store: Store) -> None:
    """The page reads pages and aggregates from SQL, so a big store renders like a small one."""
    now = time.time()
    template = make_result("template", answers=("yes", "no", "yes"))
    row = finish_row(template, source="batch", finished_at=now)
    calls = [call_row("template", c) for c in template.calls]
    statuses = ["decided", "decided", "decided", "tie", "needs_review", "escalated", "failed"]
    total = 100_000
    for start in range(0, total, 10_000):
        batch = WriteBatch()
        for i in range(start, start + 10_000):
            run_id = f"bulk-{i:06d}"
            batch.finishes.append(
                {**row, "id": run_id, "created_at": now - i * 5, "status": statuses[i % 7]}
            )
            if i % 10 == 0:  # calls for a tenth of the runs: enough for the call aggregates
                batch.calls.extend({**c, "run_id": run_id} for c in calls)
        store.write(batch)
    assert store.list_runs(limit=1)[1] == total

    at = page_test("pages/history.py")
    at.session_state["hist.range"] = "all time"
    at.run()
    assert not at.exception
    assert total_line(at) == "**100,000 runs** match · showing 1–50 · page 1 of 2000"
    assert run_table_ids(at)[0] == "bulk-000000"
    at.number_input(key="hist.page").set_value(2000).run()
    assert not at.exception
    assert run_table_ids(at)[-1] == "bulk-099999"
    at.multiselect(key="hist.statuses").set_value(["tie"]).run()
    assert total_line(at).startswith("**14,286 runs**")
    at.selectbox(key="hist.model").set_value("sim:sim-fast").run()  # runs with calls only
    assert total_line(at).startswith("**1,429 runs**")
    at.selectbox(key="hist.run").set_value(run_table_ids(at)[0]).run()
    assert not at.exception
    assert any("TIE" in w.value for w in at.warning)


def chart_spec(at: AppTest, title_start: str) -> dict[str, Any]:
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        if spec["layout"]["title"]["text"].startswith(title_start):
            return dict(spec)
    raise AssertionError(f"no chart titled {title_start!r}")


def test_charts_count_ties_whatever_the_tie_break_did(page_test: PageTest, store: Store) -> None:
    now = time.time() // 3600 * 3600 - 1800  # mid-hour: the five runs share one hourly bucket
    for r in [
        make_result("plain-1", created_at=now - 10),
        make_result("plain-2", created_at=now - 20),
        make_result("expanded", branches=("expand:2",), created_at=now - 30),
        make_result(
            "tied", status=DecisionStatus.TIE, label=None, answers=("yes", "no"), created_at=now
        ),
        make_result("no-price", cost=None, created_at=now - 40),
    ]:
        store.save_run(r, source="cli")
    at = page_test("pages/history.py").run()
    assert not at.exception
    tie_rate = chart_spec(at, "Tie rate")["data"][0]
    assert tie_rate["y"] == [2 / 5]
    mix = {t["name"]: t["y"] for t in chart_spec(at, "Decision mix")["data"]}
    assert mix == {"decided": [4], "tie": [1]}
    cost = chart_spec(at, "Cost per hour")
    assert "1 run of unknown cost, known part only" in cost["layout"]["title"]["text"]
    assert cost["data"][0]["y"] == [pytest.approx(0.004)]
    heat = chart_spec(at, "Agreement")["data"][0]
    assert heat["x"] == ["sim:sim-fast", "sim:sim-mid"]


def test_a_partly_unknown_cost_and_a_degraded_decision_show_in_list_and_detail(
    page_test: PageTest, store: Store
) -> None:
    from core.voting import degradation

    result = make_result("r-deg", answers=("yes", "yes", None), models=("local:m",))
    result.calls[0].cost_usd = result.calls[0].cost_known_usd = 0.002
    result.calls[1].cost_usd, result.calls[1].cost_known_usd = None, 0.001  # cut, unbilled
    decision = result.decision.model_copy(
        update={"degraded": degradation(result.calls, build_policy())}
    )
    result = result.model_copy(
        update={
            "decision": decision,
            "cost_usd": None,
            "cost_known_usd": 0.003,
            "cost_unknown_calls": 1,
        }
    )
    store.save_run(result, source="ui")
    store.save_run(make_result("r-ok", answers=("yes", "yes")), source="ui")
    at = page_test("pages/history.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    rows = dict(
        zip(table["run id"], zip(table["cost"], table["degraded"], strict=True), strict=True)
    )
    assert rows["r-deg"] == ("≥ $0.003 + unknown", "2 of 3 counted")
    assert rows["r-ok"] == ("$0.001 (simulated)", "")

    at.selectbox(key="hist.run").set_value("r-deg").run()
    assert not at.exception
    assert next(m.value for m in at.metric if m.label == "Cost") == "≥ $0.003 + unknown"
    warnings = [w.value for w in at.warning]
    assert any("DEGRADED" in w and "2 of 3 counted" in w and "1 failed" in w for w in warnings)
    calls = at.dataframe[1].value
    assert list(calls["cost"]) == ["$0.002", "≥ $0.001 + unknown", "$0.000333"]
    assert "cached" in calls.columns
