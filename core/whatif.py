"""What if: a stored run, or a whole batch, decided again under another policy, beside its own.

The dashboard's re-vote makes no new calls: the stored answers are counted again under the
policy asked (``Tally.revote``), so the question "would strict majority have escalated this?"
costs nothing and can be asked freely. A chain with ``escalate`` or ``expand`` would call
models, so it is refused here (the CLI's ``revote`` can still do it, with its note); a slot
whose call was cut has no vote, and the result names it when its vote could have mattered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import InputError
from core.formats import AnswerFormat
from core.policy import Policy
from core.result import RunResult

CALLING_BRANCHES = ("escalate", "expand")


def check_no_calls(policy: Policy) -> None:
    """Refuse a policy whose chain would call models: a what-if here spends nothing."""
    calling = [str(b) for b in policy.tie_breaks if b.kind in CALLING_BRANCHES]
    if calling:
        raise InputError(
            f"a re-vote here makes no new calls, and {', '.join(calling)} would call models: "
            "pick offline tie-breaks (conservative, review, abstain)"
        )


@dataclass(frozen=True)
class Side:
    """One side of a batch's comparison: its decisions by status, and its accuracy on gold."""

    statuses: dict[str, int]
    with_gold: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.with_gold if self.with_gold else None


@dataclass(frozen=True)
class BatchComparison:
    """A batch's own decisions beside the re-vote's, and how many runs changed label or status."""

    before: Side
    after: Side
    changed: int
    runs: int
    missing_votes: int  # runs where a cut call's vote could have changed the re-vote


def side(results: Sequence[RunResult], fmt: AnswerFormat) -> Side:
    judged = [r for r in results if r.gold is not None]
    return Side(
        statuses=dict(Counter(r.decision.status.value for r in results)),
        with_gold=len(judged),
        correct=sum(1 for r in judged if fmt.gold_matches(r.decision.label, r.gold or "")),
    )


def compare_batch(
    before: Sequence[RunResult], after: Sequence[RunResult], fmt: AnswerFormat
) -> BatchComparison:
    """``after[i]`` is ``before[i]`` decided again."""
    changed = sum(
        1
        for old, new in zip(before, after, strict=True)
        if (old.decision.status, old.decision.label) != (new.decision.status, new.decision.label)
    )
    return BatchComparison(
        before=side(before, fmt),
        after=side(after, fmt),
        changed=changed,
        runs=len(before),
        missing_votes=sum(1 for r in after if r.missing),
    )
