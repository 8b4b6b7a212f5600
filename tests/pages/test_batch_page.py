"""The Batch page under AppTest: bad files refused beside the widget with nothing stored, a small
upload and a bundled set run to the end with accuracy against gold, and an interrupted batch
resumed."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from core import datasets
from core.api import build_policy, build_task
from core.batch import batch_summary
from core.cost import batch_cost_text
from core.formats import parse_format
from core.panel import Panel
from core.spec import RunSpec
from core.store import Store
from core.store.tables import batch_t

PAGE = "pages/batch.py"
Rerun = Callable[[AppTest, Callable[[AppTest], bool]], AppTest]

GOOD_CSV = (
    b"id,text,label\n"
    b"a1,The checkout button no longer responds,yes\n"
    b"a2,The page looks exactly as before,no\n"
    b'a3,=HYPERLINK("http://127.0.0.1:9"),no\n'
)


def open_page(page_test: Callable[[str], AppTest]) -> AppTest:
    at = page_test(PAGE).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="batch.file").set_value((name, data, "text/plain")).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def fast_panel(at: AppTest) -> None:
    """Two quick sim models, N=3: a small batch finishes in moments."""
    at.multiselect(key="batch.models").set_value(["sim:sim-fast", "sim:sim-mid"])
    at.number_input(key="batch.n").set_value(3)
    at.run()


def test_smoke(page_test: Callable[[str], AppTest], store: Store) -> None:
    at = open_page(page_test)
    assert at.title[0].value == "Batch"
    assert not [m.value for m in at.markdown if "taken to be running" in m.value]  # no stray text
    assert at.file_uploader(key="batch.file").allowed_type == [".csv", ".jsonl", ".ndjson"]
    assert "sim:sim-strong" in at.multiselect(key="batch.models").options
    assert at.number_input(key="batch.n").value == 5
    assert any("No batch yet" in c.value for c in at.caption)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.csv", b"", "empty.csv: the file is empty"),
        ("blank.csv", b"  \n\n", "blank.csv: the file is empty"),
        ("latin.csv", "text\ncafé crème\n".encode("latin-1"), "latin.csv: not UTF-8 (byte"),
        (
            "broken.jsonl",
            b'{"text": "fine"}\n{"text": "cut off\n{"text": "also fine"}\n',
            "broken.jsonl: line 2: not valid JSON",
        ),
        ("list.jsonl", b'{"text": "fine"}\n[1, 2]\n', "list.jsonl: line 2: expected a JSON object"),
    ],
)
def test_a_bad_file_is_refused_at_once_and_nothing_is_stored(
    page_test: Callable[[str], AppTest], store: Store, name: str, data: bytes, message: str
) -> None:
    at = upload(open_page(page_test), name, data)
    assert any(e.startswith(message) for e in errors(at)), errors(at)
    at.button(key="batch.submit").click().run()
    assert any(e.startswith(message) for e in errors(at)), errors(at)
    assert store.list_batches() == []
    assert store.list_runs()[1] == 0


def test_a_csv_without_a_text_column_asks_for_one(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    at = upload(open_page(page_test), "odd.csv", b"body,verdict\nhello,yes\nbye,no\n")
    assert at.selectbox(key="batch.text_col").value is None
    assert at.selectbox(key="batch.text_col").options == ["body", "verdict"]
    assert any("odd.csv has no column named text" in w.value for w in at.warning)
    at.button(key="batch.submit").click().run()
    assert "Choose the text column." in errors(at)
    assert store.list_batches() == []


def test_a_row_with_an_empty_text_cell_names_its_line(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    at = upload(open_page(page_test), "gap.csv", b"text,label\nfirst,yes\n,no\nthird,no\n")
    at.button(key="batch.submit").click().run()
    assert "gap.csv: line 3: the 'text' cell is empty" in errors(at)
    assert store.list_batches() == []


def test_a_jsonl_column_that_is_not_in_every_row(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    data = b'{"text": "one", "gold": "yes"}\n{"text": "two"}\n{"prompt": "three"}\n'
    at = upload(open_page(page_test), "rows.jsonl", data)
    assert at.selectbox(key="batch.text_col").options == ["text", "gold", "prompt"]
    at.button(key="batch.submit").click().run()
    assert "rows.jsonl: line 3: the 'text' cell is empty" in errors(at)
    assert store.list_batches() == []


def test_a_gold_the_labels_cannot_read_is_refused_with_its_row(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    data = b"id,text,label\na1,first,yes\na2,second,no idea\n"
    at = upload(open_page(page_test), "gold.csv", data)
    fast_panel(at)
    at.button(key="batch.submit").click().run()
    assert any(e.startswith("row 2 (a2): gold 'no idea'") for e in errors(at)), errors(at)
    assert store.list_batches() == []
    assert store.list_runs()[1] == 0


def test_no_model_and_no_labels_are_refused_by_their_widgets(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    at = upload(open_page(page_test), "good.csv", GOOD_CSV)
    at.multiselect(key="batch.models").set_value([])
    at.text_input(key="batch.labels").input(" , ")
    at.run()
    at.button(key="batch.submit").click().run()
    assert "Choose at least one model." in errors(at)
    assert any("Give the labels" in e for e in errors(at))
    assert store.list_batches() == []


def test_a_small_upload_runs_to_the_end_with_accuracy_and_downloads(
    page_test: Callable[[str], AppTest], store: Store, rerun_until: Rerun
) -> None:
    at = upload(open_page(page_test), "good.csv", GOOD_CSV)
    assert at.selectbox(key="batch.text_col").value == "text"  # guessed from the names
    assert at.selectbox(key="batch.gold_col").value == "label"
    assert at.selectbox(key="batch.id_col").value == "id"
    fast_panel(at)
    at.text_input(key="batch.name").input("three rows").run()
    at.button(key="batch.submit").click().run()
    assert not errors(at), errors(at)

    (info,) = store.list_batches()
    assert (info.name, info.total, info.source) == ("three rows", 3, "ui")
    assert info.columns == {"text": "text", "gold": "label", "id": "id"}

    at = rerun_until(at, lambda a: any(s.value.startswith("Done: 3 runs") for s in a.success))
    counts = batch_summary(store, info.batch_id)
    assert counts["done"] == 3 and counts["with_gold"] == 3
    accuracy = next(m.value for m in at.metric if m.label == "Accuracy vs gold")
    assert accuracy == f"{counts['accuracy']:.1%}"
    cost = next(m.value for m in at.metric if m.label == "Cost")
    assert cost == batch_cost_text(counts) and cost.endswith(" (simulated)")  # the sim's prices
    table = at.dataframe[0].value
    assert list(table["item"]) == ["a1", "a2", "a3"]
    assert table["input"][2] == '=HYPERLINK("http://127.0.0.1:9")'  # shown as text, as given
    assert set(table["correct"]) <= {"yes", "no"}
    assert set(table["degraded"]) <= {"", "2 of 3 counted", "1 of 3 counted", "0 of 3 counted"}
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Runs as CSV", "Runs as JSONL", "Calls as CSV"]

    # one run, looked into: its calls and raw replies, as plain text
    inspect = at.selectbox(key=f"batch.inspect.{info.batch_id}")
    run_id = f"{info.batch_id}-000002"
    inspect.select(run_id).run()
    assert not at.exception, [e.message for e in at.exception]
    stored = store.get_run(run_id)
    codes = [c.value for c in at.code]
    assert stored.input in codes  # the formula-looking input, inert
    assert all((c.raw or "(no reply)") in codes for c in stored.calls)


def test_a_bundled_set_as_a_ready_made_batch(
    page_test: Callable[[str], AppTest], store: Store, rerun_until: Rerun
) -> None:
    at = open_page(page_test)
    at.radio(key="batch.source").set_value("A bundled labelled set").run()
    at.selectbox(key="batch.set").select("regression").run()
    at.number_input(key="batch.first").set_value(4).run()
    fast_panel(at)
    at.button(key="batch.submit").click().run()
    assert not errors(at), errors(at)
    (info,) = store.list_batches()
    assert (info.name, info.total) == ("regression: first 4", 4)
    assert info.spec.task.format.labels == ("regression", "no regression")  # type: ignore[union-attr]
    at = rerun_until(at, lambda a: any(s.value.startswith("Done: 4 runs") for s in a.success))
    assert [i.item_id for i in store.batch_items(info.batch_id)] == [
        "reg-0001",
        "reg-0002",
        "reg-0003",
        "reg-0004",
    ]
    assert batch_summary(store, info.batch_id)["with_gold"] == 4


def test_a_batch_sends_low_confidence_decisions_through_its_chain_and_says_what_votes_are_worth(
    page_test: Callable[[str], AppTest], store: Store, rerun_until: Rerun
) -> None:
    at = upload(open_page(page_test), "good.csv", GOOD_CSV)
    fast_panel(at)
    at.multiselect(key="batch.tie_breaks").set_value(["abstain"]).run()
    at.number_input(key="batch.escalate_below").set_value(0.99).run()  # 3 votes never reach it
    at.button(key="batch.submit").click().run()
    assert not errors(at), errors(at)
    (info,) = store.list_batches()
    assert info.spec.policy.escalate_below == 0.99
    assert [str(b) for b in info.spec.policy.tie_breaks] == ["abstain"]
    at = rerun_until(at, lambda a: any(s.value.startswith("Done: 3 runs") for s in a.success))
    rows = store.batch_runs(info.batch_id)
    assert {r.status for r in rows} == {"failed"}
    assert any(r.branches == ["abstain"] for r in rows)  # a decided vote, sent on, abstained
    sentence = batch_summary(store, info.batch_id)["effective_voters"]["sentence"]
    assert sentence in [c.value.replace("\\", "") for c in at.caption]  # markdown escapes


def test_an_interrupted_batch_is_offered_for_resume_and_finishes(
    page_test: Callable[[str], AppTest], store: Store, rerun_until: Rerun
) -> None:
    task = build_task(labels=["yes", "no"])
    batch_id = store.create_batch(
        name="cut off",
        source="cli",
        spec=RunSpec(task=task, panel=Panel.build(["sim:sim-fast"], 3), policy=build_policy()),
        concurrency=4,
        items=[(0, "1", "first input", "yes"), (1, "2", "second input", "no")],
    )
    store.set_batch_status(batch_id, "interrupted")
    at = open_page(page_test)
    assert at.selectbox(key="batch.view").value == batch_id
    assert any("stopped after 0 of 2 runs (interrupted)" in w.value for w in at.warning)
    at.button(key=f"batch.resume.{batch_id}").click().run()
    at = rerun_until(at, lambda a: any(s.value.startswith("Done: 2 runs") for s in a.success))
    assert store.get_batch(batch_id).status == "done"
    assert store.batch_counts(batch_id)["done"] == 2


def orphan(store: Store, age_s: float) -> str:
    """A batch marked running by a process that is not this dashboard, ``age_s`` old."""
    batch_id = store.create_batch(
        name="orphan",
        source="cli",
        spec=RunSpec(
            task=build_task(labels=["yes", "no"]),
            panel=Panel.build(["sim:sim-fast"], 1),
            policy=build_policy(),
        ),
        concurrency=4,
        items=[(0, "1", "only input", None)],
    )
    with store.engine.begin() as conn:
        conn.execute(
            update(batch_t).where(batch_t.c.id == batch_id).values(created_at=time.time() - age_s)
        )
    return batch_id


def test_a_batch_left_running_by_a_dead_process_can_be_resumed(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    batch_id = orphan(store, age_s=3600)
    at = open_page(page_test)
    assert at.selectbox(key="batch.view").value == batch_id
    assert any(
        "stopped after 0 of 1 runs (the process running it stopped)" in w.value for w in at.warning
    )
    assert [b.label for b in at.button if "Resume" in b.label] == ["Resume batch"]


def test_a_batch_busy_in_another_process_is_not_offered_for_resume(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    orphan(store, age_s=5)
    at = open_page(page_test)
    assert any("another process (a CLI batch?)" in i.value for i in at.info)
    assert not [b for b in at.button if "Resume" in b.label]


@pytest.mark.parametrize("n", [0, 65])
def test_n_out_of_range_is_refused_by_its_widget(
    page_test: Callable[[str], AppTest], store: Store, n: int
) -> None:
    at = upload(open_page(page_test), "good.csv", GOOD_CSV)
    at.number_input(key="batch.n").set_value(n).run()
    at.button(key="batch.submit").click().run()
    assert errors(at) == ["N must be between 1 and 64; the handbook's default is 5."]
    assert store.list_batches() == []


def test_a_model_whose_key_is_missing_is_refused_before_anything_is_stored(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    at = upload(open_page(page_test), "good.csv", GOOD_CSV)
    at.text_input(key="batch.other_models").input("openai:gpt-4.1-mini").run()
    at.button(key="batch.submit").click().run()
    assert any(e.startswith("OPENAI_API_KEY is not set") for e in errors(at)), errors(at)
    assert store.list_batches() == []


def test_a_running_batch_can_be_cancelled_and_is_then_offered_for_resume(
    page_test: Callable[[str], AppTest],
    store: Store,
    rerun_until: Rerun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "1")  # slow enough to be caught running
    at = open_page(page_test)
    at.radio(key="batch.source").set_value("A bundled labelled set").run()
    at.number_input(key="batch.first").set_value(30).run()
    at.button(key="batch.submit").click().run()
    assert not errors(at), errors(at)
    (info,) = store.list_batches()
    cancel = f"batch.cancel.{info.batch_id}"
    assert [b.label for b in at.button if b.key == cancel] == ["Cancel batch"]
    assert at.get("progress")  # the live progress bar
    at.button(key=cancel).click().run()
    at = rerun_until(at, lambda a: any(b.label == "Resume batch" for b in a.button))
    assert store.get_batch(info.batch_id).status == "interrupted"
    assert store.batch_counts(info.batch_id)["done"] < 30
    assert any("(interrupted)" in w.value for w in at.warning)


def test_an_upload_asked_in_a_bundled_sets_format_with_a_tie_break_chain(
    page_test: Callable[[str], AppTest], store: Store, rerun_until: Rerun
) -> None:
    data = b"text\nI was charged twice this month\nThe app crashes on start\n"
    at = upload(open_page(page_test), "tickets.csv", data)
    at.selectbox(key="batch.format").select("set:tickets").run()
    at.text_area(key="batch.template").input("Which queue?\n\n{input}").run()
    fast_panel(at)
    at.multiselect(key="batch.tie_breaks").set_value(["expand", "escalate", "human"]).run()
    assert at.selectbox(key="batch.escalate_model").value == "sim:sim-oracle"
    at.number_input(key="batch.expand_k").set_value(3).run()
    at.button(key="batch.submit").click().run()
    assert not errors(at), errors(at)
    (info,) = store.list_batches()
    assert info.spec.task.name == "tickets"
    assert info.spec.task.template == "Which queue?\n\n{input}"
    assert info.spec.task.format == parse_format(datasets.load_set("tickets").format)
    assert [str(t) for t in info.spec.policy.tie_breaks] == [
        "expand:3",
        "escalate:sim:sim-oracle",
        "human",
    ]
    rerun_until(at, lambda a: any(s.value.startswith("Done: 2 runs") for s in a.success))
