"""Adversarial replies, one table per answer format, each with the reading Tally must give.

A reading is the vote (a string) or ``None`` for an ``invalid`` reply. The rows cover how models
actually wrap answers (articles, quotes, markdown, ``\\boxed{}``, "Answer:", prose around),
Unicode look-alikes of plain letters, refusals and "I don't know", and replies naming two
answers at once: those must never be read as one of them.
"""

from __future__ import annotations

import json

import pytest

from core.formats import JsonFormat, LabelFormat, NumberFormat, YesNoFormat

CHOICE = LabelFormat(labels=("A", "B", "C", "D"))
REGRESSION = LabelFormat(labels=("regression", "no regression"), synonyms={"bug": "regression"})
TRIAGE = LabelFormat(labels=("billing", "other", "unknown"))
YESNO = YesNoFormat()
NUMBER = NumberFormat()
PERSON = JsonFormat.model_validate(
    {
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "number"}},
            "required": ["name", "age"],
        }
    }
)

LABEL_CASES = [
    # articles
    ("A", CHOICE, "A"),
    ("the A", CHOICE, "A"),
    ("The B.", CHOICE, "B"),
    ("a B", CHOICE, "B"),
    ("It is a C", CHOICE, "C"),
    ("an A", CHOICE, "A"),
    # quotes, markdown, boxed, trailing punctuation, case
    ('"B"', CHOICE, "B"),
    ("'c'", CHOICE, "C"),
    ("“D”", CHOICE, "D"),
    ("`A`", CHOICE, "A"),
    ("**B**", CHOICE, "B"),
    ("__C__", CHOICE, "C"),
    ("The answer is **D**.", CHOICE, "D"),
    ("\\boxed{B}", CHOICE, "B"),
    ("$\\boxed{\\text{C}}$", CHOICE, "C"),
    ("Working it out... so \\boxed{A}.", CHOICE, "A"),
    ("B.", CHOICE, "B"),
    ("B!!", CHOICE, "B"),
    ("b", CHOICE, "B"),
    ("REGRESSION", REGRESSION, "regression"),
    ("No Regression.", REGRESSION, "no regression"),
    # Unicode look-alikes
    ("\u0410", CHOICE, "A"),  # Cyrillic capital A
    ("\u0412", CHOICE, "B"),  # Cyrillic capital Ve, drawn like B
    ("\u0421", CHOICE, "C"),  # Cyrillic capital Es, drawn like C
    ("\uff24", CHOICE, "D"),  # full-width D
    ("\u0391", CHOICE, "A"),  # Greek capital Alpha
    ("r\u0435gr\u0435ssion", REGRESSION, "regression"),  # Cyrillic e inside a Latin word
    ("no\u00a0regression", REGRESSION, "no regression"),  # no-break space
    ("regre\u200bssion", REGRESSION, "regression"),  # zero-width space
    ("\ufeffno regression", REGRESSION, "no regression"),  # byte-order mark
    ("\uff52\uff45\uff47\uff52\uff45\uff53\uff53\uff49\uff4f\uff4e", REGRESSION, "regression"),
    # "Answer: X" and prose around
    ("Answer: A", CHOICE, "A"),
    ("Final answer: C", CHOICE, "C"),
    ("Answer\uff1a D", CHOICE, "D"),  # full-width colon
    ("I think it is B.", CHOICE, "B"),
    ("Looking at the options carefully.\nAnswer: D", CHOICE, "D"),
    ("B is correct", CHOICE, "B"),
    ("This is a bug.", REGRESSION, "regression"),
    # clause punctuation carries meaning
    ("No, regression.", REGRESSION, None),
    ("No. Regression.", REGRESSION, None),
    ("No - regression", REGRESSION, None),
    ("No — regression", REGRESSION, None),
    ("no-regression", REGRESSION, "no regression"),
    # two labels in one reply
    ("A or B", CHOICE, None),
    ("A, not B", CHOICE, None),
    ("A/B", CHOICE, None),
    ("A and C", CHOICE, None),
    ("B. Not A, since A is wrong.", CHOICE, None),
    ("regression or no regression", REGRESSION, None),
    # refusals and "I don't know"
    ("I don't know", CHOICE, None),
    ("No idea", CHOICE, None),
    ("Not sure, maybe B", CHOICE, None),
    ("I'm not sure it is a regression", REGRESSION, None),
    ("I cannot answer that.", CHOICE, None),
    ("Sorry, I can't help with that.", REGRESSION, None),
    ("N/A", CHOICE, None),
    ("", CHOICE, None),
    ("   ", CHOICE, None),
    ("E", CHOICE, None),
    # a label that is itself an "unknown" is an answer, not a refusal
    ("unknown", TRIAGE, "unknown"),
    ("Unknown.", TRIAGE, "unknown"),
    ("It is unknown", TRIAGE, "unknown"),
]

