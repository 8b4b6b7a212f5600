"""The review queue shared by several reviewers: claims, decisions that never overwrite each
other, blind double review, and the append-only audit trail.

Every operation on a waiting run first locks that run's row (``SELECT .. FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), then checks and writes in
the same transaction, and the resolving ``UPDATE`` is a compare-and-set on the status. So two
reviewers deciding the same run at once: one wins, the other gets a ``ConflictError`` naming
who won, and nothing is overwritten.

A ``human:2`` run (docs/decisions.md) is decided by two reviewers who do not see each other's
decision: the first decision is recorded, blind; the second, from another identity, resolves the
run when both agree and otherwise leaves it waiting for an admin, who then sees both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from core.auth import Identity, Role
from core.errors import ConflictError, InputError, NotFoundError
from core.result import DecisionStatus
from core.store.tables import dumps, loads, review_claim_t, review_t, run_t

CLAIM_TTL_S = 15 * 60.0
"""How long a claim holds without renewal: long enough to read a case, short enough that an
abandoned claim frees the run the same hour."""
BLIND_BRANCH = "human:2"
MIN_REASON_CHARS = 10
MIN_REASON_WORDS = 2
WAITING = DecisionStatus.NEEDS_REVIEW.value


@dataclass(frozen=True)
class ReviewRow:
    review_id: int
    run_id: str
    reviewer: str
    label: str
    reason: str
    created_at: float
    previous_status: str
    panel_plurality: str | None
    previous_reason: str | None = None  # why the panel's decision was what it was
    reviewer_issuer: str | None = None
    reviewer_subject: str | None = None
    reviewer_email: str | None = None
    stage: str = "single"  # single, blind or admin
    seat: int | None = None  # 1 or 2 for the decisions of a blind double review

    @property
    def reviewer_key(self) -> str:
        """Who decided: the identity when one was recorded, else the typed name."""
        if self.reviewer_issuer and self.reviewer_subject:
            return f"{self.reviewer_issuer}|{self.reviewer_subject}"
        return f"name|{self.reviewer}"


@dataclass(frozen=True)
class ReviewClaim:
    """A reviewer's lease on a waiting run, shown to the others."""

    run_id: str
    seat: int
    issuer: str
    subject: str
    email: str | None
    name: str
    claimed_at: float
    expires_at: float

    def held_by(self, who: Identity) -> bool:
        return (self.issuer, self.subject) == (who.issuer, who.subject)

    def describe(self) -> str:
        until = datetime.fromtimestamp(self.expires_at).astimezone().strftime("%H:%M")
        return f"claimed by {self.name} until {until}"


@dataclass(frozen=True)
class ReviewStage:
    """What a waiting run still needs: ``single`` (one decision), ``blind`` (``owed`` more blind
    decisions, of two) or ``admin`` (two blind decisions disagreed)."""

    name: str
    owed: int
    role: Role
    blind: tuple[ReviewRow, ...] = ()  # the current round's blind decisions


@dataclass(frozen=True)
class ReviewOutcome:
    """What a decision did: ``resolved`` the run, was ``recorded`` as the first of two blind
    decisions, or ``escalated`` it to an admin (the two disagreed)."""

    status: str
    run_id: str
    label: str


# -- pure rules --------------------------------------------------------------------------------


def reason_problem(reason: str | None) -> str | None:
    """Why a reason is not enough for the audit trail (None when it is): at least two words
    and ten characters, and more than one or two letters over and over."""
    text = " ".join((reason or "").split())
    if not text:
        return "Give a reason: the audit trail records why, not only what."
    letters = {c.lower() for c in text if c.isalnum()}
    if len(text) < MIN_REASON_CHARS or len(text.split()) < MIN_REASON_WORDS or len(letters) < 3:
        return (
            f"Give a reason of substance (at least {MIN_REASON_WORDS} words and "
            f"{MIN_REASON_CHARS} characters): what settles it, not only what."
        )
    return None


def current_blind(reviews: Iterable[ReviewRow]) -> list[ReviewRow]:
    """The blind decisions still open, oldest first: those after the last decision that
    resolved the run (a single or admin review, or a second blind decision that agreed)."""
    current: list[ReviewRow] = []
    for review in reviews:
        if review.stage != "blind":
            current = []
            continue
        current.append(review)
        if len(current) == 2 and current[0].label == current[1].label:
            current = []
    return current


def review_stage(branches: Sequence[str], reviews: Iterable[ReviewRow]) -> ReviewStage:
    if BLIND_BRANCH not in branches:
        return ReviewStage("single", 1, Role.REVIEWER)
    blind = tuple(current_blind(reviews))
    if len(blind) >= 2:
        return ReviewStage("admin", 1, Role.ADMIN, blind)
    return ReviewStage("blind", 2 - len(blind), Role.REVIEWER, blind)


def format_labels(task: Mapping[str, Any]) -> list[str]:
    """The labels a run's answer format allows: its closed set, ``yes``/``no``, or none
    (numbers, JSON and text have no closed set, so only the candidates can be picked)."""
    fmt = task.get("format") or {}
    kind = fmt.get("kind")
    if kind == "label":
        return [str(label) for label in fmt.get("labels", ())]
    if kind == "yesno":
        return ["yes", "no"]
    return []


