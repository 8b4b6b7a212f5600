"""What ran, exactly: a run's task, panel and policy as one frozen value.

The engine, the store, the batch, the re-vote and the pages pass this one object instead of
three, so nothing that changes how a run is called or decided can be dropped on the way:
the task (format, labels, synonyms, template, system), the panel (every model with its
params and weight, and N) and the policy (aggregation, quorum, early stop, tie-break chain).
Its JSON form is what the store keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import InputError
from core.formats import validation_reason
from core.panel import Panel
from core.policy import Policy
from core.task import Task


class RunSpec(BaseModel):
    """One input's whole recipe: ask ``task`` of every slot of ``panel``, decide by ``policy``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task
    panel: Panel
    policy: Policy

    def to_json(self) -> dict[str, Any]:
        """The stored form; :meth:`from_json` reads it back to an equal spec."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSpec:
        """A spec from its stored form; any problem is one InputError line.

        Runs stored before the whole panel was kept hold only the model name of every slot:
        each model then reads back with weight 1 and no params (what they ran with is lost).
        """
        if not isinstance(data, Mapping):
            raise InputError("a run spec must be an object with task, panel and policy")
        fields = dict(data)
        panel = fields.get("panel")
        if isinstance(panel, Sequence) and not isinstance(panel, str):
            fields["panel"] = panel_from_names(panel)
        try:
            return cls.model_validate(fields)
        except ValidationError as err:
            raise InputError(f"bad run spec: {validation_reason(err)}") from None

    @property
    def slot_names(self) -> list[str]:
        """The model name of every slot of the panel, in slot order."""
        return [s.model.name for s in self.panel.slots()]


def panel_from_names(names: Sequence[str]) -> Panel:
    """The panel a list of slot names describes (the stored form of older runs): the distinct
    models in order, round-robin over ``len(names)`` slots, weight 1 and no params each."""
    return Panel.build(list(dict.fromkeys(names)), len(names))
