"""Experiments on stored answers and measurements: pure functions, no I/O.

How many votes a set needs (:mod:`.curves`), what early stopping saves (:mod:`.earlystop`),
which models vote alike (:mod:`.agreement`), whether vote share means what it says
(:mod:`.calibration`), how far to trust each model (:mod:`.reliability`) and where throughput
stops scaling (:mod:`.sweeps`).
"""

from core.analysis.agreement import (
    ItemDisagreement,
    PairAgreement,
    VoterIndependence,
    cohens_kappa,
    effective_independent_voters,
    fleiss_kappa,
    hardest_items,
    margin,
    model_accuracy,
    pairwise_agreement,
    vote_entropy,
)
from core.analysis.calibration import (
    Bin,
    expected_calibration_error,
    points_from_votes,
    reliability_bins,
)
from core.analysis.curves import (
    Curve,
    CurvePoint,
    HarmReport,
    Recommendation,
    Samples,
    condorcet_error,
    effective_voters,
    error_correlation,
    harm_report,
    harmful_items,
    majority_error_curve,
    recommend,
)
from core.analysis.earlystop import (
    EarlyStopReport,
    RuleResult,
    compare_early_stop,
)
from core.analysis.reliability import (
    AggregateScore,
    ModelReliability,
    ReliabilityFit,
    calibration_points,
    compare_aggregates,
    fit_reliability,
    log_odds_weight,
)
from core.analysis.sweeps import AIMD, SweepPoint, SweepVerdict, analyse_sweep
from core.confidence import leader_posterior

__all__ = [
    "AIMD",
    "AggregateScore",
    "Bin",
    "Curve",
    "CurvePoint",
    "EarlyStopReport",
    "HarmReport",
    "ItemDisagreement",
    "ModelReliability",
    "PairAgreement",
    "Recommendation",
    "ReliabilityFit",
    "RuleResult",
    "Samples",
    "SweepPoint",
    "SweepVerdict",
    "VoterIndependence",
    "analyse_sweep",
    "calibration_points",
    "cohens_kappa",
    "compare_aggregates",
    "compare_early_stop",
    "condorcet_error",
    "effective_independent_voters",
    "effective_voters",
    "error_correlation",
    "expected_calibration_error",
    "fit_reliability",
    "fleiss_kappa",
    "hardest_items",
    "harm_report",
    "harmful_items",
    "leader_posterior",
    "log_odds_weight",
    "majority_error_curve",
    "margin",
    "model_accuracy",
    "pairwise_agreement",
    "points_from_votes",
    "recommend",
    "reliability_bins",
    "vote_entropy",
]
