"""One module per wire protocol (``openai``: OpenAI-compatible chat completions, ``anthropic``:
the Messages API) and a ``registry`` that builds them from ``tally.toml``.

This package module only holds the small pieces both protocols share; import the protocols
from their modules (``core.providers.openai``...) so that loading one does not load all.
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import ProviderError

ANSWER_TOOL = "answer"
"""Name of the structured-output schema (OpenAI ``json_schema.name``, Anthropic tool name)."""


def object_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A schema both APIs accept at the root, and whether it had to be wrapped.

    Structured output needs an object at the root (OpenAI strict mode, Anthropic tool input);
    a format asking for a bare enum or number is wrapped as ``{"answer": ...}`` and unwrapped
    again by ``unwrap_answer``, so formats need not know.
    """
    if schema.get("type") == "object":
        return schema, False
    wrapped = {
        "type": "object",
        "properties": {ANSWER_TOOL: schema},
        "required": [ANSWER_TOOL],
        "additionalProperties": False,
    }
    return wrapped, True


def unwrap_answer(text: str, wrapped: bool) -> str:
    """The JSON text of the inner value when the schema was wrapped; ``text`` unchanged when it
    was not, or when the reply does not have the wrapped shape (the format then judges it)."""
    if not wrapped:
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and set(data) == {ANSWER_TOOL}:
        return json.dumps(data[ANSWER_TOOL])
    return text


def split_evenly(total: int | None, parts: int) -> list[int | None]:
    """``total`` tokens over ``parts`` samples, summing exactly (earlier parts take the rest).

    Endpoints report one ``completion_tokens`` for all ``n`` samples; an even split keeps the
    run's total right, and each sample's share is an estimate."""
    if parts < 1:
        return []
    if total is None:
        return [None] * parts
    share, rest = divmod(total, parts)
    return [share + (1 if i < rest else 0) for i in range(parts)]


def as_count(value: Any) -> int | None:
    """A token count from a reply, or ``None`` when it is missing or not an integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def model_ids(data: Any, host: str) -> list[str]:
    """Ids from a ``{"data": [{"id": ...}]}`` listing (OpenAI, Anthropic, most servers)."""
    items = data.get("data", data.get("models")) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ProviderError(f"model list from {host} is not in the expected shape")
    ids = [
        str(item.get("id") or item.get("name"))
        for item in items
        if isinstance(item, dict) and (item.get("id") or item.get("name"))
    ]
    return sorted(set(ids))
