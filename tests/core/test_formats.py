"""Answer formats: instructions, structured-output schemas, and reading sloppy replies."""

from __future__ import annotations

import json

import pytest

from core.errors import InputError
from core.formats import (
    MISSING,
    JsonFormat,
    LabelFormat,
    NumberFormat,
    Parsed,
    TextFormat,
    YesNoFormat,
    fold,
    parse_format,
    unwrap,
)

REGRESSION = LabelFormat(
    labels=("regression", "no regression"),
    synonyms={"bug": "regression", "all good": "no regression"},
    conservative_order=("regression",),
)
TRIAGE = LabelFormat(
    labels=("billing", "bug report", "feature request", "account", "other"),
    synonyms={"Invoice": "billing", "feature-request": "feature request", "login": "account"},
    conservative_order=("bug report", "billing", "account"),
)
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


# -- shared unwrapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  regression  ", "regression"),
        ("**Regression**", "Regression"),
        ("*regression*.", "regression"),
        ('"regression"', "regression"),
        ("“regression.”", "regression"),
        ("`regression`", "regression"),
        ("regression.", "regression"),
        ("regression!!", "regression"),
        ("Answer: regression", "regression"),
        ("answer = regression", "regression"),
        ("The answer is: regression", "regression"),
        ("Some reasoning.\nFinal answer: **regression**.", "regression"),
        ("Label: bug report", "bug report"),
        ('{"answer": "regression"}', "regression"),
        ('{"Answer": "regression"}', "regression"),
        ('{"label": "regression"}', "regression"),
        ('{"answer": true}', "true"),
        ('{"answer": 3.5}', "3.5"),
        ('"regression"', "regression"),
        ("```\nregression\n```", "regression"),
        ('```json\n{"answer": "regression"}\n```', "regression"),
        ("Here you go:\n```text\nregression\n```\nHope it helps", "regression"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_unwrap_removes_the_wrapping(raw: str, expected: str) -> None:
    assert unwrap(raw) == expected


def test_unwrap_keeps_json_with_several_keys_as_text() -> None:
    raw = '{"a": 1, "b": 2}'
    assert unwrap(raw) == raw


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No-Regression!", "no regression"),
        ("  BUG   report ", "bug report"),
        ("won't fix", "wont fix"),
        ("feature_request", "feature request"),
        ("Ça va", "ça va"),
        ("...", ""),
    ],
)
def test_fold(text: str, expected: str) -> None:
    assert fold(text) == expected


# -- label ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("regression", "regression"),
        ("Regression", "regression"),
        ("REGRESSION.", "regression"),
        ("no regression", "no regression"),
        ("No Regression", "no regression"),
        ("no-regression", "no regression"),
        ("No_Regression.", "no regression"),
        ("**No regression**", "no regression"),
        ('{"answer": "no regression"}', "no regression"),
        ('```json\n{"answer": "regression"}\n```', "regression"),
        ("'regression'", "regression"),
        ("Answer: no regression", "no regression"),
        ("There is no regression.", "no regression"),
        ("I see no regression here", "no regression"),
        ("This page contains a regression.", "regression"),
        ("It's a bug.", "regression"),
        ("BUG", "regression"),
        ("all good", "no regression"),
        ("All good!", "no regression"),
        ("Reasoning about the diff.\nFinal answer: regression", "regression"),
    ],
)
def test_label_reads_sloppy_replies(raw: str, expected: str) -> None:
    assert REGRESSION.parse(raw) == Parsed(ok=True, value=expected)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty reply"),
        ("   ", "empty reply"),
        ("banana", "names none of the labels"),
        ("regression or no regression, hard to say", "ambiguous"),
        ("This is not a regression", "negated"),
        ("I don't think it's a regression", "negated"),
        ("Never a regression", "negated"),
        ("a regression? " + "word " * 30, "no label in a reply of"),
    ],
)
def test_label_refuses_what_it_cannot_read(raw: str, reason: str) -> None:
    parsed = REGRESSION.parse(raw)
    assert not parsed.ok
    assert parsed.value is None
    assert parsed.error is not None and reason in parsed.error
    assert "\n" not in parsed.error


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("billing", "billing"),
        ("Bug Report", "bug report"),
        ("bug-report", "bug report"),
        ("invoice", "billing"),
        ("INVOICE.", "billing"),
        ("Feature request", "feature request"),
        ("feature-request", "feature request"),
        ("Login problem", "account"),
        ("This is a bug report.", "bug report"),
        ("Category: other", "other"),
    ],
)
def test_label_multi_class_and_synonyms(raw: str, expected: str) -> None:
    assert TRIAGE.parse(raw).value == expected


