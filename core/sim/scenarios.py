"""Panels built to test learned reliability: one where it should win, one where it should not.

Each scenario is a panel of simulated models (outside the served catalogue) and a label set.
Its items are hashed inputs (``scenario item 00042``), so gold and difficulty come from the
text as for any input the sim does not bundle, and every answer is ``core.sim.simulate``'s:
pure and the same for the same seed.

- ``uneven``: one strong model, one confident model leaning hard to ``bug``, and three weak
  models of one family that err together. Majority lets the family outvote the strong model;
  a fit that learns who is reliable should not.
- ``homogeneous``: five models alike in accuracy, with no lean and no family. Every model
  deserves the same weight, so learning weights has nothing to gain over majority.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from core.sim.answers import SimReply, simulate
from core.sim.models import SimModel

_PLAIN = {
    "latency_median_ms": 400.0,
    "latency_p95_ms": 1200.0,
    "ttft_ms": 100.0,
    "tokens_out": 20,
    "price_in": 0.1,
    "price_out": 0.4,
}


def _model(name: str, accuracy: float, **quirks: object) -> SimModel:
    return SimModel(name=name, accuracy=accuracy, **{**_PLAIN, **quirks})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Scenario:
    """A simulated panel, its labels, and what learned reliability should do on it."""

    name: str
    description: str
    labels: tuple[str, ...]
    panel: tuple[SimModel, ...]
    learned_should_win: bool

    def item_text(self, index: int) -> str:
        return f"scenario item {index:05d}"

    def answers(self, items: int, seed: int = 0) -> Iterator[tuple[str, list[SimReply]]]:
        """Per item its text and one reply of every panel model, in panel order."""
        for index in range(items):
            text = self.item_text(index)
            yield (
                text,
                [
                    simulate(model, text, list(self.labels), {"kind": "label"}, 0, seed)
                    for model in self.panel
                ],
            )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="uneven",
            description="a strong model, a confident biased one, three weak ones of one family",
            labels=("bug", "feature", "question"),
            panel=(
                _model("uneven-strong", 0.93, consistency=0.2),
                _model("uneven-biased", 0.8, prefers="bug", bias=0.8),
                *(
                    _model(
                        f"uneven-weak-{i}",
                        0.6,
                        family="weak",
                        family_share=0.15,
                        consistency=0.1,
                    )
                    for i in (1, 2, 3)
                ),
            ),
            learned_should_win=True,
        ),
        Scenario(
            name="homogeneous",
            description="five models alike: same accuracy, no lean, no family",
            labels=("yes", "no"),
            panel=tuple(_model(f"homogeneous-{i}", 0.75, consistency=0.3) for i in range(1, 6)),
            learned_should_win=False,
        ),
    )
}

SCENARIO_MODELS: dict[str, SimModel] = {m.name: m for s in SCENARIOS.values() for m in s.panel}
"""Every scenario's models by name: the sim serves them next to its catalogue, so a stored
scenario batch can be re-voted, escalated or run again like any other."""
