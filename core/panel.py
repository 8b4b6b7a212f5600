"""The panel: which models a run fans out to, and how the N slots are laid over them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import InputError, not_a_string

MAX_N = 64
"""More votes than this is almost surely a typo; the handbook's curve is flat long before."""


class ModelSpec(BaseModel):
    """A model named ``provider:model``, with request params and a vote weight."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    @classmethod
    def parse(cls, spec: str, **kwargs: Any) -> ModelSpec:
        """Parse ``provider:model`` (the model part may itself contain ``:``, as Ollama tags do).

        A trailing ``*W`` sets the weight: ``openai:gpt-4.1*2``.
        """
        text = spec.strip()
        weight = kwargs.pop("weight", 1.0)
        if "*" in text:
            text, _, w = text.rpartition("*")
            try:
                weight = float(w)
            except ValueError:
                raise InputError(f"bad weight in model spec {spec!r}: {w!r}") from None
            if weight <= 0:
                raise InputError(f"weight must be positive in model spec {spec!r}")
        provider, sep, model = text.partition(":")
        if not sep or not provider or not model:
            raise InputError(f"model must be named provider:model, got {spec!r}")
        return cls(provider=provider.strip(), model=model.strip(), weight=weight, **kwargs)

    def __str__(self) -> str:
        return self.name


class Slot(BaseModel):
    """One of the N places of a run: a model and which sample of that model it is."""

    model_config = ConfigDict(frozen=True)

    index: int
    model: ModelSpec
    sample: int = 0


class Panel(BaseModel):
    """Models and N. One model with N>1 means N samples of it; several models share N round-robin.

    With several models and no explicit N, each model gets one slot.
    """

    model_config = ConfigDict(frozen=True)

    models: tuple[ModelSpec, ...]
    n: int

    @classmethod
    def build(cls, models: list[ModelSpec] | list[str], n: int | None = None) -> Panel:
        not_a_string(models, "models")
        specs = [m if isinstance(m, ModelSpec) else ModelSpec.parse(m) for m in models]
        if not specs:
            raise InputError("choose at least one model")
        count = len(specs) if n is None else n
        if count < 1:
            raise InputError(f"N must be at least 1, got {count}")
        if count > MAX_N:
            raise InputError(f"N={count} is more than the limit of {MAX_N} votes per run")
        return cls(models=tuple(specs), n=count)

    def slots(self, start: int = 0, count: int | None = None) -> list[Slot]:
        """Slots ``start .. start+count``; later slots continue the round-robin (used by expand)."""
        total = self.n if count is None else count
        seen: dict[str, int] = {}
        out: list[Slot] = []
        for i in range(start + total):
            spec = self.models[i % len(self.models)]
            sample = seen.get(spec.name, 0)
            seen[spec.name] = sample + 1
            if i >= start:
                out.append(Slot(index=i, model=spec, sample=sample))
        return out

    @property
    def weights(self) -> dict[str, float]:
        return {m.name: m.weight for m in self.models}