YESNO_CASES = [
    ("yes", "yes"),
    ("Yes.", "yes"),
    ("YES", "yes"),
    ('"no"', "no"),
    ("**No**", "no"),
    ("\\boxed{yes}", "yes"),
    ("Answer: no", "no"),
    ("y\u0435s", "yes"),  # Cyrillic e
    ("\uff59\uff45\uff53", "yes"),  # full-width
    ("n\u200bo", "no"),  # zero-width space
    ("No, it is not.", "no"),
    ("Yes, it does.", "yes"),
    ("True", "yes"),
    ('{"answer": false}', "no"),
    ("The answer is yes", "yes"),
    # not an answer
    ("No idea", None),
    ("no idea.", None),
    ("No clue", None),
    ("Not sure", None),
    ("unknown", None),
    ("I don't know", None),
    ("I do not know", None),
    ("Cannot tell", None),
    ("Can't tell from this.", None),
    ("No, I cannot answer that.", None),
    ("No comment", None),
    ("N/A", None),
    ("n/a", None),
    ("It depends", None),
    ("maybe", None),
    ("yes or no", None),
    ("yes/no", None),
    ("Yes, but also no", None),
    ("", None),
]

NUMBER_CASES = [
    ("42", "42"),
    ("42.0", "42"),
    ("**42**", "42"),
    ('"42"', "42"),
    ("\\boxed{42}", "42"),
    ("$\\boxed{3.5}$", "3.5"),
    ("Answer: 7", "7"),
    ("The answer is 12.", "12"),
    ("\uff14\uff12", "42"),  # full-width digits
    ("4\u200b2", "42"),  # zero-width space inside
    ("1\u00a0000", None),  # a no-break space is a space: two numbers
    ("−5", "-5"),
    ('{"answer": 1.0}', "1"),
    ('{"answer": 1e2}', "100"),
    ("Reasoning: 6 * 7.\nFinal answer: 42", "42"),
    ("3 or 4", None),
    ("I don't know", None),
    ("Not sure, maybe 42", None),
    ("unknown", None),
    ("N/A", None),
    ("", None),
]

JSON_CASES = [
    ('{"name": "Ada", "age": 36}', {"name": "Ada", "age": 36}),
    ('{"name": "Ada", "age": 36.0}', {"name": "Ada", "age": 36}),
    ('{"age": 3.6e1, "name": "Ada"}', {"name": "Ada", "age": 36}),
    ('{"name": "Ada", "age": -0.0}', {"name": "Ada", "age": 0}),
    ('{"name": "Ada", "age": 36.5}', {"name": "Ada", "age": 36.5}),
    ('```json\n{"name": "Ada", "age": 36}\n```', {"name": "Ada", "age": 36}),
    ('Here it is: {"name": "Ada", "age": 36}. Done.', {"name": "Ada", "age": 36}),
    ('{"answer": {"name": "Ada", "age": 36.0}}', {"name": "Ada", "age": 36}),
    ('{"name": "Ada", "age": 36} or {"name": "Bob", "age": 40}', None),
    ('{"name": "Ada", "age": 36} again {"name": "Ada", "age": 36.0}', {"name": "Ada", "age": 36}),
    ('{"name": "Ada", "age": "36"}', None),
    ('{"name": "Ada", "age": true}', None),
    ("I cannot produce JSON for this.", None),
    ("", None),
]


def _reading(parsed: object) -> str | None:
    assert hasattr(parsed, "ok")
    return parsed.value if parsed.ok else None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("raw", "fmt", "expected"), LABEL_CASES)
def test_label_reading(raw: str, fmt: LabelFormat, expected: str | None) -> None:
    parsed = fmt.parse(raw)
    assert _reading(parsed) == expected, parsed
    if not parsed.ok:
        assert parsed.error and "\n" not in parsed.error


@pytest.mark.parametrize(("raw", "expected"), YESNO_CASES)
def test_yesno_reading(raw: str, expected: str | None) -> None:
    parsed = YESNO.parse(raw)
    assert _reading(parsed) == expected, parsed


@pytest.mark.parametrize(("raw", "expected"), NUMBER_CASES)
def test_number_reading(raw: str, expected: str | None) -> None:
    parsed = NUMBER.parse(raw)
    assert _reading(parsed) == expected, parsed


@pytest.mark.parametrize(("raw", "expected"), JSON_CASES)
def test_json_reading(raw: str, expected: dict[str, object] | None) -> None:
    parsed = PERSON.parse(raw)
    want = None if expected is None else json.dumps(expected, sort_keys=True, separators=(",", ":"))
    assert _reading(parsed) == want, parsed
