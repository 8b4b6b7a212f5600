"""The bundled labelled sets: the handbook's regression question, ticket triage, order extraction.

They are what curves, demos and tests score against, and they are what makes the simulated panel
behave like a real one: every item carries a difficulty tag, and ``Item.hardness`` turns it into
one number that all simulated models share, so hard items fool most of a panel at once.

The rows were written for this project (CC0-1.0) and live in ``data/*.csv`` next to the
package; they are read from disk, never downloaded. ``data/README.md`` describes the columns.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from core.errors import InputError, TallyError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

HARDNESS: dict[str, float] = {"easy": 0.1, "medium": 0.35, "hard": 0.65, "ambiguous": 0.85}
"""Difficulty tag -> the probability-like hardness the simulation reads (see ``core.sim``).

Evenly spaced would make ``ambiguous`` a coin flip for every model; 0.85 keeps it the hardest
tier while leaving strong models a little better than chance on it.
"""

DIFFICULTIES: tuple[str, ...] = tuple(HARDNESS)

COLUMNS: tuple[str, ...] = ("id", "text", "label", "difficulty", "note")

REGRESSION_FORMAT: dict[str, Any] = {
    "kind": "label",
    "labels": ["regression", "no regression"],
    "synonyms": {
        "regressed": "regression",
        "a regression": "regression",
        "contains a regression": "regression",
        "yes": "regression",
        "broken": "regression",
        "fail": "regression",
        "no": "no regression",
        "not a regression": "no regression",
        "no regressions": "no regression",
        "none": "no regression",
        "fine": "no regression",
        "ok": "no regression",
        "okay": "no regression",
        "pass": "no regression",
        "clean": "no regression",
    },
    # A missed regression ships a broken page; a false alarm costs a look. Most costly first.
    "conservative_order": ["regression", "no regression"],
}

TICKET_LABELS: tuple[str, ...] = (
    "outage",
    "bug",
    "account",
    "billing",
    "feature request",
    "other",
)
"""In conservative order: the label that costs most to miss first (an outage routed to the
feature backlog hurts far more than a question routed to the on-call engineer)."""

TICKETS_FORMAT: dict[str, Any] = {
    "kind": "label",
    "labels": list(TICKET_LABELS),
    "synonyms": {
        "down": "outage",
        "incident": "outage",
        "service down": "outage",
        "unavailable": "outage",
        "service outage": "outage",
        "defect": "bug",
        "error": "bug",
        "broken": "bug",
        "crash": "bug",
        "bug report": "bug",
        "login": "account",
        "access": "account",
        "password": "account",
        "sign in": "account",
        "account issue": "account",
        "payment": "billing",
        "invoice": "billing",
        "charge": "billing",
        "refund": "billing",
        "billing issue": "billing",
        "feature": "feature request",
        "enhancement": "feature request",
        "suggestion": "feature request",
        "feature idea": "feature request",
        "misc": "other",
        "general": "other",
        "question": "other",
        "general question": "other",
    },
    "conservative_order": list(TICKET_LABELS),
}

EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "product": {
            "type": "string",
            "description": (
                "the item, in the singular, with its descriptive words (size, colour, model) "
                "and without the count or any packaging word (box, bag, pack, roll, bottle)"
            ),
        },
        "quantity": {
            "type": "integer",
            "description": "how many units or packs are asked for, as a whole number",
        },
        "urgent": {
            "type": "boolean",
            "description": (
                "true only when the message asks for speed (urgent, ASAP, today, rush, express) "
                "or says work is blocked now"
            ),
        },
    },
    "required": ["product", "quantity", "urgent"],
    "additionalProperties": False,
}
"""Kept to the subset that providers' strict structured-output modes accept (no ``minimum``,
no ``minLength``), so the same schema serves the prompt, the request and the check."""

EXTRACTION_FORMAT: dict[str, Any] = {"kind": "json", "schema": EXTRACTION_SCHEMA}


@dataclass(frozen=True)
class Item:
    """One labelled input. ``gold`` is a label, or compact JSON for the extraction set."""

    id: str
    text: str
    gold: str
    difficulty: str
    note: str = ""

    @property
    def hardness(self) -> float:
        """The difficulty as a number in [0, 1], shared by every simulated model."""
        return HARDNESS[self.difficulty]


@dataclass(frozen=True)
class LabelledSet:
    """A bundled set: its task (template and answer format) and its items.

    Loaded once and shared: treat ``format`` as read-only and pass it to
    ``core.formats.parse_format`` to get the answer format object.
    """

    name: str
    title: str
    format: dict[str, Any]
    template: str
    items: tuple[Item, ...]

    @property
    def labels(self) -> list[str]:
        """The closed label set, empty for a JSON-answer set."""
        return list(self.format.get("labels", ()))

    @property
    def synonyms(self) -> dict[str, str]:
        """``{synonym: label}``, empty for a JSON-answer set."""
        return dict(self.format.get("synonyms", {}))


@dataclass(frozen=True)
class _Spec:
    title: str
    format: dict[str, Any]
    template: str
    id_pattern: str


_SPECS: dict[str, _Spec] = {
    "regression": _Spec(
        title="Does this page contain a regression?",
        format=REGRESSION_FORMAT,
        template=(
            "A web page was compared between two builds. Does this change contain a "
            "regression?\n\n{input}"
        ),
        id_pattern=r"reg-\d{4}",
    ),
    "tickets": _Spec(
        title="Support-ticket triage",
        format=TICKETS_FORMAT,
        template="Which queue should this support ticket go to?\n\n{input}",
        id_pattern=r"tkt-\d{4}",
    ),
    "extraction": _Spec(
        title="Order extraction",
        format=EXTRACTION_FORMAT,
        template="Extract the order from this message: product, quantity and urgency.\n\n{input}",
        id_pattern=r"ext-\d{3}",
    ),
}


def list_sets() -> list[str]:
    """The names of the bundled sets, in the order the UI lists them."""
    return list(_SPECS)


def load_set(name: str) -> LabelledSet:
    """A bundled set by name; ``InputError`` naming the known sets for any other name."""
    if name not in _SPECS:
        known = ", ".join(_SPECS)
        raise InputError(f"unknown labelled set {name!r}; known sets: {known}")
    return _load(name)


def labels_of(name: str) -> list[str]:
    """The labels of a set, most conservative first; empty for the JSON-answer set."""
    return load_set(name).labels


def find_item(text: str) -> tuple[LabelledSet, Item] | None:
    """The bundled item whose text equals ``text`` (both stripped), with its set, or ``None``.

    This is how the simulation knows the gold and hardness of a bundled input.
    """
    return _index().get(text.strip())


@cache
def _index() -> dict[str, tuple[LabelledSet, Item]]:
    index: dict[str, tuple[LabelledSet, Item]] = {}
    for name in _SPECS:
        labelled_set = _load(name)
        for item in labelled_set.items:
            key = item.text.strip()
            if key in index:
                other = index[key][1].id
                raise TallyError(f"bundled text of {item.id} repeats {other}")
            index[key] = (labelled_set, item)
    return index


@cache
def _load(name: str) -> LabelledSet:
    spec = _SPECS[name]
    path = DATA_DIR / f"{name}.csv"
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = tuple(reader.fieldnames or ())
            rows = list(reader)
    except OSError as err:
        raise TallyError(f"cannot read bundled set {path}: {err.strerror}") from None
    if header != COLUMNS:
        raise TallyError(f"{path.name}: columns are {header}, expected {COLUMNS}")
    check = _gold_check(spec.format)
    items: list[Item] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        item = Item(
            id=row["id"].strip(),
            text=row["text"].strip(),
            gold=row["label"].strip(),
            difficulty=row["difficulty"].strip(),
            note=(row["note"] or "").strip(),
        )
        problem = _row_problem(item, spec.id_pattern, seen, check)
        if problem:
            raise TallyError(f"{path.name} line {line}: {problem}")
        seen.add(item.id)
        items.append(item)
    return LabelledSet(
        name=name, title=spec.title, format=spec.format, template=spec.template, items=tuple(items)
    )


GoldCheck = Callable[[str], str | None]


def _gold_check(answer_format: dict[str, Any]) -> GoldCheck:
    """A function giving why a gold value is invalid for the format, or ``None``."""
    if answer_format["kind"] == "label":
        labels = list(answer_format["labels"])

        def check_label(gold: str) -> str | None:
            return None if gold in labels else f"label {gold!r} is not one of {labels}"

        return check_label
    import jsonschema  # only the JSON set needs it; keeps importing this module light

    validator = jsonschema.Draft202012Validator(answer_format["schema"])

    def check(gold: str) -> str | None:
        try:
            value = json.loads(gold)
        except ValueError:
            return f"gold {gold!r} is not JSON"
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        return None if error is None else f"gold {gold!r}: {error.message}"

    return check


def _row_problem(item: Item, id_pattern: str, seen: set[str], check: GoldCheck) -> str | None:
    if not re.fullmatch(id_pattern, item.id):
        return f"id {item.id!r} does not match {id_pattern}"
    if item.id in seen:
        return f"id {item.id} repeats"
    if not item.text:
        return f"{item.id} has no text"
    if item.difficulty not in HARDNESS:
        return f"{item.id}: difficulty {item.difficulty!r} is not one of {', '.join(HARDNESS)}"
    return check(item.gold)
