"""``simulate``: deterministic by seed, correlated as documented, and readable by the formats."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

import core.sim.items as sim_items
from core.datasets import EXTRACTION_SCHEMA, load_set
from core.formats import JsonFormat, LabelFormat, NumberFormat, YesNoFormat, parse_format
from core.sim.answers import simulate
from core.sim.models import SIM_MODELS, SimModel

LABELS = ["outage", "bug", "billing", "other"]


@dataclass(frozen=True)
class FakeItem:
    id: str
    text: str
    gold: str
    hardness: float


@dataclass(frozen=True, eq=False)
class FakeSet:
    items: tuple[FakeItem, ...]


@pytest.fixture
def fake_items(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, FakeItem]]:
    """Bundled items the test defines: ``fake_items[text] = FakeItem(...)``."""
    table: dict[str, FakeItem] = {}
    current: list[FakeSet] = [FakeSet(())]

    def find(text: str) -> tuple[FakeSet, FakeItem] | None:
        item = table.get(text)
        if item is None:
            return None
        if len(current[0].items) != len(table):  # one set object per state, as real sets are
            current[0] = FakeSet(tuple(table.values()))
        return current[0], item

    sim_items._truth.cache_clear()
    monkeypatch.setattr(sim_items, "find_bundled", find)
    yield table
    sim_items._truth.cache_clear()


def clean(model: SimModel) -> SimModel:
    """The model without failures or sloppiness, so only right and wrong remain."""
    return replace(model, error_rate=0.0, malformed=0.0, sloppy=0.0)


def fill(table: dict[str, FakeItem], count: int, hardness: float, gold: str = "bug") -> list[str]:
    texts = [f"item {len(table) + i} at {hardness}" for i in range(count)]
    for text in texts:
        table[text] = FakeItem(text, text, gold, hardness)
    return texts


def test_same_arguments_same_reply() -> None:
    model = SIM_MODELS["sim-flaky"]
    for i in range(50):
        a = simulate(model, f"text {i}", LABELS, {}, 2, seed=7)
        b = simulate(model, f"text {i}", LABELS, {}, 2, seed=7)
        assert a == b


def test_seed_and_sample_change_the_replies() -> None:
    model = SIM_MODELS["sim-fast"]
    base = [simulate(model, f"text {i}", LABELS, {}, 0, seed=1) for i in range(100)]
    other_seed = [simulate(model, f"text {i}", LABELS, {}, 0, seed=2) for i in range(100)]
    other_sample = [simulate(model, f"text {i}", LABELS, {}, 1, seed=1) for i in range(100)]
    assert [r.text for r in base] != [r.text for r in other_seed]
    assert [r.text for r in base] != [r.text for r in other_sample]
    # The truth of an input is not a property of the run: same gold whatever the seed.
    assert [r.gold for r in base] == [r.gold for r in other_seed]


def test_hashed_inputs_have_gold_among_the_labels_and_spread_over_them() -> None:
    golds = Counter(
        simulate(SIM_MODELS["sim-mid"], f"free text {i}", LABELS, {}, 0, seed=0).gold
        for i in range(400)
    )
    assert set(golds) == set(LABELS)
    assert min(golds.values()) > 60


def test_per_call_accuracy_is_the_stated_accuracy(fake_items: dict[str, FakeItem]) -> None:
    texts = fill(fake_items, 3000, hardness=0.5)
    for name in ("sim-strong", "sim-fast"):
        model = clean(SIM_MODELS[name])
        right = sum(bool(simulate(model, t, LABELS, {}, 0, seed=5).correct) for t in texts)
        assert right / len(texts) == pytest.approx(model.accuracy, abs=0.02)


def test_harder_items_are_missed_more(fake_items: dict[str, FakeItem]) -> None:
    model = clean(SIM_MODELS["sim-mid"])
    rates = []
    for hardness in (0.1, 0.5, 0.9):
        texts = fill(fake_items, 800, hardness)
        rates.append(sum(not simulate(model, t, LABELS, {}, 0, seed=0).correct for t in texts))
    assert rates[0] < rates[1] < rates[2]


def both_wrong_excess(pairs: list[tuple[bool, bool]]) -> float:
    """P(both wrong) - P(first wrong) * P(second wrong): zero for independent errors."""
    n = len(pairs)
    a = sum(not x for x, _ in pairs) / n
    b = sum(not y for _, y in pairs) / n
    both = sum(not x and not y for x, y in pairs) / n
    return both - a * b


def test_errors_are_correlated_across_models_and_more_within_one(
    fake_items: dict[str, FakeItem],
) -> None:
    texts = fill(fake_items, 4000, hardness=0.7)
    mid = clean(SIM_MODELS["sim-mid"])
    twin = replace(mid, name="sim-mid-twin")

    def pairs(
        first: SimModel, second: SimModel, samples: tuple[int, int], independent: bool
    ) -> list[tuple[bool, bool]]:
        out = []
        for t in texts:
            x = simulate(first, t, LABELS, {}, samples[0], 0, independent).correct
            y = simulate(second, t, LABELS, {}, samples[1], 0, independent).correct
            out.append((bool(x), bool(y)))
        return out

    across = both_wrong_excess(pairs(mid, twin, (0, 0), False))
    within = both_wrong_excess(pairs(mid, mid, (0, 1), False))
    independent = both_wrong_excess(pairs(mid, twin, (0, 0), True))
    assert across > 0.03
    assert within > across + 0.02
    assert abs(independent) < 0.015


def test_wrong_votes_pile_up_on_the_items_distractor(fake_items: dict[str, FakeItem]) -> None:
    texts = fill(fake_items, 1500, hardness=0.9)
    panel = [clean(SIM_MODELS[n]) for n in ("sim-strong", "sim-mid", "sim-fast", "sim-flaky")]

    def agreement(independent: bool) -> float:
        same = total = 0
        for t in texts:
            wrong = [
                r.answer
                for m in panel
                if not (r := simulate(m, t, LABELS, {}, 0, 0, independent)).correct
            ]
            for i in range(len(wrong)):
                for j in range(i + 1, len(wrong)):
                    total += 1
                    same += wrong[i] == wrong[j]
        return same / total

    # Three wrong labels: independent wrong answers agree a third of the time.
    assert agreement(True) == pytest.approx(1 / 3, abs=0.05)
    assert agreement(False) > 0.5


def test_independent_mode_keeps_the_per_call_accuracy(fake_items: dict[str, FakeItem]) -> None:
    texts = []
    for hardness in (0.1, 0.35, 0.65, 0.85):
        texts += fill(fake_items, 700, hardness)
    model = clean(SIM_MODELS["sim-fast"])
    correlated = sum(bool(simulate(model, t, LABELS, {}, 0, 4).correct) for t in texts)
    independent = sum(bool(simulate(model, t, LABELS, {}, 0, 4, True).correct) for t in texts)
    assert independent / len(texts) == pytest.approx(correlated / len(texts), abs=0.025)


def test_the_biased_model_leans_to_its_label(fake_items: dict[str, FakeItem]) -> None:
    labels = ["regression", "no regression"]
    leaning = fill(fake_items, 1500, 0.6, gold="regression")
    against = fill(fake_items, 1500, 0.6, gold="no regression")
    biased = clean(SIM_MODELS["sim-biased"])
    plain = replace(biased, prefers=None, bias=0.0)

    def accuracy(model: SimModel, texts: list[str]) -> float:
        return sum(bool(simulate(model, t, labels, {}, 0, 0).correct) for t in texts) / len(texts)

    assert accuracy(biased, leaning) > accuracy(plain, leaning) + 0.05
    assert accuracy(biased, against) < accuracy(plain, against) - 0.05
    wrong = {simulate(biased, t, labels, {}, 0, 0).answer for t in against} - {"no regression"}
    assert wrong == {"regression"}
    # Without its label among the allowed ones the lean does nothing.
    assert [simulate(biased, t, LABELS, {}, 0, 0) for t in leaning[:50]] == [
        simulate(plain, t, LABELS, {}, 0, 0) for t in leaning[:50]
    ]


def test_failures_and_malformed_replies_come_at_their_rates() -> None:
    model = SIM_MODELS["sim-flaky"]
    replies = [simulate(model, f"text {i}", LABELS, {}, 0, seed=9) for i in range(4000)]
    errors = [r for r in replies if r.error is not None]
    assert {r.error for r in errors} == {500, 503}
    assert len(errors) / len(replies) == pytest.approx(model.error_rate, abs=0.015)
    assert all(r.answer is None and r.correct is None and r.tokens_out == 0 for r in errors)
    malformed = [r for r in replies if r.malformed]
    share = len(malformed) / (len(replies) - len(errors))
    assert share == pytest.approx(model.malformed, abs=0.015)
    assert all(r.answer is None for r in malformed)


@pytest.mark.parametrize("set_name", ["regression", "tickets"])
def test_every_reply_reads_back_as_the_answer_meant(set_name: str) -> None:
    labelled = load_set(set_name)
    fmt = parse_format(labelled.format)
    seen_sloppy = seen_malformed = 0
    for model in SIM_MODELS.values():
        for item in labelled.items[:120]:
            for structured in (False, True):
                reply = simulate(
                    model, item.text, labelled.labels, {"structured": structured}, 0, seed=2
                )
                assert reply.gold == item.gold
                if reply.error is not None:
                    continue
                parsed = fmt.parse(reply.text)
                if reply.malformed:
                    seen_malformed += 1
                    assert not parsed.ok, reply.text
                else:
                    seen_sloppy += reply.sloppy
                    assert parsed.ok and parsed.value == reply.answer, reply.text
                if structured and not reply.malformed:
                    assert json.loads(reply.text) == {"answer": reply.answer}
    assert seen_sloppy > 50 and seen_malformed > 5


def test_yes_no_and_number_replies_read_back() -> None:
    yesno, number = YesNoFormat(), NumberFormat()
    for i in range(400):
        for model in (SIM_MODELS["sim-flaky"], SIM_MODELS["sim-fast"]):
            r = simulate(model, f"q {i}", ["yes", "no"], {"kind": "yesno"}, 0, 1)
            if r.error is None and not r.malformed:
                assert yesno.parse(r.text).value == r.answer, r.text
            n = simulate(model, f"q {i}", None, {"kind": "number"}, 0, 1)
            if n.error is None and not n.malformed:
                assert number.parse(n.text).value == n.answer, n.text
                assert n.gold is not None and float(n.gold) == int(float(n.gold))


def test_json_answers_follow_the_schema_and_wrong_ones_differ_in_a_field() -> None:
    labelled = load_set("extraction")
    fmt = JsonFormat(schema=EXTRACTION_SCHEMA)
    hint = {"kind": "json", "schema": EXTRACTION_SCHEMA}
    wrong = 0
    for item in labelled.items:
        for structured in (False, True):
            r = simulate(
                SIM_MODELS["sim-fast"], item.text, None, {**hint, "structured": structured}, 0, 3
            )
            assert r.gold is not None and json.loads(r.gold) == json.loads(item.gold)
            if r.error is not None or r.malformed:
                continue
            parsed = fmt.parse(r.text)
            assert parsed.ok and parsed.value == r.answer, r.text
            assert r.answer is not None
            if not r.correct:
                wrong += 1
                got, gold = json.loads(r.answer), json.loads(r.gold)
                assert sum(got[k] != gold[k] for k in gold) == 1
    assert wrong > 0
    # An input that is no extraction item still gets an object of the schema's shape.
    r = simulate(SIM_MODELS["sim-strong"], "ten red pens, please", None, hint, 0, 0)
    assert set(json.loads(r.gold or "{}")) == {"product", "quantity", "urgent"}


def test_free_text_has_no_gold_and_does_not_converge() -> None:
    replies = [
        simulate(SIM_MODELS["sim-mid"], "Summarise the release notes.", None, {}, k, 0)
        for k in range(10)
    ]
    ok = [r for r in replies if r.error is None and not r.malformed]
    assert all(r.gold is None and r.correct is None for r in replies)
    assert len({r.text for r in ok}) >= 4


def test_label_format_parses_with_the_sets_synonyms_only_when_asked() -> None:
    # Synonyms are words of a set's format: a reply using one reads back under that format.
    labelled = load_set("regression")
    with_synonyms = LabelFormat(labels=tuple(labelled.labels), synonyms=labelled.synonyms)
    used = 0
    for item in labelled.items:
        r = simulate(SIM_MODELS["sim-flaky"], item.text, labelled.labels, {}, 0, 11)
        if r.sloppy and r.text.strip() in labelled.synonyms:
            used += 1
            assert with_synonyms.parse(r.text).value == r.answer
    assert used > 0