def test_fold_keeps_clause_punctuation() -> None:
    assert fold("No, regression.") == "no , regression"
    assert fold("No, regression.") != fold("no regression")
    assert fold("No. Regression") != fold("no regression")
    assert fold("No-regression") == fold("no regression")


def test_label_a_comma_is_not_a_joiner() -> None:
    assert REGRESSION.parse("No, regression.").value != "no regression"
    assert REGRESSION.parse("No, regression.").value is None


def test_label_a_refusal_naming_a_label_is_no_vote() -> None:
    parsed = REGRESSION.parse("Unsure, probably a regression")
    assert not parsed.ok and parsed.error is not None and "no answer" in parsed.error


def test_label_two_labels_in_one_sentence_are_ambiguous() -> None:
    parsed = TRIAGE.parse("billing or account")
    assert not parsed.ok and parsed.error is not None
    assert "billing" in parsed.error and "account" in parsed.error


def test_label_instruction_and_schema() -> None:
    first_line = REGRESSION.instruction().splitlines()[0]
    assert (
        first_line
        == 'Answer with exactly one label from this list: ["regression", "no regression"]'
    )
    prefix = "Answer with exactly one label from this list: "
    assert json.loads(first_line.removeprefix(prefix)) == ["regression", "no regression"]
    assert REGRESSION.response_schema() == {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["regression", "no regression"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }


def test_label_conservative_rank() -> None:
    assert REGRESSION.conservative_rank("regression") == 0
    assert REGRESSION.conservative_rank("no regression") is None
    assert TRIAGE.conservative_rank("bug report") == 0
    assert TRIAGE.conservative_rank("account") == 2
    assert TRIAGE.conservative_rank("other") is None


def test_label_normalises_its_declaration() -> None:
    fmt = LabelFormat(
        labels=(" a ", "b", "a"),
        synonyms={"alpha": "A"},
        conservative_order=("B",),
    )
    assert fmt.labels == ("a", "b")
    assert fmt.synonyms == {"alpha": "a"}
    assert fmt.conservative_order == ("b",)
    assert fmt.parse("Alpha").value == "a"
    assert fmt == LabelFormat(labels=("a", "b"), synonyms={"alpha": "a"}, conservative_order=("b",))


def test_label_group_is_identity() -> None:
    assert REGRESSION.group(["regression", "no regression", "regression"]) == {
        "regression": "regression",
        "no regression": "no regression",
    }
    assert REGRESSION.votable


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "label", "labels": ["a"]}, "at least two distinct labels"),
        ({"kind": "label", "labels": ["a", "a"]}, "at least two distinct labels"),
        ({"kind": "label", "labels": []}, "at least two distinct labels"),
        ({"kind": "label", "labels": ["Yes", "yes"]}, "read as the same answer"),
        ({"kind": "label", "labels": ["a", "!!"]}, "no letters or digits"),
        ({"kind": "label", "labels": ["a", "b"], "synonyms": {"x": "c"}}, "not a label"),
        ({"kind": "label", "labels": ["a", "b"], "synonyms": {"B": "a"}}, "already read as"),
        ({"kind": "label", "labels": ["a", "b"], "synonyms": {"?": "a"}}, "no letters"),
        ({"kind": "label", "labels": ["a", "b"], "conservative_order": ["c"]}, "not a label"),
        ({"kind": "label", "labels": ["a", "b"], "conservative_order": ["a", "A"]}, "twice"),
        (
            {
                "kind": "label",
                "labels": ["a", "b"],
                "synonyms": {"x": "a"},
                "conservative_order": ["x"],
            },
            "not a label",
        ),
        ({"kind": "label", "labels": "ab"}, "labels"),
        ({"kind": "label", "labels": ["a", "b"], "colour": "red"}, "colour"),
        ({"kind": "nope"}, "nope"),
        ({}, "kind"),
        ({"kind": "yesno", "conservative": "maybe"}, "conservative"),
        ({"kind": "yesno", "synonyms": {"sure thing": "perhaps"}}, "not a yes/no answer"),
        ({"kind": "number", "tolerance": -1}, "tolerance"),
        ({"kind": "number", "tolerance": float("nan")}, "tolerance"),
        ({"kind": "json", "schema": {"type": 5}}, "invalid JSON schema"),
        ({"kind": "json"}, "schema"),
    ],
)
def test_parse_format_rejects_bad_declarations(data: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_format(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_parse_format_rejects_a_non_mapping() -> None:
    with pytest.raises(InputError, match="kind"):
        parse_format(["label"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fmt",
    [
        REGRESSION,
        TRIAGE,
        YesNoFormat(conservative="no", synonyms={"sure thing": "yes"}),
        NumberFormat(tolerance=0.5),
        JsonFormat.model_validate({"schema": SCHEMA}),
        TextFormat(),
    ],
)
def test_formats_round_trip_through_their_dict_form(fmt: object) -> None:
    assert hasattr(fmt, "model_dump")
    data = fmt.model_dump(mode="json")  # type: ignore[attr-defined]
    assert parse_format(json.loads(json.dumps(data))) == fmt


# -- yes/no ---------------------------------------------------------------------------------


YESNO = YesNoFormat(conservative="yes", synonyms={"of course": "yes", "no way": "no"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("yes", "yes"),
        ("Yes.", "yes"),
        ("YES!", "yes"),
        ("y", "yes"),
        ("Y", "yes"),
        ("true", "yes"),
        ("True", "yes"),
        ("yep", "yes"),
        ("no", "no"),
        ("No.", "no"),
        ("n", "no"),
        ("false", "no"),
        ("Nope", "no"),
        ("**No**", "no"),
        ('{"answer": "yes"}', "yes"),
        ('{"answer": true}', "yes"),
        ('{"answer": false}', "no"),
        ("Answer: no", "no"),
        ("Yes, it does.", "yes"),
        ("No, it isn't.", "no"),
        ("No, there is no regression.", "no"),
        ("The answer is yes", "yes"),
        ("Of course", "yes"),
        ("no way!", "no"),
    ],
)
def test_yesno_reads_sloppy_replies(raw: str, expected: str) -> None:
    assert YESNO.parse(raw) == Parsed(ok=True, value=expected)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty reply"),
        ("maybe", "not a yes or no"),
        ("Yes, but also no", "both yes and no"),
        ("It is not true", "negated"),
        ("yes or no, who knows", "both yes and no"),
    ],
)
def test_yesno_refuses_what_it_cannot_read(raw: str, reason: str) -> None:
    parsed = YESNO.parse(raw)
    assert not parsed.ok
    assert parsed.error is not None and reason in parsed.error


@pytest.mark.parametrize(
    "raw", ["No idea", "no idea.", "No clue", "Not sure", "I don't know", "N/A", "Cannot tell"]
)
def test_yesno_does_not_know_is_not_no(raw: str) -> None:
    parsed = YESNO.parse(raw)
    assert not parsed.ok
    assert parsed.error is not None and "no answer" in parsed.error


def test_yesno_refusal_after_a_no_is_not_no() -> None:
    assert not YESNO.parse("No, I cannot answer that.").ok


def test_yesno_instruction_schema_and_rank() -> None:
    assert YESNO.instruction() == "Answer yes or no."
    assert YESNO.response_schema() == {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    assert YESNO.conservative_rank("yes") == 0
    assert YESNO.conservative_rank("no") == 1
    assert YesNoFormat().conservative_rank("yes") is None
    assert YesNoFormat(conservative="no").conservative_rank("no") == 0


def test_yesno_user_synonym_overrides_a_builtin_word() -> None:
    fmt = YesNoFormat(synonyms={"negative": "yes"})  # e.g. "is the test negative?"
    assert fmt.parse("negative").value == "yes"


# -- number ---------------------------------------------------------------------------------


NUMBER = NumberFormat()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", "42"),
        ("42.0", "42"),
        ("42.", "42"),
        ("+42", "42"),
        ("-5", "-5"),
        ("−5", "-5"),
        ("-0", "0"),
        ("0.0", "0"),
        ("3.50", "3.5"),
        (".5", "0.5"),
        ("1,200", "1200"),
        ("$1,000,000", "1000000"),
        ("1e3", "1000"),
        ("2.5E-3", "0.0025"),
        ("The answer is 3.5.", "3.5"),
        ("about 17 items", "17"),
        ("42%", "42"),
        ("**7**", "7"),
        ("Answer: 12", "12"),
        ('{"answer": 3.5}', "3.5"),
        ('{"answer": "3.5"}', "3.5"),
        ('{"answer": 10}', "10"),
        ("```\n99\n```", "99"),
        ("42 (42)", "42"),
        ("Reasoning: 2 + 2.\nFinal answer: 4", "4"),
    ],
)
def test_number_reads_one_number(raw: str, expected: str) -> None:
    assert NUMBER.parse(raw) == Parsed(ok=True, value=expected)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty reply"),
        ("none", "no number"),
        ("forty-two", "no number"),
        ("3 or 4", "several numbers"),
        ("5-10", "several numbers"),
        ("1,2", "several numbers"),
        ("2 + 2 = 4", "several numbers"),
        ("1.2.3", "no number"),
        ("1e999", "out of range"),
    ],
)
def test_number_refuses_none_or_several(raw: str, reason: str) -> None:
    parsed = NUMBER.parse(raw)
    assert not parsed.ok
    assert parsed.error is not None and reason in parsed.error


