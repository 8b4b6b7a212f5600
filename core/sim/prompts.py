"""Reading a chat request the way the simulated model needs it: what is the input, and what
answers are allowed.

The allowed answers come from the request itself, as a real model would take them: the enum of
``response_format``'s ``answer`` property when there is one, else the instruction the answer
formats write (``Answer with exactly one label from this list: [...]``, ``Answer yes or no.``,
``Answer with a single number.``, ``Answer with a JSON object matching this schema: {...}``).

The input is the user message. When a prompt template wraps a bundled item, the item is found
inside the message (the whole message, then each paragraph, then each line, then a scan of the
bundled sets), so a templated run on a bundled set is still scored against its gold. Lookups
are cached: a batch asks about the same few hundred messages again and again.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from core.sim.answers import estimate_tokens
from core.sim.items import find_bundled

_LABELS = re.compile(r"Answer with exactly one label from this list:\s*(?=\[)")
_YESNO = re.compile(r"Answer yes or no\.?")
_NUMBER = re.compile(r"Answer with a single number\.?")
_JSON = re.compile(r"Answer with a JSON object matching this schema:\s*(?=\{)")
_TEXT = re.compile(r"Answer in plain text\.?")
_REPLY_ONLY = re.compile(r"Reply with the label only\.?")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class SimPrompt:
    """What a chat request asks: the input ``text``, the allowed ``labels`` (label and yes/no
    formats) and the ``fmt_hint`` for ``core.sim.answers.simulate``; ``prompt_tokens``
    estimated from every message."""

    text: str
    labels: tuple[str, ...] | None
    kind: str
    structured: bool
    schema: dict[str, Any] | None
    prompt_tokens: int

    @property
    def fmt_hint(self) -> dict[str, Any]:
        return {"kind": self.kind, "structured": self.structured, "schema": self.schema}


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return ""


def _decode_at(text: str, start: int) -> tuple[Any, int] | None:
    try:
        value, end = _DECODER.raw_decode(text, start)
    except ValueError:
        return None
    return value, end


def _instruction(text: str) -> tuple[str, tuple[str, ...] | None, dict[str, Any] | None, str]:
    """The format an instruction in ``text`` asks for: (kind, labels, schema, text without the
    instruction)."""
    match = _LABELS.search(text)
    if match:
        decoded = _decode_at(text, match.end())
        if decoded and isinstance(decoded[0], list) and decoded[0]:
            labels = tuple(str(label) for label in decoded[0])
            rest = text[: match.start()] + text[decoded[1] :]
            return "label", labels, None, _REPLY_ONLY.sub("", rest)
    match = _JSON.search(text)
    if match:
        decoded = _decode_at(text, match.end())
        if decoded and isinstance(decoded[0], dict):
            return "json", None, decoded[0], text[: match.start()] + text[decoded[1] :]
    simple: tuple[tuple[re.Pattern[str], str, tuple[str, ...] | None], ...] = (
        (_YESNO, "yesno", ("yes", "no")),
        (_NUMBER, "number", None),
        (_TEXT, "text", None),
    )
    for pattern, kind, fixed in simple:
        match = pattern.search(text)
        if match:
            return kind, fixed, None, text[: match.start()] + text[match.end() :]
    return "text", None, None, text


def _from_response_format(
    response_format: Any,
) -> tuple[str, tuple[str, ...] | None, dict[str, Any] | None] | None:
    """The format a ``response_format`` asks for, when it says enough on its own."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return None
    props = schema.get("properties")
    answer = props.get("answer") if isinstance(props, dict) else None
    if isinstance(props, dict) and isinstance(answer, dict) and set(props) == {"answer"}:
        enum = answer.get("enum")
        if isinstance(enum, list) and enum:
            labels = tuple(str(v) for v in enum)
            kind = "yesno" if {v.casefold() for v in labels} == {"yes", "no"} else "label"
            return kind, labels, None
        if answer.get("type") in ("number", "integer"):
            return "number", None, None
        if answer.get("type") == "string":
            return None  # free or instructed: the instruction decides
    return "json", None, schema


@lru_cache(maxsize=1)
def _bundled_texts() -> tuple[str, ...]:
    """Every bundled item's text, longest first, for the containment scan (empty when the
    datasets module is absent or does not list its sets)."""
    try:
        module = importlib.import_module("core.datasets")
    except ImportError:
        return ()
    names_fn = getattr(module, "set_names", None) or getattr(module, "list_sets", None)
    load = getattr(module, "load_set", None)
    if names_fn is None or load is None:
        return ()
    texts: list[str] = []
    for name in names_fn():
        labelled_set = load(name if isinstance(name, str) else getattr(name, "name", name))
        texts.extend(str(item.text) for item in getattr(labelled_set, "items", ()))
    return tuple(sorted(set(texts), key=len, reverse=True))


@lru_cache(maxsize=8192)
def find_input(message: str) -> str:
    """The bundled item's text when ``message`` holds one, else the message itself, stripped."""
    stripped = message.strip()
    if find_bundled(stripped) is not None:
        return stripped
    candidates = [p.strip() for p in re.split(r"\n\s*\n", stripped)]
    candidates += [line.strip() for line in stripped.splitlines()]
    for candidate in candidates:
        if candidate and candidate != stripped and find_bundled(candidate) is not None:
            return candidate
    for text in _bundled_texts():
        if len(text) >= 12 and text in stripped:
            return text
    return stripped


def read_prompt(messages: list[dict[str, Any]], response_format: Any = None) -> SimPrompt:
    """The input and the allowed answers of a chat request."""
    system = "\n".join(message_text(m.get("content")) for m in messages if m.get("role") != "user")
    users = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    user = users[-1] if users else ""
    prompt_tokens = sum(estimate_tokens(message_text(m.get("content"))) for m in messages)

    structured = isinstance(response_format, dict) and response_format.get("type") in (
        "json_schema",
        "json_object",
    )
    from_schema = _from_response_format(response_format)
    kind, labels, schema, _ = _instruction(system)
    user_kind, user_labels, user_schema, user_rest = _instruction(user)
    if kind == "text" and user_kind != "text":
        kind, labels, schema = user_kind, user_labels, user_schema
    if user_kind != "text" or _TEXT.search(user):
        user = user_rest
    if from_schema is not None:
        kind = from_schema[0]
        labels = from_schema[1] if kind in ("label", "yesno") else None
        schema = from_schema[2] if kind == "json" else None
    return SimPrompt(
        text=find_input(user),
        labels=labels,
        kind=kind,
        structured=structured,
        schema=schema,
        prompt_tokens=prompt_tokens,
    )
