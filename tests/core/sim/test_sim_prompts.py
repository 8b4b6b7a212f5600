"""Reading a chat request: the allowed answers from the request, the input inside a template."""

from __future__ import annotations

import json

from core.datasets import EXTRACTION_SCHEMA, load_set
from core.formats import JsonFormat, LabelFormat, NumberFormat, YesNoFormat
from core.sim.prompts import read_prompt
from core.task import Task


def chat(system: str, user: str) -> list[dict[str, object]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_label_instruction_gives_the_labels_and_the_input() -> None:
    fmt = LabelFormat(labels=("spam", "ham", "not sure"))
    prompt = read_prompt(chat(fmt.instruction(), "Win a prize now!"))
    assert prompt.labels == ("spam", "ham", "not sure")
    assert prompt.kind == "label" and not prompt.structured
    assert prompt.text == "Win a prize now!"
    assert prompt.prompt_tokens > 0


def test_instruction_may_sit_in_the_user_message() -> None:
    instruction = YesNoFormat().instruction()
    prompt = read_prompt([{"role": "user", "content": f"Is the sky green?\n\n{instruction}"}])
    assert prompt.kind == "yesno" and prompt.labels == ("yes", "no")
    assert prompt.text == "Is the sky green?"


def test_number_json_and_text_instructions() -> None:
    number = read_prompt(chat(NumberFormat().instruction(), "How many legs has a spider?"))
    assert number.kind == "number" and number.labels is None
    extraction = read_prompt(chat(JsonFormat(schema=EXTRACTION_SCHEMA).instruction(), "2 mugs"))
    assert extraction.kind == "json" and extraction.schema == EXTRACTION_SCHEMA
    free = read_prompt(chat("Be brief.", "Describe the weather."))
    assert free.kind == "text" and free.labels is None


def test_response_format_enum_wins_and_asks_for_json() -> None:
    fmt = LabelFormat(labels=("a", "b"))
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": fmt.response_schema(), "strict": True},
    }
    prompt = read_prompt(chat("Classify.", "some input"), response_format)
    assert prompt.labels == ("a", "b") and prompt.structured
    yesno = read_prompt(
        chat("", "x"),
        {"type": "json_schema", "json_schema": {"schema": YesNoFormat().response_schema()}},
    )
    assert yesno.kind == "yesno"
    number = read_prompt(
        chat("", "x"),
        {"type": "json_schema", "json_schema": {"schema": NumberFormat().response_schema()}},
    )
    assert number.kind == "number" and number.structured
    whole = read_prompt(
        chat("", "x"), {"type": "json_schema", "json_schema": {"schema": EXTRACTION_SCHEMA}}
    )
    assert whole.kind == "json" and whole.schema == EXTRACTION_SCHEMA


def test_a_bundled_item_is_found_inside_its_sets_template() -> None:
    for name in ("regression", "tickets", "extraction"):
        labelled = load_set(name)
        task = Task.from_dict({"template": labelled.template, "format": labelled.format})
        for item in labelled.items[:20]:
            messages = task.render(item.text)
            prompt = read_prompt(messages)
            assert prompt.text == item.text


def test_a_bundled_item_is_found_inside_a_foreign_template() -> None:
    item = load_set("regression").items[5]
    prompt = read_prompt(chat("", f"Please judge this: «{item.text}» Thanks."))
    assert prompt.text == item.text


def test_content_parts_are_read() -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {}}]
    prompt = read_prompt([{"role": "user", "content": parts}])
    assert prompt.text == "hello"


def test_a_broken_instruction_falls_back_to_free_text() -> None:
    prompt = read_prompt(chat("Answer with exactly one label from this list: [oops", "x"))
    assert prompt.kind == "text"
    assert json.dumps(prompt.fmt_hint)  # plain data