def test_number_instruction_and_schema() -> None:
    assert NUMBER.instruction() == "Answer with a single number."
    assert NUMBER.response_schema() == {
        "type": "object",
        "properties": {"answer": {"type": "number"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    assert NUMBER.conservative_rank("1") is None


def test_number_group_without_tolerance_is_identity() -> None:
    values = ["1", "1.5", "2", "1"]
    assert NUMBER.group(values) == {"1": "1", "1.5": "1.5", "2": "2"}


def test_number_group_clusters_within_tolerance_around_the_median() -> None:
    fmt = NumberFormat(tolerance=1)
    values = ["10", "10.5", "11", "10", "20", "25", "25.5", "27"]
    grouped = fmt.group(values)
    # 10, 10, 10.5, 11 form one cluster (all within 1 of 10); its median member is 10.
    assert grouped["10"] == grouped["10.5"] == grouped["11"] == "10"
    assert grouped["20"] == "20"
    # 25 and 25.5 cluster; 27 is more than 1 from 25.
    assert grouped["25"] == grouped["25.5"] == "25"
    assert grouped["27"] == "27"


def test_number_group_median_follows_the_votes() -> None:
    fmt = NumberFormat(tolerance=0.5)
    assert fmt.group(["3", "3.2", "3.2", "3.4"]) == {"3": "3.2", "3.2": "3.2", "3.4": "3.2"}


def test_number_group_is_exact_in_decimal() -> None:
    fmt = NumberFormat(tolerance=0.1)
    grouped = fmt.group(["0.3", "0.4", "0.2"])  # 0.4 - 0.2 > 0.1, 0.3 - 0.2 == 0.1 exactly
    assert grouped == {"0.2": "0.2", "0.3": "0.2", "0.4": "0.4"}


def test_number_group_one_outlier_does_not_split_the_consensus() -> None:
    fmt = NumberFormat(tolerance=0.5)
    # 1 is an outlier: 1.5, 1.6 and 1.6 agree within 0.5 and must count as one vote of three.
    grouped = fmt.group(["1", "1.5", "1.6", "1.6"])
    assert grouped["1.5"] == grouped["1.6"] == "1.6"
    assert grouped["1"] == "1"


def test_number_group_does_not_depend_on_call_order() -> None:
    fmt = NumberFormat(tolerance=1)
    votes = ["9", "10", "10", "10.8", "12", "12.9", "30"]
    first = fmt.grouping(votes)
    for shuffled in (votes[::-1], sorted(votes, key=len), votes[3:] + votes[:3]):
        again = fmt.grouping(shuffled)
        assert again.mapping == first.mapping
        assert again.ambiguous == first.ambiguous


def test_number_group_members_are_within_tolerance_of_each_other() -> None:
    fmt = NumberFormat(tolerance=1)
    grouped = fmt.group(["1", "2", "3"])  # a chain: 1~2 and 2~3, but not 1~3
    assert grouped["1"] != grouped["3"]


def test_number_grouping_flags_a_chain_as_ambiguous() -> None:
    fmt = NumberFormat(tolerance=1)
    chain = fmt.grouping(["1", "2", "3"])
    assert chain.ambiguous is not None
    assert "2" in chain.ambiguous and "3" in chain.ambiguous
    assert "\n" not in chain.ambiguous
    clean = fmt.grouping(["1", "1.5", "5", "5.2"])
    assert clean.ambiguous is None
    assert NumberFormat().grouping(["1", "2"]).ambiguous is None
    assert REGRESSION.grouping(["regression"]).ambiguous is None


# -- json -----------------------------------------------------------------------------------


PERSON = JsonFormat.model_validate({"schema": SCHEMA})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"name": "Ada", "age": 36}', {"name": "Ada", "age": 36}),
        ('{"age":36,"name":"Ada"}', {"name": "Ada", "age": 36}),
        ('```json\n{"name": "Ada", "age": 36}\n```', {"name": "Ada", "age": 36}),
        (
            'Sure! {"name": "Ada", "age": 36, "tags": ["x"]} Done.',
            {"name": "Ada", "age": 36, "tags": ["x"]},
        ),
        ('{"answer": {"name": "Ada", "age": 36}}', {"name": "Ada", "age": 36}),
        ('{not json} then {"name": "Ada", "age": 36}', {"name": "Ada", "age": 36}),
    ],
)
def test_json_reads_an_object(raw: str, expected: dict[str, object]) -> None:
    parsed = PERSON.parse(raw)
    assert parsed.ok
    assert parsed.value == json.dumps(expected, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty reply"),
        ("no json here", "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
        ('{"name": "Ada"}', "'age' is a required property"),
        ('{"name": "Ada", "age": "old"}', "age: 'old' is not of type 'integer'"),
        ('{"name": "Ada", "age": 3, "x": 1}', "Additional properties"),
        ('{"name": "Ada", "age": 3', "not a JSON object"),
    ],
)
def test_json_refuses_what_does_not_match(raw: str, reason: str) -> None:
    parsed = PERSON.parse(raw)
    assert not parsed.ok
    assert parsed.error is not None and reason in parsed.error