def allowed_labels(task: Mapping[str, Any], votes: Mapping[str, int]) -> list[str]:
    """What a reviewer may pick: the candidates, then the format's other labels."""
    return list(dict.fromkeys([*votes, *format_labels(task)]))


def plurality(votes: Mapping[str, int]) -> str | None:
    """The label with the most votes, or None when there is no single one."""
    if not votes:
        return None
    best = max(votes.values())
    leaders = [label for label, n in votes.items() if n == best]
    return leaders[0] if len(leaders) == 1 else None


def same_person(review: ReviewRow, who: Identity) -> bool:
    return review.reviewer_key == who.key or (
        not review.reviewer_issuer and review.reviewer == who.display
    )


# -- reading -----------------------------------------------------------------------------------


def review_from_row(r: RowMapping) -> ReviewRow:
    return ReviewRow(
        review_id=r["id"],
        run_id=r["run_id"],
        reviewer=r["reviewer"],
        label=r["label"],
        reason=r["reason"],
        created_at=r["created_at"],
        previous_status=r["previous_status"],
        panel_plurality=r["panel_plurality"],
        previous_reason=r["previous_reason"],
        reviewer_issuer=r["reviewer_issuer"],
        reviewer_subject=r["reviewer_subject"],
        reviewer_email=r["reviewer_email"],
        stage=r["stage"],
        seat=r["seat"],
    )


def trail(conn: Connection, run_ids: Sequence[str]) -> dict[str, list[ReviewRow]]:
    """The reviews of each run, oldest first."""
    found: dict[str, list[ReviewRow]] = {rid: [] for rid in run_ids}
    if not run_ids:
        return found
    rows = conn.execute(
        select(review_t)
        .where(review_t.c.run_id.in_(list(run_ids)))
        .order_by(review_t.c.created_at, review_t.c.id)
    ).mappings()
    for r in rows:
        found[r["run_id"]].append(review_from_row(r))
    return found


def claims(conn: Connection, run_ids: Sequence[str], now: float) -> dict[str, list[ReviewClaim]]:
    """The live claims on each run, by seat."""
    found: dict[str, list[ReviewClaim]] = {rid: [] for rid in run_ids}
    if not run_ids:
        return found
    rows = conn.execute(
        select(review_claim_t)
        .where(review_claim_t.c.run_id.in_(list(run_ids)), review_claim_t.c.expires_at > now)
        .order_by(review_claim_t.c.run_id, review_claim_t.c.seat)
    ).mappings()
    for r in rows:
        found[r["run_id"]].append(
            ReviewClaim(
                run_id=r["run_id"],
                seat=r["seat"],
                issuer=r["holder_issuer"],
                subject=r["holder_subject"],
                email=r["holder_email"],
                name=r["holder_name"],
                claimed_at=r["claimed_at"],
                expires_at=r["expires_at"],
            )
        )
    return found


# -- writing -----------------------------------------------------------------------------------


def _locked_run(conn: Connection, run_id: str) -> RowMapping:
    row = (
        conn.execute(select(run_t).where(run_t.c.id == run_id).with_for_update()).mappings().first()
    )
    if row is None:
        raise NotFoundError(f"no run {run_id!r} in the store")
    return row


def _not_waiting(conn: Connection, run_id: str, status: str) -> ConflictError:
    """The error for a run that left the queue, naming the decision that took it out."""
    last = conn.execute(
        select(review_t.c.reviewer, review_t.c.label)
        .where(review_t.c.run_id == run_id)
        .order_by(review_t.c.created_at.desc(), review_t.c.id.desc())
        .limit(1)
    ).first()
    if status == DecisionStatus.RESOLVED.value and last is not None:
        return ConflictError(
            f"run {run_id} was already resolved by {last[0]} as {last[1]!r}: "
            "your decision was not written"
        )
    return ConflictError(f"run {run_id} is not waiting for review (status: {status})")


def _stage_for(conn: Connection, row: RowMapping, who: Identity) -> ReviewStage:
    if row["status"] != WAITING:
        raise _not_waiting(conn, row["id"], row["status"])
    reviews = trail(conn, [row["id"]])[row["id"]]
    stage = review_stage(loads(row["branches_json"], []), reviews)
    who.require(stage.role)
    if stage.name == "blind" and any(same_person(r, who) for r in stage.blind):
        raise ConflictError(
            f"you already gave your blind decision on run {row['id']}: the second must come "
            "from another reviewer"
        )
    return stage


