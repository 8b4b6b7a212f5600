"""The policy of a run: how votes are aggregated, what makes a quorum, when to stop early,
and the tie-break chain. Declared up front and stored with the run, so a decision can be
explained and re-voted later."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from core.errors import PolicyError
from core.panel import ModelSpec
from core.refusal import Refusing


class _PolicyPart(Refusing):
    """A bad field of a policy, built by hand, is a PolicyError of one line."""

    refusal = PolicyError


class Aggregation(StrEnum):
    MAJORITY = "majority"  # plurality: the most votes wins, ties are ties
    STRICT = "strict"  # more than half of the counted votes
    AT_LEAST = "at-least"  # at least k votes for the winner
    WEIGHTED = "weighted"  # plurality over per-model weights
    UNANIMOUS = "unanimous"  # every counted vote agrees
    FASTEST = "fastest"  # the first acceptable answer wins, the rest are cancelled


class Quorum(_PolicyPart):
    """When a count is good enough to decide on.

    ``min_valid``: fewer valid votes than this and the run is ``failed``. ``None`` is the
    aggregation's default (docs/decisions.md): half the panel, rounded up, for strict majority
    and unanimity, so one valid vote of five never decides them; 1 for the others.
    ``count_invalid`` / ``count_errors``: whether invalid replies and failed calls count in the
    denominator of strict majority and unanimity (a failed call then works as a vote against).
    """

    model_config = ConfigDict(frozen=True)

    min_valid: int | None = None
    count_invalid: bool = False
    count_errors: bool = False


TieBreakKind = Literal["escalate", "expand", "conservative", "human", "abstain"]


class TieBreak(_PolicyPart):
    """One branch of the chain. ``escalate`` asks ``model``; ``expand`` draws ``k`` more votes;
    ``human`` sends the run to one reviewer, or with ``k`` = 2 (``human:2``) to two who decide
    blind (docs/decisions.md)."""

    model_config = ConfigDict(frozen=True)
    noun = "tie-break"

    kind: TieBreakKind
    model: ModelSpec | None = None
    k: int | None = None

    @model_validator(mode="after")
    def _check(self) -> TieBreak:
        if self.kind == "escalate" and self.model is None:
            raise PolicyError("escalate needs a model: escalate:provider:model")
        if self.kind == "expand" and (self.k is None or self.k < 1):
            raise PolicyError("expand needs a positive number of votes: expand:2")
        if self.kind == "human" and self.k not in (None, 2):
            raise PolicyError("human takes one reviewer (human) or two blind ones (human:2)")
        return self

    @classmethod
    def parse(cls, text: str) -> TieBreak:
        kind, _, arg = text.strip().partition(":")
        if kind == "escalate":
            if not arg:
                raise PolicyError("escalate needs a model: escalate:provider:model")
            return cls(kind="escalate", model=ModelSpec.parse(arg))
        if kind == "expand":
            try:
                return cls(kind="expand", k=int(arg or "2"))
            except ValueError:
                raise PolicyError(f"expand takes a number of votes, got {arg!r}") from None
        if kind in ("conservative", "human", "abstain") and not arg:
            return cls(kind=kind)
        if kind == "human" and arg == "2":
            return cls(kind="human", k=2)
        if kind == "human":
            raise PolicyError(
                f"human takes one reviewer (human) or two blind ones (human:2), not {arg!r}"
            )
        raise PolicyError(
            f"unknown tie-break {text!r}: "
            "use escalate:MODEL, expand:K, conservative, human, human:2, abstain "
            f"(and the trigger {TRIGGER}:C)"
        )

    @classmethod
    def parse_chain(cls, text: str | None) -> tuple[TieBreak, ...]:
        if not text or not text.strip():
            return ()
        return tuple(cls.parse(part) for part in text.split(",") if part.strip())

    def __str__(self) -> str:
        if self.kind == "escalate":
            return f"escalate:{self.model}"
        if self.kind == "expand":
            return f"expand:{self.k}"
        if self.kind == "human" and self.k == 2:
            return "human:2"
        return self.kind


TRIGGER = "escalate-below"
"""The chain's trigger: ``escalate-below:0.8`` also opens decided votes whose confidence is
below 0.8, so low-confidence majorities go through the chain too, not only exact ties."""


def split_trigger(parts: Sequence[str]) -> tuple[float | None, list[str]]:
    """The confidence an ``escalate-below:C`` part of a tie-break chain names (None without
    one), and the chain's branches without it."""
    below: float | None = None
    rest: list[str] = []
    for part in parts:
        kind, _, arg = part.strip().partition(":")
        if kind != TRIGGER:
            rest.append(part)
            continue
        if below is not None:
            raise PolicyError(f"{TRIGGER} is given twice in one tie-break chain")
        try:
            below = float(arg)
        except ValueError:
            raise PolicyError(
                f"{TRIGGER} takes a confidence between 0 and 1: {TRIGGER}:0.8, got {arg!r}"
            ) from None
        check_trigger(below)
    return below, rest


