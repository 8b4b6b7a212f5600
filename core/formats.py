"""Answer formats: what a task asks for, how it is asked, and how a reply becomes a vote.

Votes are strings everywhere (dict keys, the store, JSON), so every format turns a reply into
one canonical string: the same answer written two ways must count as the same vote, and a
reply that cannot be read is an ``invalid`` vote with a reason, never a guess. Models answer
sloppily ("**Regression.**", ``{"answer": "yes"}``, a fenced block, "Final answer: 42"), so the
shared unwrapping below removes the wrapping first and each format then reads what is left.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Annotated, Any, ClassVar, Literal

import jsonschema
from jsonschema.exceptions import SchemaError, best_match
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError

from core.errors import InputError

MISSING = "<missing>"
"""The per-field vote of a JSON answer that lacks the field. Not valid JSON, so it can never
collide with a canonical field value; a field that most votes omit stays omitted."""

_SENTENCE_WORDS = 25
"""A label is read out of a sentence only when the reply is short: long replies reason about
several labels, and picking one of them would be a guess."""

_NEGATIONS = frozenset(
    (  # noqa: SIM905 - a word list reads better as words
        "not no never none neither nor without nothing cannot cant dont doesnt didnt isnt arent "
        "wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt"
    ).split()
)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A reply read by a format: ``value`` is the normalised vote, ``error`` why there is none."""

    ok: bool
    value: str | None = None
    error: str | None = None

    @classmethod
    def good(cls, value: str) -> Parsed:
        return cls(ok=True, value=value)

    @classmethod
    def bad(cls, error: str) -> Parsed:
        return cls(ok=False, error=error)


# -- shared reading of sloppy replies --------------------------------------------------------

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)```", re.DOTALL)
_ANSWER_MARK = re.compile(r"(?i)\b(?:final\s+)?(?:answer|label)\s*(?:is\s*)?[:=]\s*")
_QUOTES = "\"'`“”‘’«»"
_TRAILING = ".!;,:"
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}")


def _short(text: str, limit: int = 60) -> str:
    """A reply quoted in a reason: one line, bounded."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def clean(text: str) -> str:
    """Unicode compatibility folding: full-width letters, ligatures and no-break spaces become
    their plain forms (NFKC) and invisible format characters (zero-width spaces, joiners, soft
    hyphens, byte-order marks) are removed, so a reply reads as it looks."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _unfence(text: str) -> str:
    match = _FENCE.search(text)
    return match.group(1).strip() if match else text.strip()


def _unbox(text: str) -> str:
    """The last ``\\boxed{...}`` of a reply (math models box their final answer), with a
    ``\\text{...}`` inside it unwrapped; the text itself when nothing is boxed."""
    boxes = list(_BOXED.finditer(text))
    if not boxes:
        return text
    inner = boxes[-1].group(1)
    return _LATEX_TEXT.sub(r"\1", inner).strip()


def canonical_value(value: Any) -> Any:
    """A JSON value with every number in one form: an integral float is the integer it equals
    (``1.0`` is ``1``, ``-0.0`` is ``0``), at any depth. Booleans are not numbers and stay."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {key: canonical_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_value(item) for item in value]
    return value


def _scalar(value: object) -> str | None:
    """A JSON scalar as the text a model would have written for it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(canonical_value(value))
    if isinstance(value, str):
        return value
    return None


def _from_json(text: str) -> str | None:
    """The answer of a structured reply: ``{"answer": X}`` (or any one-key object), or a bare
    JSON string. ``None`` when the text is not such JSON."""
    if not text or text[0] not in '{"':
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        lowered = {str(k).lower(): v for k, v in data.items()}
        if "answer" in lowered:
            return _scalar(lowered["answer"])
        if len(data) == 1:
            return _scalar(next(iter(data.values())))
    return None


def _strip_wrapping(text: str) -> str:
    """Remove markdown emphasis, quotes and trailing punctuation until nothing changes."""
    previous = None
    while text != previous:
        previous = text
        text = text.strip()
        for mark in ("**", "__", "*", "_", "`"):
            if len(text) > 2 * len(mark) and text.startswith(mark) and text.endswith(mark):
                text = text[len(mark) : -len(mark)]
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1]
        text = text.rstrip(_TRAILING)
    return text


