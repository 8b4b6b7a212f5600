"""What the simulation holds to be true about an input: its gold answer and its difficulty.

A bundled item (found with ``core.datasets.find_item``) brings its own gold label and hardness,
so runs on the bundled sets can be scored. Any other input gets both from a stable hash of its
text: the same text always has the same gold and difficulty, whatever the seed, because they
are properties of the input, not of a run.

``core.datasets`` is imported lazily: the simulation works (on hashed inputs) without it.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from core.sim.hashing import unit


@dataclass(frozen=True)
class Truth:
    """The truth about one input under one answer format.

    ``gold`` is the canonical correct answer: a label, a number written with ``repr``-free
    formatting, or compact sorted JSON; ``None`` for free text, which has no right answer.
    ``pool`` holds the difficulties of the input's labelled set (empty for hashed inputs): the
    independent mode draws each call's difficulty from it.
    """

    key: str
    gold: str | None
    difficulty: float
    bundled: bool
    pool: tuple[float, ...] = ()
    gold_object: dict[str, Any] | None = field(default=None, compare=False)
    synonyms: tuple[tuple[str, tuple[str, ...]], ...] = ()


def hashed_difficulty(text: str) -> float:
    """Difficulty of an input that is not bundled: ``u**2`` for a hashed uniform ``u``, so most
    arbitrary inputs are easy and a few are hard, as on the bundled sets."""
    return unit("difficulty", text) ** 2


def _datasets() -> Any | None:
    try:
        return importlib.import_module("core.datasets")
    except ImportError:
        return None


@lru_cache(maxsize=8192)
def find_bundled(text: str) -> tuple[Any, Any] | None:
    """``core.datasets.find_item(text)``, cached, or ``None`` when the module is absent."""
    module = _datasets()
    if module is None or not text.strip():
        return None
    found: tuple[Any, Any] | None = module.find_item(text)
    return found


_POOLS: dict[int, tuple[Any, tuple[float, ...]]] = {}
_POOL_SETS = 32
"""Sets whose pools are kept: the bundled sets are a handful of long-lived objects."""


def _pool(labelled_set: Any) -> tuple[float, ...]:
    """The hardness of every item of a set, cached by identity (sets need not be hashable)."""
    cached = _POOLS.get(id(labelled_set))
    if cached is not None and cached[0] is labelled_set:
        return cached[1]
    items = getattr(labelled_set, "items", None) or ()
    pool = tuple(float(item.hardness) for item in items)
    _POOLS[id(labelled_set)] = (labelled_set, pool)
    while len(_POOLS) > _POOL_SETS:
        _POOLS.pop(next(iter(_POOLS)))
    return pool


def _set_synonyms(labelled_set: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    raw = getattr(labelled_set, "synonyms", None)
    if not isinstance(raw, dict):
        return ()
    # Either ``{synonym: label}`` (as ``core.formats`` takes them) or ``{label: [synonyms]}``.
    by_label: dict[str, list[str]] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            by_label.setdefault(value, []).append(str(key))
        elif isinstance(value, list | tuple):
            by_label.setdefault(str(key), []).extend(str(v) for v in value)
    return tuple((label, tuple(words)) for label, words in by_label.items())


def _match_label(gold: str, labels: list[str]) -> str | None:
    folded = gold.strip().casefold()
    for label in labels:
        if label.strip().casefold() == folded:
            return label
    return None


def format_number(value: float) -> str:
    """Numbers as a person writes them and as ``core.formats`` canonicalises them: ``42`` not
    ``42.0``, never an exponent."""
    if not math.isfinite(value):
        return str(value)
    number = Decimal(repr(value))
    return "0" if number.is_zero() else format(number.normalize(), "f")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _object_from_schema(schema: dict[str, Any], text: str, path: str = "") -> Any:
    """A plausible value for ``schema``, chosen by hashing ``text``: the gold of a JSON answer
    for an input that is not a bundled extraction item."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    u = unit("schema", text, path)
    if schema.get("enum"):
        options = list(schema["enum"])
        return options[int(u * len(options))]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {
            name: _object_from_schema(sub if isinstance(sub, dict) else {}, text, f"{path}.{name}")
            for name, sub in props.items()
        }
    if kind == "integer":
        return int(u * 100)
    if kind == "number":
        return round(u * 100, 1)
    if kind == "boolean":
        return u < 0.5
    if kind == "array":
        items = schema.get("items")
        sub = items if isinstance(items, dict) else {}
        return [_object_from_schema(sub, text, f"{path}[{i}]") for i in range(1 + int(u * 3))]
    if kind == "null":
        return None
    words = ("alpha", "bravo", "delta", "harbour", "meridian", "orchid", "quartz", "willow")
    return f"{words[int(u * len(words))]}-{int(unit('schema-n', text, path) * 900) + 100}"


@lru_cache(maxsize=16384)
def _truth(text: str, labels: tuple[str, ...] | None, kind: str, schema_json: str | None) -> Truth:
    found = find_bundled(text)
    item: Any = None
    labelled_set: Any = None
    if found is not None:
        labelled_set, item = found
    difficulty = float(item.hardness) if item is not None else hashed_difficulty(text)
    pool = _pool(labelled_set) if labelled_set is not None else ()
    synonyms = _set_synonyms(labelled_set) if labelled_set is not None else ()
    bundled_gold = str(item.gold) if item is not None else None

    gold: str | None = None
    gold_object: dict[str, Any] | None = None
    from_item = False
    if kind in ("label", "yesno") and labels:
        matched = _match_label(bundled_gold, list(labels)) if bundled_gold is not None else None
        from_item = matched is not None
        gold = matched if matched is not None else labels[int(unit("gold", text) * len(labels))]
    elif kind == "number":
        value: float | None = None
        if bundled_gold is not None:
            try:
                value = float(bundled_gold)
            except ValueError:
                value = None
        from_item = value is not None
        gold = format_number(value if value is not None else float(int(unit("gold", text) * 100)))
    elif kind == "json":
        parsed: Any = None
        if bundled_gold is not None:
            try:
                parsed = json.loads(bundled_gold)
            except ValueError:
                parsed = None
        if isinstance(parsed, dict):
            from_item = True
            gold_object = parsed
        else:
            schema = json.loads(schema_json) if schema_json else {"type": "object"}
            made = _object_from_schema(schema, text)
            gold_object = made if isinstance(made, dict) else {"value": made}
        gold = canonical_json(gold_object)
    return Truth(
        key=text,
        gold=gold,
        difficulty=min(1.0, max(0.0, difficulty)),
        bundled=from_item,
        pool=pool,
        gold_object=gold_object,
        synonyms=synonyms if from_item else (),
    )


def truth_for(
    text: str, labels: list[str] | None, kind: str, schema: dict[str, Any] | None = None
) -> Truth:
    """The gold and difficulty of ``text`` under an answer format (cached)."""
    schema_json = canonical_json(schema) if schema is not None else None
    return _truth(text, tuple(labels) if labels else None, kind, schema_json)