def check_trigger(below: float) -> None:
    """A trigger confidence is strictly between 0 and 1 (at 1 every decision would open)."""
    if not 0.0 < below < 1.0 or below != below:
        raise PolicyError(
            f"{TRIGGER} takes a confidence between 0 and 1 (exclusive), got {below:g}"
        )


class Acceptance(_PolicyPart):
    """What makes an answer acceptable for fastest-acceptable: all given checks must pass."""

    model_config = ConfigDict(frozen=True)

    regex: str | None = None
    json_schema: dict[str, Any] | None = None
    labels: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> Acceptance:
        """``regex:PATTERN``, ``labels:a,b`` or ``schema:{...json...}``."""
        import json
        import re

        kind, _, arg = text.partition(":")
        if kind == "regex":
            try:
                re.compile(arg)
            except re.error as err:
                raise PolicyError(f"bad acceptance regex {arg!r}: {err}") from None
            return cls(regex=arg)
        if kind == "labels":
            labels = tuple(x.strip() for x in arg.split(",") if x.strip())
            if not labels:
                raise PolicyError("accepting labels needs at least one label")
            return cls(labels=labels)
        if kind == "schema":
            try:
                schema = json.loads(arg)
            except json.JSONDecodeError as err:
                raise PolicyError(f"the acceptance schema is not valid JSON: {err.msg}") from None
            return cls(json_schema=schema)
        raise PolicyError(
            f"unknown acceptance rule {text!r}: use regex:..., labels:a,b or schema:{{...}}"
        )


class Policy(_PolicyPart):
    model_config = ConfigDict(frozen=True)

    aggregation: Aggregation = Aggregation.MAJORITY
    k: int | None = None  # for at-least
    quorum: Quorum = Field(default_factory=Quorum)
    early_stop: bool = False
    tie_breaks: tuple[TieBreak, ...] = ()
    accept: Acceptance | None = None
    hedge_delay_s: float = 0.0  # fastest: start slot i after i * delay unless an answer came
    escalate_below: float | None = None  # a decided vote below this confidence is open too
    # a learned re-vote's fitted posterior of this run (label -> probability): it decides
    # instead of the count (docs/decisions.md row 16), so a re-vote under the run's own
    # policy decides as the learned re-vote did
    posterior: dict[str, float] | None = None

    @model_validator(mode="after")
    def _check(self) -> Policy:
        if self.aggregation == Aggregation.AT_LEAST and (self.k is None or self.k < 1):
            raise PolicyError("at least k votes needs k of 1 or more")
        if self.hedge_delay_s < 0:
            raise PolicyError("hedge delay cannot be negative")
        if self.quorum.min_valid is not None and self.quorum.min_valid < 0:
            raise PolicyError("minimum valid votes cannot be negative")
        if self.escalate_below is not None:
            check_trigger(self.escalate_below)
        if self.posterior is not None:
            if self.aggregation == Aggregation.FASTEST:
                raise PolicyError("a learned posterior decides a vote: not fastest-acceptable")
            if not self.posterior or not all(0.0 <= p <= 1.0 for p in self.posterior.values()):
                raise PolicyError("a learned posterior needs labels with probabilities in [0, 1]")
        return self

    @staticmethod
    def parse_aggregation(text: str) -> tuple[Aggregation, int | None]:
        name, _, arg = text.strip().partition(":")
        try:
            agg = Aggregation(name)
        except ValueError:
            choices = ", ".join(a.value for a in Aggregation)
            raise PolicyError(f"unknown aggregation {text!r}: use one of {choices}") from None
        if agg == Aggregation.AT_LEAST:
            try:
                return agg, int(arg)
            except ValueError:
                raise PolicyError("at-least needs a number: at-least:3") from None
        if arg:
            raise PolicyError(f"aggregation {name} takes no argument")
        return agg, None

    def describe(self) -> str:
        agg = f"at-least:{self.k}" if self.aggregation == Aggregation.AT_LEAST else self.aggregation
        parts = [str(t) for t in self.tie_breaks]
        if self.escalate_below is not None:
            parts.insert(0, f"{TRIGGER}:{self.escalate_below:g}")
        learned = " by the learned posterior" if self.posterior is not None else ""
        return f"{agg}{learned}; tie-break {','.join(parts) or 'none'}"