def unwrap(raw: str) -> str:
    """The answer inside a reply: code fences, structured ``{"answer": ...}`` objects,
    ``\\boxed{X}``, "Answer: X" (the last such line wins), emphasis, quotes and trailing
    periods removed; Unicode look-alike forms (full-width, no-break spaces, zero-width
    characters) folded first."""
    text = _unbox(_unfence(clean(raw)))
    structured = _from_json(text)
    if structured is not None:
        text = structured
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        rest = text[marks[-1].end() :].strip()
        text = rest.splitlines()[0] if rest else ""
    text = _strip_wrapping(text)
    structured = _from_json(text)
    if structured is not None:
        text = _strip_wrapping(structured)
    return text


_DASH = re.compile(r"\s-+\s|[–—―]")
"""A dash between clauses ("No - regression", "A — because"), unlike a hyphen inside words."""
_JOINERS = re.compile(r"[-_‐‑]+")
"""Hyphens and underscores join the words of one answer: "no-regression"."""
_TOKEN = re.compile(r"\w+(?:\.\w+)*|[.,;:?!()\[\]/—]")
"""A word (with any inner dots: "v1.2", "3.5"), or one clause mark standing as its own token."""
_CLAUSE = frozenset(".,;:?!()[]/—")

_LOOK_ALIKES = str.maketrans(
    # Cyrillic and Greek letters drawn like Latin ones (after casefolding).
    "аеорсухіјѕкмнвтαβεζηικμνορτυχ",
    "aeopcyxijskmhbtabezhikmnoptyx",
)
_LATIN = frozenset("abcdefghijklmnopqrstuvwxyz")


def _unspoof(token: str) -> str:
    """A word written with Cyrillic or Greek look-alikes of Latin letters, in Latin; a word
    with any letter that has no Latin look-alike (a real Russian or Greek word) stays."""
    mapped = token.translate(_LOOK_ALIKES)
    if mapped == token or not all(c in _LATIN or not c.isalpha() for c in mapped):
        return token
    return mapped


def fold(text: str) -> str:
    """What a reply says, with its spelling variants removed: case, Unicode look-alikes,
    apostrophes, quotes, markdown marks and joiners ("No-Regression!" is "no regression").

    Clause punctuation between words is kept as its own token, since it carries meaning:
    "No, regression." folds to "no , regression", never to the label "no regression".
    Punctuation at either end is dropped.
    """
    text = clean(text).casefold().replace("'", "").replace("’", "")
    tokens: list[str] = []
    for token in _TOKEN.findall(_JOINERS.sub(" ", _DASH.sub(" — ", text))):
        if token in _CLAUSE:
            if tokens and tokens[-1] not in _CLAUSE:
                tokens.append(token)
            continue
        tokens.append(_unspoof(token))
    while tokens and tokens[-1] in _CLAUSE:
        tokens.pop()
    return " ".join(tokens)


_UNSURE = tuple(
    tuple(phrase.split())
    for phrase in (
        "no idea",
        "no clue",
        "not sure",
        "unsure",
        "not certain",
        "uncertain",
        "unknown",
        "dont know",
        "do not know",
        "cannot tell",
        "cant tell",
        "cannot say",
        "cant say",
        "cannot answer",
        "cant answer",
        "cannot determine",
        "cant determine",
        "cannot be determined",
        "unable to",
        "hard to say",
        "impossible to say",
        "not enough information",
        "insufficient information",
        "cannot help",
        "cant help",
        "no comment",
        "n / a",
        "it depends",
    )
)
"""Replies that say the model does not know or will not answer. They are no answer at all:
"No idea" is not a *no*, and "Not sure, maybe B" is not a vote for B."""


def _unsure(folded: str, lookup: Mapping[str, str]) -> str | None:
    """Why a folded reply is a refusal or an "I don't know", or ``None``. A phrase that is
    itself a label or synonym of the task ("unknown" in a triage set) is an answer."""
    tokens = tuple(folded.split())
    for phrase in _UNSURE:
        if " ".join(phrase) not in lookup and _spans(list(tokens), phrase):
            return f"no answer (says {' '.join(phrase)!r}): {_short(folded)!r}"
    return None


def _spans(tokens: list[str], key: tuple[str, ...]) -> list[tuple[int, int]]:
    size = len(key)
    return [
        (i, i + size) for i in range(len(tokens) - size + 1) if tuple(tokens[i : i + size]) == key
    ]


_ARTICLES = frozenset(("a", "an", "the"))


