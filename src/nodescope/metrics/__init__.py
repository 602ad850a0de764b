"""Probes: pure tensor functions plus a thin Probe wrapper per family."""

from .activation_fraction import ActivationFractionProbe
from .base import EvalBatch, Probe, ProbeContext
from .curves import CurvesProbe

PROBES: dict[str, type[Probe]] = {p.name: p for p in (CurvesProbe, ActivationFractionProbe)}

__all__ = ["PROBES", "EvalBatch", "Probe", "ProbeContext"]
