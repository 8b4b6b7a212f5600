"""The task: prompt rendering, the placeholder rule and the format shorthands."""

from __future__ import annotations

import pytest

from core.errors import InputError
from core.formats import JsonFormat, LabelFormat, NumberFormat, TextFormat, YesNoFormat
from core.task import Task


def test_render_puts_the_instruction_in_the_system_message() -> None:
    task = Task.for_labels(["regression", "no regression"])
    messages = task.render("The header moved 3px.")
    assert messages == [
        {"role": "system", "content": task.format.instruction()},
        {"role": "user", "content": "The header moved 3px."},
    ]
    assert messages[0]["content"].startswith(
        'Answer with exactly one label from this list: ["regression", "no regression"]'
    )


def test_render_system_text_comes_before_the_instruction() -> None:
    task = Task.for_yesno(system="  You review page diffs.  ", template="Diff:\n{input}\nBroken?")
    system, user = task.render("button gone")
    assert system == {"role": "system", "content": "You review page diffs.\n\nAnswer yes or no."}
    assert user == {"role": "user", "content": "Diff:\nbutton gone\nBroken?"}


def test_render_leaves_other_braces_alone() -> None:
    task = Task.for_json(
        {"type": "object"},
        template='Extract like {"name": "..."} from: {input} {{x}} {a: 1} { b }',
    )
    user = task.render("Ada, 36")[1]["content"]
    assert user == 'Extract like {"name": "..."} from: Ada, 36 {{x}} {a: 1} { b }'


@pytest.mark.parametrize("template", ["{input} {unknown}", "{text}: {input}", "{0} {input}"])
def test_a_placeholder_other_than_input_is_refused(template: str) -> None:
    # it would reach the model unfilled, as the literal text "{unknown}"
    with pytest.raises(InputError, match="unknown placeholder"):
        Task.for_yesno(template=template)


def test_render_replaces_every_placeholder_and_keeps_braces_in_the_input() -> None:
    task = Task(format=NumberFormat(), template="{input} / again: {input}")
    assert task.render("{input} {x}")[1]["content"] == "{input} {x} / again: {input} {x}"


def test_blank_system_text_is_left_out() -> None:
    task = Task(format=NumberFormat(), system="   ")
    assert task.render("2+2")[0]["content"] == "Answer with a single number."


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_input_is_an_input_error(text: str) -> None:
    task = Task.for_labels(["a", "b"])
    with pytest.raises(InputError, match="input text is empty"):
        task.render(text)


def test_template_without_placeholder_is_refused_at_construction() -> None:
    with pytest.raises(InputError, match=r"\{input\}"):
        Task(format=TextFormat(), template="Summarise this")
    with pytest.raises(InputError, match=r"\{input\}"):
        Task.from_dict({"template": "{inputs}", "format": {"kind": "text"}})


def test_shorthands_build_the_formats() -> None:
    labels = Task.for_labels(
        ["regression", "no regression"],
        synonyms={"bug": "regression"},
        conservative=["regression"],
        name="regression",
    )
    assert labels.name == "regression"
    assert isinstance(labels.format, LabelFormat)
    assert labels.format.conservative_order == ("regression",)
    assert labels.format.parse("bug").value == "regression"

    yesno = Task.for_yesno(conservative="no")
    assert isinstance(yesno.format, YesNoFormat)
    assert yesno.format.conservative == "no"

    number = Task.for_number(tolerance=0.5)
    assert isinstance(number.format, NumberFormat) and number.format.tolerance == 0.5

    js = Task.for_json({"type": "object", "required": ["a"]})
    assert isinstance(js.format, JsonFormat) and js.format.schema["required"] == ["a"]

    assert isinstance(Task.for_text().format, TextFormat)
    assert Task.for_text().name == "classify"


def test_shorthands_pass_format_errors_through() -> None:
    with pytest.raises(InputError, match="two distinct labels"):
        Task.for_labels(["only"])
    with pytest.raises(InputError, match="not a label"):
        Task.for_labels(["a", "b"], conservative=["c"])


def test_task_round_trips_through_its_stored_form() -> None:
    task = Task.for_json(
        {"type": "object", "properties": {"a": {"type": "integer"}}},
        system="Extract.",
        template="Text: {input}",
        name="extract",
    )
    data = task.model_dump(mode="json")
    assert data["format"] == {
        "kind": "json",
        "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
    }
    assert Task.from_dict(data) == task
    assert Task.model_validate(data) == task


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "format"),
        ({"format": {"kind": "label", "labels": ["a"]}}, "two distinct labels"),
        ({"format": {"kind": "poem"}}, "poem"),
        ({"format": {"kind": "text"}, "colour": "red"}, "colour"),
        ({"format": {"kind": "text"}, "template": 3}, "template"),
    ],
)
def test_from_dict_gives_one_line_input_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as info:
        Task.from_dict(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_task_is_frozen() -> None:
    task = Task.for_text()
    with pytest.raises(Exception, match="frozen"):
        task.name = "other"  # type: ignore[misc]
