"""What each kind of job asks, as the ``spec`` JSON its row keeps.

A spec names everything its executor needs and nothing it can read from the store: a batch's
inputs live in its batch row (written at submission, so it is listed at once and a resume
needs no file), so a batch job names only the batch. Any executor on any host can run a job
from its spec and the store alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import InputError
from core.formats import validation_reason
from core.jobs.model import JobKind
from core.policy import Policy
from core.spec import RunSpec


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VoteSpec(_Spec):
    """One input through one run spec; ``run_id`` is chosen at submission so the page can
    point at the run before it starts."""

    run_id: str
    input: str
    spec: dict[str, Any]
    source: str = "ui"
    submitted_by: str | None = None  # kept on the run too (``core.auth.Identity.to_json``)

    def run_spec(self) -> RunSpec:
        return RunSpec.from_json(self.spec)


class BatchSpec(_Spec):
    """A batch already stored (``Store.create_batch``): run what it has not finished."""

    batch_id: str


class CurveSpec(_Spec):
    """A curve draw: its batch (stored at submission), then the curve of it."""

    batch_id: str
    set_name: str
    ns: list[int]
    panels: list[list[str]] = Field(default_factory=list)
    seed: int = 0
    min_gain: float
    params: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(_Spec):
    """A throughput sweep of one model, or of a sim server in a demo mode."""

    model: str | None = None
    levels: list[int]
    calls_per_level: int
    demo: str | None = None


class RevoteSpec(_Spec):
    """Stored runs decided again (``policy`` None: each run's own)."""

    run_ids: list[str]
    policy: dict[str, Any] | None = None
    expand: bool = False

    def parsed_policy(self) -> Policy | None:
        return None if self.policy is None else Policy.model_validate(self.policy)


SPECS: dict[JobKind, type[_Spec]] = {
    JobKind.VOTE: VoteSpec,
    JobKind.BATCH: BatchSpec,
    JobKind.CURVE: CurveSpec,
    JobKind.SWEEP: SweepSpec,
    JobKind.REVOTE: RevoteSpec,
}


def parse_spec(kind: JobKind, data: Mapping[str, Any]) -> Any:
    """The spec of a ``kind`` job from its JSON; a problem is one InputError line."""
    try:
        return SPECS[kind].model_validate(dict(data))
    except ValidationError as err:
        raise InputError(f"bad {kind} job spec: {validation_reason(err)}") from None