def _read_sentence(folded: str, lookup: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Find the one label a short sentence names as a whole word (or words).

    A match inside a longer match does not count ("no regression" contains "regression"), a
    sentence naming two labels is ambiguous, and a negation outside the matched words ("not a
    regression") makes the reading unsafe. A label that is also an article ("A" of a multiple
    choice) is read as the article when another label follows it ("a B" is B). Returns
    ``(label, None)`` or ``(None, reason)``.
    """
    tokens = folded.split()
    words = sum(1 for t in tokens if t not in _CLAUSE)
    if words > _SENTENCE_WORDS:
        return None, f"no label in a reply of {words} words: {_short(folded)!r}"
    found: list[tuple[int, int, str]] = []
    for key, label in lookup.items():
        found.extend((a, b, label) for a, b in _spans(tokens, tuple(key.split())))
    starts = {a for a, _, _ in found}
    kept = [
        (a, b, label)
        for a, b, label in found
        if not any(a2 <= a and b <= b2 and (b2 - a2) > (b - a) for a2, b2, _ in found)
        and not (b - a == 1 and tokens[a] in _ARTICLES and b in starts)
    ]
    labels = list(dict.fromkeys(label for _, _, label in kept))
    if not labels:
        return None, f"{_short(folded)!r} names none of the labels"
    if len(labels) > 1:
        return None, f"ambiguous: names {', '.join(labels)}"
    covered = {i for a, b, _ in kept for i in range(a, b)}
    negated = [t for i, t in enumerate(tokens) if i not in covered and t in _NEGATIONS]
    if negated:
        return None, f"negated mention of {labels[0]!r}: {_short(folded)!r}"
    return labels[0], None


def _answer_schema(answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"answer": answer},
        "required": ["answer"],
        "additionalProperties": False,
    }


def _fold_table(
    labels: Sequence[str], synonyms: Mapping[str, str], what: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Check ``labels`` and ``synonyms`` and build the folded lookup (folded text -> label).

    Returns the lookup and the synonyms resolved to exact labels. Raises InputError when two
    labels fold alike, a synonym points at no label, or a synonym is another label's name.
    """
    lookup: dict[str, str] = {}
    for label in labels:
        key = fold(label)
        if not key:
            raise InputError(f"{what} {label!r} has no letters or digits")
        if key in lookup:
            raise InputError(f"{what}s {lookup[key]!r} and {label!r} read as the same answer")
        lookup[key] = label
    by_fold = dict(lookup)
    resolved: dict[str, str] = {}
    for synonym, target in synonyms.items():
        resolved_label = by_fold.get(fold(target))
        if resolved_label is None:
            raise InputError(f"synonym {synonym!r} points at {target!r}, which is not a {what}")
        key = fold(synonym)
        if not key:
            raise InputError(f"synonym {synonym!r} has no letters or digits")
        if lookup.get(key, resolved_label) != resolved_label:
            raise InputError(f"synonym {synonym!r} is already read as {lookup[key]!r}")
        lookup[key] = resolved_label
        resolved[synonym] = resolved_label
    return lookup, resolved


# -- the formats --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grouping:
    """Votes mapped to the representative they count as. ``ambiguous`` says, in one line,
    why another grouping of the same votes was as good (a chain of near answers), so a
    decision taken on it can say so; ``None`` when the grouping is the only sensible one."""

    mapping: dict[str, str]
    ambiguous: str | None = None


class _Format(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    votable: ClassVar[bool] = True

    def instruction(self) -> str:
        raise NotImplementedError

    def response_schema(self) -> dict[str, Any] | None:
        return None

    def parse(self, raw: str) -> Parsed:
        raise NotImplementedError

    def grouping(self, values: Sequence[str]) -> Grouping:
        """Which representative each vote counts as: identity, except where a tolerance
        lets near answers count together."""
        return Grouping({v: v for v in values})

    def group(self, values: Sequence[str]) -> dict[str, str]:
        """The representative of each vote (:meth:`grouping` without its note)."""
        return self.grouping(values).mapping

    def conservative_rank(self, value: str) -> int | None:
        """0 for the most conservative answer; ``None`` when the format has no such order."""
        return None

    def read_gold(self, gold: str) -> Parsed:
        """A gold value as the vote it stands for. Gold is read strictly (a label or synonym,
        one number, one JSON object), never as a sentence: a gold the task cannot read is a
        mistake in the set, refused before a batch runs."""
        return self.parse(gold)

    def gold_matches(self, label: str | None, gold: str) -> bool:
        """Whether a decided label is the gold answer: both read by the format and compared
        under the grouping votes get (numbers within tolerance count as equal). This is the one
        comparison the batch summary, the curve and the pages use."""
        if label is None:
            return False
        want, got = self.read_gold(gold), self.read_gold(label)
        if want.value is None:
            return False
        value = got.value if got.value is not None else label.strip()
        mapping = self.grouping([value, want.value]).mapping
        return mapping[value] == mapping[want.value]

    @property
    def has_conservative_order(self) -> bool:
        """Whether a ``conservative`` tie-break can rank anything in this format."""
        return False


class LabelFormat(_Format):
    """A closed set of labels, with synonyms and an optional conservative order."""

    kind: Literal["label"] = "label"
    labels: tuple[str, ...]
    synonyms: dict[str, str] = Field(default_factory=dict)
    conservative_order: tuple[str, ...] = ()  # most conservative first

    _lookup: dict[str, str] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        labels = tuple(dict.fromkeys(label.strip() for label in self.labels))
        if len(labels) < 2:
            raise InputError("a label task needs at least two distinct labels")
        lookup, synonyms = _fold_table(labels, self.synonyms, "label")
        by_fold = {fold(label): label for label in labels}
        order: list[str] = []
        for entry in self.conservative_order:
            label = by_fold.get(fold(entry))
            if label is None:
                raise InputError(f"conservative order names {entry!r}, which is not a label")
            if label in order:
                raise InputError(f"conservative order names {label!r} twice")
            order.append(label)
        # Normalised once here so equal tasks compare and serialise alike.
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "synonyms", synonyms)
        object.__setattr__(self, "conservative_order", tuple(order))
        self._lookup = lookup

    def instruction(self) -> str:
        return (
            f"Answer with exactly one label from this list: {json.dumps(list(self.labels))}\n"
            "Reply with the label only."
        )

    def response_schema(self) -> dict[str, Any]:
        return _answer_schema({"type": "string", "enum": list(self.labels)})

    def parse(self, raw: str) -> Parsed:
        text = unwrap(raw)
        if not text:
            return Parsed.bad("empty reply")
        key = fold(text)
        if key in self._lookup:
            return Parsed.good(self._lookup[key])
        label, reason = _read_sentence(key, self._lookup)
        if label is None:
            return Parsed.bad(f"{reason}; labels are {', '.join(self.labels)}")
        unsure = _unsure(key, self._lookup)
        return Parsed.good(label) if unsure is None else Parsed.bad(unsure)

    def read_gold(self, gold: str) -> Parsed:
        label = self._lookup.get(fold(unwrap(gold)))
        if label is None:
            labels = ", ".join(self.labels)
            return Parsed.bad(f"{_short(gold)!r} is no label or synonym of {labels}")
        return Parsed.good(label)

    def conservative_rank(self, value: str) -> int | None:
        try:
            return self.conservative_order.index(value)
        except ValueError:
            return None

    @property
    def has_conservative_order(self) -> bool:
        return bool(self.conservative_order)


_YES = ("yes", "y", "true", "yeah", "yep", "yup", "affirmative", "correct", "indeed")
_NO = ("no", "n", "false", "nope", "nah", "negative", "incorrect")


class YesNoFormat(_Format):
    """Yes or no. ``conservative`` names the answer to take when a tie is broken that way."""

    kind: Literal["yesno"] = "yesno"
    conservative: Literal["yes", "no"] | None = None
    synonyms: dict[str, str] = Field(default_factory=dict)

    _lookup: dict[str, str] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        builtin = {word: "yes" for word in _YES} | {word: "no" for word in _NO}
        lookup, synonyms = _fold_table(("yes", "no"), self.synonyms, "yes/no answer")
        object.__setattr__(self, "synonyms", synonyms)
        self._lookup = builtin | lookup

    def instruction(self) -> str:
        return "Answer yes or no."

    def response_schema(self) -> dict[str, Any]:
        return _answer_schema({"type": "string", "enum": ["yes", "no"]})

    def parse(self, raw: str) -> Parsed:
        text = unwrap(raw)
        if not text:
            return Parsed.bad("empty reply")
        key = fold(text)
        if key in self._lookup:
            return Parsed.good(self._lookup[key])
        unsure = _unsure(key, self._lookup)
        if unsure is not None:
            return Parsed.bad(unsure)
        tokens = key.split()
        # "No, it isn't." answers first and explains after: the leading word is the answer,
        # unless the rest also says the opposite.
        lead = self._lookup.get(tokens[0]) if tokens[0] not in ("y", "n") else None
        if lead is not None:
            said = {self._lookup[t] for t in tokens if t in self._lookup and t not in ("y", "n")}
            if said == {lead}:
                return Parsed.good(lead)
            return Parsed.bad(f"says both yes and no: {_short(text)!r}")
        answer, reason = _read_sentence(key, self._lookup)
        if answer is None:
            return Parsed.bad(f"not a yes or no: {reason}")
        return Parsed.good(answer)

    def read_gold(self, gold: str) -> Parsed:
        answer = self._lookup.get(fold(unwrap(gold)))
        if answer is None:
            return Parsed.bad(f"{_short(gold)!r} is neither yes nor no nor a synonym")
        return Parsed.good(answer)

    def conservative_rank(self, value: str) -> int | None:
        if self.conservative is None or value not in ("yes", "no"):
            return None
        return 0 if value == self.conservative else 1

    @property
    def has_conservative_order(self) -> bool:
        return self.conservative is not None


_NUMBER = re.compile(
    r"(?:(?<![\w.])[-+−])?"  # a sign only where it cannot be a minus between two numbers
    r"(?<![\w.])"
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?"
    r"(?![\d]|\.\d)"  # never half of "1.2.3"
)
_MAX_EXPONENT = 30


def _canonical_number(value: Decimal) -> str:
    if value.is_zero():
        return "0"
    return format(value.normalize(), "f")


class NumberFormat(_Format):
    """One number. Answers within ``tolerance`` (absolute) of each other count as one vote."""

    kind: Literal["number"] = "number"
    tolerance: float = 0.0

    def model_post_init(self, context: Any, /) -> None:
        if not self.tolerance >= 0 or self.tolerance == float("inf"):
            raise InputError(f"tolerance must be a finite number >= 0, got {self.tolerance}")

    def instruction(self) -> str:
        return "Answer with a single number."

    def response_schema(self) -> dict[str, Any]:
        return _answer_schema({"type": "number"})

    def parse(self, raw: str) -> Parsed:
        text = unwrap(raw)
        if not text:
            return Parsed.bad("empty reply")
        unsure = _unsure(fold(text), {})
        if unsure is not None:
            return Parsed.bad(unsure)
        values: dict[Decimal, None] = {}
        for match in _NUMBER.finditer(text):
            literal = match.group(0).replace(",", "").replace("−", "-")
            try:
                number = Decimal(literal)
            except InvalidOperation:  # pragma: no cover - the pattern only matches numbers
                continue
            if not number.is_zero() and abs(number.adjusted()) > _MAX_EXPONENT:
                return Parsed.bad(f"number out of range: {_short(literal)}")
            values[number] = None
        if not values:
            return Parsed.bad(f"no number in {_short(text)!r}")
        if len(values) > 1:
            shown = ", ".join(_canonical_number(v) for v in list(values)[:5])
            return Parsed.bad(f"several numbers ({shown}) in {_short(text)!r}")
        return Parsed.good(_canonical_number(next(iter(values))))

    def grouping(self, values: Sequence[str]) -> Grouping:
        """Answers within ``tolerance`` of each other count as one vote, around the consensus.

        The window of width ``tolerance`` holding the most votes becomes a group, then the
        next among the votes left, and so on; so a group's answers are all within tolerance
        of each other, an outlier cannot pull answers away from the consensus, and call order
        does not matter (windows holding equally many votes: the lower one first). A group
        counts as its median member (the lower one for an even count). The grouping is
        ambiguous when two answers within tolerance of each other end in different groups.
        """
        if self.tolerance == 0 or not values:
            return Grouping({v: v for v in values})
        tolerance = Decimal(repr(self.tolerance))
        left = sorted(values, key=Decimal)
        out: dict[str, str] = {}
        while left:
            numbers = [Decimal(v) for v in left]
            best_start, best_end, end = 0, 0, 0
            for start, first in enumerate(numbers):
                end = max(end, start)
                while end < len(numbers) and numbers[end] - first <= tolerance:
                    end += 1
                if end - start > best_end - best_start:
                    best_start, best_end = start, end
            members = left[best_start:best_end]
            median = members[(len(members) - 1) // 2]
            out.update((member, median) for member in members)
            del left[best_start:best_end]
        return Grouping({v: out[v] for v in values}, self._ambiguity(out, tolerance))

    @staticmethod
    def _ambiguity(out: Mapping[str, str], tolerance: Decimal) -> str | None:
        ordered = sorted(out, key=Decimal)
        for low, high in pairwise(ordered):
            if out[low] != out[high] and Decimal(high) - Decimal(low) <= tolerance:
                return (
                    f"ambiguous grouping: {low} and {high} are within tolerance "
                    f"{tolerance} of each other but counted apart"
                )
        return None


def canonical_json(value: object) -> str:
    """One text per JSON value: sorted keys, no spaces, numbers as numbers (``1.0`` is ``1``)."""
    return json.dumps(canonical_value(value), sort_keys=True, separators=(",", ":"))


def _find_objects(text: str) -> list[Any]:
    """The JSON a reply holds: the whole text, or every top-level object found inside it."""
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = 0
    for match in re.finditer(r"\{", text):
        if match.start() < position:
            continue  # inside an object already read
        try:
            data, position = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            found.append(data)
    return found


class JsonFormat(_Format):
    """A JSON object matching ``schema``; votes are taken per top-level field."""

    kind: Literal["json"] = "json"
    schema_: dict[str, Any] = Field(alias="schema")

    # ``schema`` would shadow a BaseModel attribute: stored as ``schema_``, read and written
    # as ``schema`` everywhere outside.
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        serialize_by_alias=True,
    )

    _validator: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        cls = jsonschema.validators.validator_for(self.schema_)
        try:
            cls.check_schema(self.schema_)
        except SchemaError as err:
            raise InputError(f"invalid JSON schema: {err.message}") from None
        self._validator = cls(self.schema_)

    @property
    def schema(self) -> dict[str, Any]:  # type: ignore[override]
        return self.schema_

    def instruction(self) -> str:
        return f"Answer with a JSON object matching this schema: {json.dumps(self.schema_)}"

    def response_schema(self) -> dict[str, Any]:
        return self.schema_

    def schema_problem(self, data: object) -> str | None:
        """Why ``data`` does not match the schema, in one line; ``None`` when it does."""
        error = best_match(self._validator.iter_errors(data))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{where + ': ' if where else ''}{_short(error.message, 120)}"

    def parse(self, raw: str) -> Parsed:
        text = _unfence(raw)
        if not text:
            return Parsed.bad("empty reply")
        objects = _find_objects(text)
        if len({canonical_json(o) for o in objects}) > 1:
            return Parsed.bad(f"several different JSON objects in {_short(text)!r}")
        data = objects[0] if objects else None
        if not isinstance(data, dict):
            return Parsed.bad(f"not a JSON object: {_short(text)!r}")
        problem = self.schema_problem(data)
        if problem is not None:
            inner = data.get("answer") if len(data) == 1 else None
            if isinstance(inner, dict) and self.schema_problem(inner) is None:
                return Parsed.good(canonical_json(inner))
            return Parsed.bad(f"does not match the schema: {problem}")
        return Parsed.good(canonical_json(data))

    def read_gold(self, gold: str) -> Parsed:
        try:
            data = json.loads(gold)
        except json.JSONDecodeError:
            return Parsed.bad(f"{_short(gold)!r} is not JSON")
        if not isinstance(data, dict):
            return Parsed.bad(f"{_short(gold)!r} is not a JSON object")
        problem = self.schema_problem(data)
        if problem is not None:
            return Parsed.bad(f"{_short(gold)!r} does not match the schema: {problem}")
        return Parsed.good(canonical_json(data))

    def fields(self, value: str) -> dict[str, str]:
        """Each top-level field of a canonical answer, as canonical JSON."""
        data = json.loads(value)
        if not isinstance(data, dict):
            return {}
        return {key: canonical_json(item) for key, item in data.items()}


class TextFormat(_Format):
    """Free text. Never voted on: prose does not converge; use fastest-acceptable."""

    kind: Literal["text"] = "text"

    votable: ClassVar[bool] = False

    def instruction(self) -> str:
        return "Answer in plain text."

    def parse(self, raw: str) -> Parsed:
        text = raw.strip()
        return Parsed.good(text) if text else Parsed.bad("empty reply")


AnswerFormat = Annotated[
    LabelFormat | YesNoFormat | NumberFormat | JsonFormat | TextFormat,
    Field(discriminator="kind"),
]

_ADAPTER: TypeAdapter[AnswerFormat] = TypeAdapter(AnswerFormat)


def validation_reason(err: ValidationError) -> str:
    """The first problem of a pydantic error as one line."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def parse_format(data: Mapping[str, Any]) -> AnswerFormat:
    """An answer format from its dict form (``{"kind": "label", "labels": [...]}``)."""
    if not isinstance(data, Mapping):
        raise InputError("an answer format must be an object with a 'kind'")
    try:
        return _ADAPTER.validate_python(dict(data))
    except ValidationError as err:
        raise InputError(f"bad answer format: {validation_reason(err)}") from None
