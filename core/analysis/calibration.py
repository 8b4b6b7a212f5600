"""Calibration: is a 4-of-5 vote right more often than a 3-of-5 one, and by how much?

The winner's vote share is the panel's confidence. A reliability table bins items by it and
sets each bin's mean share beside how often the winner was right on gold; the expected
calibration error is the gap, weighted by how many items fall in each bin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from core.errors import InputError

Point = tuple[float, bool]  # (winner's vote share, winner was right)


class Bin(BaseModel):
    """Items whose winner had a vote share in [lower, upper) (the last bin includes 1)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None  # None for an empty bin
    accuracy: float | None


def _check(points: Sequence[Point], bins: int) -> None:
    if bins < 1:
        raise InputError(f"bins must be at least 1, got {bins}")
    for share, _ in points:
        if not 0.0 <= share <= 1.0:
            raise InputError(f"a vote share must be between 0 and 1, got {share}")


def reliability_bins(points: Sequence[Point], bins: int = 10) -> list[Bin]:
    """Equal-width bins of the winner's vote share, with how often the winner was right."""
    _check(points, bins)
    shares: list[list[float]] = [[] for _ in range(bins)]
    hits: list[int] = [0] * bins
    for share, right in points:
        index = min(int(share * bins), bins - 1)
        shares[index].append(share)
        hits[index] += bool(right)
    result: list[Bin] = []
    for index in range(bins):
        count = len(shares[index])
        result.append(
            Bin(
                lower=index / bins,
                upper=(index + 1) / bins,
                count=count,
                mean_confidence=sum(shares[index]) / count if count else None,
                accuracy=hits[index] / count if count else None,
            )
        )
    return result


def expected_calibration_error(points: Sequence[Point], bins: int = 10) -> float:
    """Sum over bins of (share of items) x |accuracy - mean confidence|: 0 is calibrated."""
    if not points:
        raise InputError("calibration needs at least one decided item with a gold label")
    total = len(points)
    return sum(
        (b.count / total) * abs(b.accuracy - b.mean_confidence)
        for b in reliability_bins(points, bins)
        if b.accuracy is not None and b.mean_confidence is not None
    )


def points_from_votes(
    votes: Mapping[str, Mapping[str, int]], gold: Mapping[str, str]
) -> list[Point]:
    """(winner's share, right) per item with a gold label and at least one vote.

    A tied top has no winner: its share is the tied leaders' share and it counts as not
    right, so an undecided vote never looks like a confident right one.
    """
    points: list[Point] = []
    for item, counts in votes.items():
        expected = gold.get(item)
        total = sum(counts.values())
        if not expected or total <= 0:
            continue
        top = max(counts.values())
        leaders = [label for label, count in counts.items() if count == top]
        right = len(leaders) == 1 and leaders[0] == expected
        points.append((top / total, right))
    return points
