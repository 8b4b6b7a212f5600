"""What a reviewer sees and decides when a tie is escalated to a human.

The Review page shows the candidate answers grouped by label, not model by model, so the
reviewer weighs the answers rather than the names behind them (names stay hidden until asked
for). The final label may be any label the task's format allows, or one of the candidates; a
decision without a reason is refused before anything is written, because the reason is what
the audit trail is for. Everything here is pure: the store writes the decision.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.auth import Identity
from core.result import CallResult, CallStatus, RunResult
from core.store.reviews import (
    ReviewClaim,
    ReviewRow,
    ReviewStage,
    format_labels,
    plurality,
    reason_problem,
    same_person,
)

NOT_COUNTED = (CallStatus.INVALID, CallStatus.ERROR, CallStatus.TIMEOUT, CallStatus.CANCELLED)


@dataclass(frozen=True)
class CandidateGroup:
    """One candidate answer and the calls that voted for it, in the engine's order."""

    label: str
    calls: tuple[CallResult, ...]
    tied: bool = False  # one of the labels the panel could not separate

    @property
    def count(self) -> int:
        return len(self.calls)

    @property
    def models(self) -> list[str]:
        """The models behind the votes, each once, in call order."""
        return list(dict.fromkeys(c.model for c in self.calls))


@dataclass(frozen=True)
class ReviewCase:
    """A run waiting for review, laid out for a person to decide."""

    run_id: str
    input: str
    groups: tuple[CandidateGroup, ...]  # most votes first
    not_counted: tuple[CallResult, ...]  # invalid, failed, timed out, cancelled
    choices: tuple[str, ...]  # what the reviewer may pick as the final label
    plurality: str | None  # the panel's single most-voted label, if there is one
    branches: tuple[str, ...] = field(default_factory=tuple)
    reason: str = ""


def candidate_groups(result: RunResult) -> list[CandidateGroup]:
    """The ``ok`` calls grouped by their vote, most votes first (ties in first-seen order)."""
    by_label: dict[str, list[CallResult]] = {}
    for call in result.calls:
        if call.status == CallStatus.OK and call.answer is not None:
            by_label.setdefault(call.answer, []).append(call)
    tied = set(result.decision.tied)
    groups = [
        CandidateGroup(label=label, calls=tuple(calls), tied=label in tied)
        for label, calls in by_label.items()
    ]
    groups.sort(key=lambda g: -g.count)  # stable: equal counts keep first-seen order
    return groups


def label_choices(result: RunResult, groups: Sequence[CandidateGroup] | None = None) -> list[str]:
    """Candidates first (most votes first), then the format's other labels."""
    groups = candidate_groups(result) if groups is None else groups
    allowed = format_labels(result.spec.task.model_dump(mode="json"))
    return list(dict.fromkeys([g.label for g in groups] + allowed))


def review_case(result: RunResult) -> ReviewCase:
    groups = candidate_groups(result)
    return ReviewCase(
        run_id=result.run_id,
        input=result.input,
        groups=tuple(groups),
        not_counted=tuple(c for c in result.calls if c.status in NOT_COUNTED),
        choices=tuple(label_choices(result, groups)),
        plurality=plurality(result.votes),
        branches=tuple(result.decision.branches),
        reason=result.decision.reason,
    )


def decision_problems(
    reviewer: str | None, label: str | None, reason: str | None, choices: Iterable[str]
) -> dict[str, str]:
    """Why a decision cannot be written yet, by form field (empty when it can).

    Checked before the store is asked, so every problem shows beside its own field at once;
    the store checks the same again and refuses a run that left the queue meanwhile.
    ``reviewer`` is the signed-in identity's name, or the name typed while sign-in is off.
    """
    problems: dict[str, str] = {}
    if not (reviewer or "").strip():
        problems["reviewer"] = "Enter your name: every decision records who took it."
    allowed = list(choices)
    picked = (label or "").strip()
    if not picked:
        problems["label"] = "Pick the final label."
    elif picked not in allowed:
        problems["label"] = f"{picked!r} is not one of the allowed labels: {', '.join(allowed)}."
    problem = reason_problem(reason)
    if problem is not None:
        problems["reason"] = problem
    return problems


def stage_words(stage: ReviewStage) -> str:
    """What a waiting run still needs, for the queue."""
    if stage.name == "admin":
        return "two blind reviewers disagreed: an admin decides"
    if stage.name == "blind":
        return f"blind double review: {2 - stage.owed} of 2 decided"
    return "one reviewer decides"


def gave_blind_decision(stage: ReviewStage, who: Identity) -> bool:
    """Whether ``who`` already gave one of this run's blind decisions (the second must come
    from someone else)."""
    return stage.name == "blind" and any(same_person(r, who) for r in stage.blind)


def claim_words(claims: Sequence[ReviewClaim], me: str) -> str:
    """Who holds the run, as the queue shows it to everyone (``me``: the viewer's key)."""
    words = ["claimed by you" if f"{c.issuer}|{c.subject}" == me else c.describe() for c in claims]
    return "; ".join(words) or "unclaimed"


def agrees(review: ReviewRow) -> bool | None:
    """Whether the reviewer chose the panel's plurality; None when the panel had none."""
    if review.panel_plurality is None:
        return None
    return review.label == review.panel_plurality


def audit_rows(reviews: Iterable[ReviewRow]) -> list[dict[str, Any]]:
    """The audit trail as table rows: who, when (local time), what, why, and the panel's
    decision it replaced."""
    return [
        {
            "when": local_time(r.created_at),
            "reviewer": r.reviewer,
            "identity": r.reviewer_email or r.reviewer_subject or "",
            "stage": r.stage if r.seat is None else f"{r.stage} {r.seat} of 2",
            "label": r.label,
            "reason": r.reason,
            "was": r.previous_status,
            "panel plurality": r.panel_plurality or "none (tie)",
            "agrees with panel": {True: "yes", False: "no", None: "n/a"}[agrees(r)],
            "panel's reason": r.previous_reason or "",  # the decision the review replaced
        }
        for r in reviews
    ]


def local_time(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def waiting_for(created_at: float, now: float | None = None) -> str:
    """How long a run has waited, in the largest whole unit: ``45 s``, ``12 min``, ``3 h``."""
    seconds = max(0.0, (time.time() if now is None else now) - created_at)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h"
    return f"{seconds // 86400:.0f} d"