def claim(
    conn: Connection, run_id: str, who: Identity, *, ttl_s: float = CLAIM_TTL_S, now: float
) -> ReviewClaim:
    """Take (or renew) a seat on a waiting run for ``ttl_s``; refused while every seat the
    run still needs is held by someone else."""
    row = _locked_run(conn, run_id)
    stage = _stage_for(conn, row, who)
    live = claims(conn, [run_id], now)[run_id]
    mine = next((c for c in live if c.held_by(who)), None)
    held = {c.seat for c in live}
    seat = mine.seat if mine else next((s for s in range(1, stage.owed + 1) if s not in held), 0)
    if not seat:
        raise ConflictError(
            f"run {run_id} is {'; '.join(c.describe() for c in live)}: pick another"
        )
    conn.execute(
        delete(review_claim_t).where(
            review_claim_t.c.run_id == run_id, review_claim_t.c.seat == seat
        )
    )
    claimed_at = mine.claimed_at if mine else now
    values: dict[str, Any] = {
        "run_id": run_id,
        "seat": seat,
        "holder_issuer": who.issuer,
        "holder_subject": who.subject,
        "holder_email": who.email,
        "holder_name": who.display,
        "claimed_at": claimed_at,
        "expires_at": now + ttl_s,
    }
    conn.execute(insert(review_claim_t).values(**values))
    return ReviewClaim(
        run_id=run_id,
        seat=seat,
        issuer=who.issuer,
        subject=who.subject,
        email=who.email,
        name=who.display,
        claimed_at=claimed_at,
        expires_at=now + ttl_s,
    )


def release(conn: Connection, run_id: str, who: Identity) -> None:
    conn.execute(
        delete(review_claim_t).where(
            review_claim_t.c.run_id == run_id,
            review_claim_t.c.holder_issuer == who.issuer,
            review_claim_t.c.holder_subject == who.subject,
        )
    )


def decide(
    conn: Connection, run_id: str, who: Identity, *, label: str, reason: str, now: float
) -> ReviewOutcome:
    """A reviewer's (or, after a blind disagreement, an admin's) decision on a waiting run.

    Refused whole, with nothing written, when the run is no longer waiting (naming who
    resolved it), when another reviewer holds the seat this decision needs, when the label is
    not one the run allows or the reason has no substance."""
    label, reason = label.strip(), " ".join(reason.split())
    if not label:
        raise InputError("a review needs the final label")
    problem = reason_problem(reason)
    if problem is not None:
        raise InputError(problem)
    row = _locked_run(conn, run_id)
    stage = _stage_for(conn, row, who)
    votes = loads(row["votes_json"], {})
    allowed = allowed_labels(loads(row["task_json"], {}), votes)
    if label not in allowed:
        raise InputError(f"{label!r} is not one of the allowed labels: {', '.join(allowed)}")
    live = claims(conn, [run_id], now)[run_id]
    if not any(c.held_by(who) for c in live) and len(live) >= stage.owed:
        raise ConflictError(
            f"run {run_id} is {'; '.join(c.describe() for c in live)}: your decision was "
            "not written"
        )
    review = {
        "run_id": run_id,
        "reviewer": who.display,
        "reviewer_issuer": who.issuer or None,
        "reviewer_subject": who.subject or None,
        "reviewer_email": who.email,
        "label": label,
        "reason": reason,
        "created_at": now,
        "previous_status": row["status"],
        "panel_plurality": plurality(votes),
        "previous_reason": row["reason"],
        "stage": stage.name,
        "seat": len(stage.blind) + 1 if stage.name == "blind" else None,
    }
    conn.execute(insert(review_t).values(**review))
    release(conn, run_id, who)
    if stage.name == "blind" and not stage.blind:
        return ReviewOutcome("recorded", run_id, label)
    if stage.name == "blind" and stage.blind[0].label != label:
        return ReviewOutcome("escalated", run_id, label)
    branch = {
        "single": f"resolved by {who.display}",
        "blind": f"resolved by {stage.blind[0].reviewer if stage.blind else ''} and "
        f"{who.display}, who agreed blind",
        "admin": f"resolved by {who.display} (admin) after a blind disagreement",
    }[stage.name]
    done = conn.execute(
        update(run_t)
        .where(run_t.c.id == run_id, run_t.c.status == WAITING)  # compare-and-set
        .values(
            status=DecisionStatus.RESOLVED.value,
            label=label,
            branches_json=dumps([*loads(row["branches_json"], []), branch]),
            reason=reason,
        )
    )
    if done.rowcount != 1:  # cannot happen under the row lock; refused rather than assumed
        raise ConflictError(f"run {run_id} left the queue meanwhile: your decision was not written")
    conn.execute(delete(review_claim_t).where(review_claim_t.c.run_id == run_id))
    return ReviewOutcome("resolved", run_id, label)


def stats(conn: Connection) -> dict[str, Any]:
    """Inter-reviewer agreement over blind double reviews: rounds where both decided, and
    how many of them agreed."""
    rows = conn.execute(
        select(review_t)
        .where(review_t.c.stage == "blind")
        .order_by(review_t.c.run_id, review_t.c.created_at, review_t.c.id)
    ).mappings()
    by_run: dict[str, list[ReviewRow]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(review_from_row(r))
    pairs = agreed = 0
    for reviews in by_run.values():
        for first, second in zip(reviews[::2], reviews[1::2], strict=False):
            pairs += 1
            agreed += first.label == second.label
    return {"blind_pairs": pairs, "blind_agreement": agreed / pairs if pairs else None}