def test_json_numbers_compare_as_numbers() -> None:
    one = PERSON.parse('{"name": "Ada", "age": 36}')
    assert PERSON.parse('{"name": "Ada", "age": 36.0}') == one
    assert PERSON.parse('{"age": 3.6e1, "name": "Ada"}') == one
    nested = JsonFormat.model_validate({"schema": {"type": "object"}})
    assert nested.parse('{"a": {"b": [1.0, 2, {"c": -0.0}]}}') == nested.parse(
        '{"a": {"b": [1, 2.0, {"c": 0}]}}'
    )
    assert nested.parse('{"a": 0.5}').value == '{"a":0.5}'


def test_json_booleans_are_not_numbers() -> None:
    anything = JsonFormat.model_validate({"schema": {"type": "object"}})
    assert anything.parse('{"a": true}').value == '{"a":true}'
    assert anything.parse('{"a": true}') != anything.parse('{"a": 1}')
    assert anything.parse('{"a": [false]}') != anything.parse('{"a": [0.0]}')


def test_json_instruction_schema_and_fields() -> None:
    assert (
        PERSON.instruction()
        == f"Answer with a JSON object matching this schema: {json.dumps(SCHEMA)}"
    )
    assert PERSON.response_schema() == SCHEMA
    assert PERSON.schema == SCHEMA
    assert PERSON.model_dump()["schema"] == SCHEMA
    assert parse_format({"kind": "json", "schema": SCHEMA}) == PERSON
    value = PERSON.parse('{"tags": ["b", "a"], "name": "Ada", "age": 36}').value
    assert value is not None
    assert PERSON.fields(value) == {"age": "36", "name": '"Ada"', "tags": '["b","a"]'}
    assert PERSON.fields('{"x": {"b": 1, "a": 2}}') == {"x": '{"a":2,"b":1}'}
    assert PERSON.conservative_rank(value) is None
    assert MISSING not in PERSON.fields(value)


# -- text -----------------------------------------------------------------------------------


def test_text_is_free_and_not_votable() -> None:
    fmt = TextFormat()
    assert not fmt.votable
    assert fmt.parse("  A summary.\n") == Parsed(ok=True, value="A summary.")
    assert not fmt.parse("  \n").ok
    assert fmt.response_schema() is None
    assert fmt.instruction()
    assert all(f.votable for f in (REGRESSION, YESNO, NUMBER, PERSON))
