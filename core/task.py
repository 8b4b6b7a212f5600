"""The task: what every slot of a run is asked, and in which answer format.

The prompt is the template with ``{input}`` filled in by plain replacement, so a template may
hold other braces (JSON examples, code) without escaping; the format's instruction goes into
the system message, after the task's own system text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, field_validator

from core.errors import InputError, not_a_string
from core.formats import (
    AnswerFormat,
    JsonFormat,
    LabelFormat,
    NumberFormat,
    TextFormat,
    YesNoFormat,
)
from core.refusal import Refusing

PLACEHOLDER = "{input}"
_PLACEHOLDER_LIKE = re.compile(r"(?<!\{)\{(?:[A-Za-z_][A-Za-z0-9_.]*|\d+)\}(?!\})")
"""What reads as a placeholder: a name or a number alone in braces (``{name}``, ``{0}``). JSON
(``{"label": "a"}``), code (``{ return x; }``) and doubled braces (``{{x}}``) never match."""


class Task(Refusing):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "classify"
    template: str = PLACEHOLDER
    system: str | None = None
    format: AnswerFormat

    @field_validator("template")
    @classmethod
    def _has_placeholder(cls, template: str) -> str:
        if PLACEHOLDER not in template:
            raise InputError(f"the prompt template must contain {PLACEHOLDER}")
        for match in _PLACEHOLDER_LIKE.finditer(template):
            if match.group() != PLACEHOLDER:
                raise InputError(
                    f"unknown placeholder {match.group()} in the prompt template: "
                    f"only {PLACEHOLDER} is filled in"
                )
        return template

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """A task from its stored or configured form; any problem is one InputError line."""
        return cls.model_validate(dict(data))  # Refusing: a bad field is "bad task: ..."

    def render(self, input_text: str) -> list[dict[str, str]]:
        """The messages of one call: system (task text, then format instruction) and user."""
        if not input_text.strip():
            raise InputError("input text is empty")
        parts = [self.system.strip()] if self.system and self.system.strip() else []
        parts.append(self.format.instruction())
        return [
            {"role": "system", "content": "\n\n".join(parts)},
            {"role": "user", "content": self.template.replace(PLACEHOLDER, input_text)},
        ]

    # -- shorthands for the common formats ---------------------------------------------------

    @classmethod
    def for_labels(
        cls,
        labels: Sequence[str],
        *,
        synonyms: Mapping[str, str] | None = None,
        conservative: Sequence[str] = (),
        **kwargs: Any,
    ) -> Task:
        """A closed-label task; ``conservative`` lists labels most conservative first."""
        not_a_string(labels, "labels")
        not_a_string(conservative, "conservative")
        fmt = LabelFormat(
            labels=tuple(labels),
            synonyms=dict(synonyms or {}),
            conservative_order=tuple(conservative),
        )
        return cls(format=fmt, **kwargs)

    @classmethod
    def for_yesno(
        cls,
        *,
        conservative: Literal["yes", "no"] | None = None,
        synonyms: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Task:
        fmt = YesNoFormat(conservative=conservative, synonyms=dict(synonyms or {}))
        return cls(format=fmt, **kwargs)

    @classmethod
    def for_number(cls, *, tolerance: float = 0.0, **kwargs: Any) -> Task:
        return cls(format=NumberFormat(tolerance=tolerance), **kwargs)

    @classmethod
    def for_json(cls, schema: Mapping[str, Any], **kwargs: Any) -> Task:
        if not isinstance(schema, Mapping):
            raise InputError(f"a JSON task needs a schema object, not {type(schema).__name__}")
        return cls(format=JsonFormat.model_validate({"schema": dict(schema)}), **kwargs)

    @classmethod
    def for_text(cls, **kwargs: Any) -> Task:
        return cls(format=TextFormat(), **kwargs)
