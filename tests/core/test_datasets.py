"""The bundled labelled sets: sizes, mixes, validity, lookup, and formats other modules parse."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from core import datasets
from core.datasets import (
    DATA_DIR,
    DIFFICULTIES,
    EXTRACTION_SCHEMA,
    HARDNESS,
    TICKET_LABELS,
    Item,
    LabelledSet,
    find_item,
    labels_of,
    list_sets,
    load_set,
)
from core.errors import InputError, TallyError
from core.formats import JsonFormat, LabelFormat, fold, parse_format

MIX = {"easy": 0.45, "medium": 0.30, "hard": 0.17, "ambiguous": 0.08}
MIX_TOLERANCE = 0.04
MINIMUM = {"regression": 320, "tickets": 320, "extraction": 60}
LABEL_SETS = ("regression", "tickets")


@pytest.fixture(params=list_sets())
def labelled_set(request: pytest.FixtureRequest) -> LabelledSet:
    return load_set(request.param)


def test_the_three_sets_are_listed() -> None:
    assert list_sets() == ["regression", "tickets", "extraction"]


def test_each_set_has_at_least_its_minimum_of_items(labelled_set: LabelledSet) -> None:
    assert len(labelled_set.items) >= MINIMUM[labelled_set.name]


def test_ids_and_texts_are_unique(labelled_set: LabelledSet) -> None:
    ids = [item.id for item in labelled_set.items]
    texts = [fold(item.text) for item in labelled_set.items]
    assert len(set(ids)) == len(ids)
    assert len(set(texts)) == len(texts), "two items read the same once case and spaces fold"


def test_ids_are_numbered_in_file_order(labelled_set: LabelledSet) -> None:
    prefix = {"regression": "reg", "tickets": "tkt", "extraction": "ext"}[labelled_set.name]
    width = 3 if labelled_set.name == "extraction" else 4
    expected = [f"{prefix}-{i:0{width}d}" for i in range(1, len(labelled_set.items) + 1)]
    assert [item.id for item in labelled_set.items] == expected


def test_no_text_belongs_to_two_sets() -> None:
    owners: dict[str, str] = {}
    for name in list_sets():
        for item in load_set(name).items:
            assert item.text not in owners, f"{item.id} repeats an item of {owners[item.text]}"
            owners[item.text] = name


def test_every_item_has_text_a_note_and_a_known_difficulty(labelled_set: LabelledSet) -> None:
    for item in labelled_set.items:
        assert item.text == item.text.strip() and item.text
        assert item.note, f"{item.id} has no note"
        assert item.difficulty in HARDNESS


@pytest.mark.parametrize("name", LABEL_SETS)
def test_gold_labels_are_labels_of_the_set(name: str) -> None:
    labelled_set = load_set(name)
    used = {item.gold for item in labelled_set.items}
    assert used == set(labels_of(name)), "every label is used and nothing else is"


def test_regression_is_about_forty_percent_of_the_regression_set() -> None:
    items = load_set("regression").items
    share = sum(item.gold == "regression" for item in items) / len(items)
    assert 0.36 <= share <= 0.44


def test_every_ticket_label_is_well_represented() -> None:
    counts = Counter(item.gold for item in load_set("tickets").items)
    assert set(counts) == set(TICKET_LABELS)
    assert min(counts.values()) >= 40


def test_difficulty_mix_is_close_to_target(labelled_set: LabelledSet) -> None:
    counts = Counter(item.difficulty for item in labelled_set.items)
    total = len(labelled_set.items)
    for tag, target in MIX.items():
        share = counts[tag] / total
        assert abs(share - target) <= MIX_TOLERANCE, f"{tag}: {share:.1%} vs {target:.0%}"


def test_ambiguous_items_say_what_makes_them_ambiguous() -> None:
    # A bare "ambiguous" note would not tell a reviewer why the gold is only a best call.
    for name in list_sets():
        for item in load_set(name).items:
            if item.difficulty == "ambiguous":
                assert len(item.note.split()) >= 4, item.id


def test_hardness_follows_the_tag_and_rises_with_it() -> None:
    assert DIFFICULTIES == ("easy", "medium", "hard", "ambiguous")
    values = [Item("x-1", "t", "g", tag).hardness for tag in DIFFICULTIES]
    assert values == [0.1, 0.35, 0.65, 0.85]
    assert all(0.0 <= v <= 1.0 for v in values)


def test_extraction_gold_validates_against_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(EXTRACTION_SCHEMA)
    for item in load_set("extraction").items:
        value = json.loads(item.gold)
        assert not list(validator.iter_errors(value)), item.id
        assert value["quantity"] >= 1, item.id
        assert value["product"] == value["product"].strip() and value["product"], item.id
        assert item.gold == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_extraction_set_has_both_urgent_and_routine_orders() -> None:
    urgent = [json.loads(item.gold)["urgent"] for item in load_set("extraction").items]
    assert 0.25 <= sum(urgent) / len(urgent) <= 0.75


def test_the_schema_rejects_a_wrong_shape() -> None:
    validator = jsonschema.Draft202012Validator(EXTRACTION_SCHEMA)
    assert list(validator.iter_errors({"product": "pen", "quantity": "2", "urgent": False}))
    assert list(validator.iter_errors({"product": "pen", "quantity": 2}))
    assert list(validator.iter_errors({"product": "pen", "quantity": 2, "urgent": 1, "x": 0}))


def test_find_item_round_trips_every_item() -> None:
    for name in list_sets():
        labelled_set = load_set(name)
        for item in labelled_set.items:
            found = find_item(f"  {item.text}\n")
            assert found is not None, item.id
            assert found[0] is labelled_set and found[1] is item


def test_find_item_is_exact_after_stripping() -> None:
    item = load_set("tickets").items[0]
    assert find_item(item.text[:-1]) is None
    assert find_item(item.text + " extra") is None
    assert find_item("") is None
    assert find_item("   ") is None


def test_unknown_set_is_an_input_error_naming_the_known_ones() -> None:
    with pytest.raises(InputError, match="unknown labelled set 'nope'") as err:
        load_set("nope")
    assert "regression, tickets, extraction" in str(err.value)
    with pytest.raises(InputError):
        labels_of("Regression")


def test_loading_is_cached() -> None:
    assert load_set("regression") is load_set("regression")


def test_labels_of_is_in_conservative_order() -> None:
    assert labels_of("regression") == ["regression", "no regression"]
    assert labels_of("tickets") == [
        "outage",
        "bug",
        "account",
        "billing",
        "feature request",
        "other",
    ]
    assert labels_of("extraction") == []


@pytest.mark.parametrize("name", LABEL_SETS)
def test_label_formats_are_well_formed(name: str) -> None:
    answer_format = load_set(name).format
    labels = answer_format["labels"]
    assert answer_format["kind"] == "label"
    assert len(set(labels)) == len(labels) >= 2
    order = answer_format["conservative_order"]
    assert sorted(order) == sorted(labels), "the conservative order ranks every label once"
    for synonym, target in answer_format["synonyms"].items():
        assert target in labels, f"{synonym!r} points at {target!r}"
        assert fold(synonym) not in {fold(label) for label in labels}
    folded = [fold(s) for s in answer_format["synonyms"]]
    assert len(set(folded)) == len(folded), "two synonyms fold alike"


def test_the_ticket_synonyms_the_readme_promises_are_folded() -> None:
    promised = {
        "billing": ["payment", "invoice", "charge", "refund"],
        "bug": ["defect", "error", "broken"],
        "account": ["login", "access", "password"],
        "feature request": ["feature", "enhancement", "suggestion"],
        "outage": ["down", "incident", "service down", "unavailable"],
        "other": ["misc", "general", "question"],
    }
    synonyms = load_set("tickets").synonyms
    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")
    for label, words in promised.items():
        for word in words:
            assert synonyms[word] == label
            assert f"`{word}`" in readme, f"README does not list {word!r}"


@pytest.mark.parametrize("name", list_sets())
def test_formats_parse_with_core_formats(name: str) -> None:
    labelled_set = load_set(name)
    parsed = parse_format(labelled_set.format)
    if name == "extraction":
        assert isinstance(parsed, JsonFormat)
        for item in labelled_set.items[:10]:
            reading = parsed.parse(item.gold)
            assert reading.ok and json.loads(reading.value or "") == json.loads(item.gold)
        return
    assert isinstance(parsed, LabelFormat)
    assert list(parsed.conservative_order) == labelled_set.labels
    for synonym, label in labelled_set.synonyms.items():
        assert parsed.parse(synonym).value == label
        assert parsed.parse(synonym.upper() + ".").value == label


def test_templates_hold_one_input_placeholder(labelled_set: LabelledSet) -> None:
    assert labelled_set.template.count("{input}") == 1
    assert labelled_set.title


def test_csv_files_are_plain_utf8_with_the_documented_columns() -> None:
    for name in list_sets():
        raw = (DATA_DIR / f"{name}.csv").read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf"), "no byte-order mark"
        rows = list(csv.reader(raw.decode("utf-8").splitlines()))
        assert rows[0] == ["id", "text", "label", "difficulty", "note"]
        assert all(len(row) == 5 for row in rows)


def test_a_corrupt_file_is_reported_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (DATA_DIR / "regression.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    rows[3][2] = "maybe"
    with (tmp_path / "regression.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path)
    datasets._load.cache_clear()
    try:
        with pytest.raises(TallyError, match=r"regression\.csv line 4: label 'maybe'"):
            load_set("regression")
    finally:
        monkeypatch.undo()
        datasets._load.cache_clear()
        datasets._index.cache_clear()
