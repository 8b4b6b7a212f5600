"""Reliability of the winner's vote share, by hand."""

from __future__ import annotations

import pytest

from core.analysis.calibration import (
    expected_calibration_error,
    points_from_votes,
    reliability_bins,
)
from core.errors import InputError


def test_reliability_bins() -> None:
    points = [(0.6, True), (0.6, False), (0.8, True), (0.8, True), (1.0, True), (0.05, False)]
    bins = reliability_bins(points, bins=5)
    assert [b.count for b in bins] == [1, 0, 0, 2, 3]
    assert bins[1].accuracy is None and bins[1].mean_confidence is None
    assert bins[3].accuracy == 0.5 and bins[3].mean_confidence == pytest.approx(0.6)
    assert bins[4].accuracy == 1.0 and bins[4].mean_confidence == pytest.approx(2.6 / 3)
    assert (bins[4].lower, bins[4].upper) == (0.8, 1.0)


def test_expected_calibration_error_by_hand() -> None:
    points = [(0.6, True), (0.6, False), (0.8, True), (0.8, True), (1.0, True), (0.05, False)]
    expected = (1 / 6) * 0.05 + (2 / 6) * 0.1 + (3 / 6) * abs(1.0 - 2.6 / 3)
    assert expected_calibration_error(points, bins=5) == pytest.approx(expected)
    calibrated = [(0.75, True)] * 3 + [(0.75, False)]
    assert expected_calibration_error(calibrated) == pytest.approx(0.0)


def test_calibration_input_errors() -> None:
    with pytest.raises(InputError):
        expected_calibration_error([])
    with pytest.raises(InputError):
        reliability_bins([(1.2, True)])
    with pytest.raises(InputError):
        reliability_bins([(0.5, True)], bins=0)


def test_points_from_votes() -> None:
    votes = {
        "right": {"A": 4, "B": 1},
        "wrong": {"B": 3, "A": 2},
        "tie": {"A": 2, "B": 2},
        "no-gold": {"A": 5},
        "empty": {},
    }
    gold = {"right": "A", "wrong": "A", "tie": "A", "empty": "A"}
    assert points_from_votes(votes, gold) == [(0.8, True), (0.6, False), (0.5, False)]
