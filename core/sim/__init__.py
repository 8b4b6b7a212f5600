"""The simulated panel and its OpenAI-compatible server: Tally works offline with no key.

``simulate`` answers one call (pure, deterministic by seed); ``core.sim.server`` serves the
catalogue ``SIM_MODELS`` over HTTP. The model of difficulty and correlated errors is documented
in ``core.sim.answers``.
"""

from core.sim.answers import SimReply, simulate
from core.sim.faults import FAULT_KINDS, FaultPlan, FaultRule
from core.sim.models import DEFAULT_PANEL, SIM_MODELS, SimModel

__all__ = [
    "DEFAULT_PANEL",
    "FAULT_KINDS",
    "SIM_MODELS",
    "FaultPlan",
    "FaultRule",
    "SimModel",
    "SimReply",
    "simulate",
]
