"""The facade's builders: a form's tie-break choices become the chain ``build_policy`` reads."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from core.api import Tally, build_policy, tie_break_chain
from core.errors import PolicyError
from core.panel import ModelSpec
from core.policy import TieBreak


def test_the_chain_keeps_the_order_chosen_and_fills_in_the_arguments() -> None:
    chain = tie_break_chain(
        ["expand", "escalate", "conservative", "human", "abstain"],
        escalate_to="sim:sim-oracle",
        expand_by=3,
    )
    assert chain == ["expand:3", "escalate:sim:sim-oracle", "conservative", "human", "abstain"]
    assert build_policy(tie_break=chain).tie_breaks == (
        TieBreak(kind="expand", k=3),
        TieBreak(kind="escalate", model=ModelSpec.parse("sim:sim-oracle")),
        TieBreak(kind="conservative"),
        TieBreak(kind="human"),
        TieBreak(kind="abstain"),
    )


def test_no_choice_is_no_chain() -> None:
    assert tie_break_chain([]) == []
    assert build_policy(tie_break=tie_break_chain([])).tie_breaks == ()


def test_expand_draws_two_more_votes_unless_told() -> None:
    assert tie_break_chain(["expand"]) == ["expand:2"]


@pytest.mark.parametrize("escalate_to", [None, ""])
def test_escalate_without_a_model_is_refused_by_the_policy(escalate_to: str | None) -> None:
    chain = tie_break_chain(["escalate"], escalate_to=escalate_to)
    with pytest.raises(PolicyError, match="escalate needs a model"):
        build_policy(tie_break=chain)


def test_expand_by_zero_is_refused_by_the_policy() -> None:
    with pytest.raises(PolicyError, match="expand needs a positive number"):
        build_policy(tie_break=tie_break_chain(["expand"], expand_by=0))


def test_defaults_n_of_the_config_is_the_n_of_a_panel_that_names_none(tmp_path: Path) -> None:
    config = tmp_path / "tally.toml"
    config.write_text("[defaults]\nn = 3\n")

    async def panels(path: Path | None) -> tuple[int, int, int]:
        async with Tally.open(config=path, persist=False) as tally:
            return (
                tally.panel(["sim:sim-strong"]).n,
                tally.panel(["sim:sim-strong"], 5).n,
                tally.panel(["sim:sim-strong", "sim:sim-mid"]).n,
            )

    assert anyio.run(panels, config) == (3, 5, 3)
    assert anyio.run(panels, None) == (1, 5, 2)
