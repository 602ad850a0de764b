"""Probes: pure tensor functions plus a thin Probe wrapper per family."""

from .activation_gap_probes import ActivationGapsProbe
from .base import EvalBatch, Probe, ProbeContext
from .cooperating_probes import NodeClassifiersProbe, PerplexityProbe
from .curves import CurvesProbe
from .sample_set_probes import ActivationFractionProbe, SampleSetsProbe
from .wtm_probes import (
    DifficultyProbe,
    GradSignProbe,
    NoiseRobustnessProbe,
    PatternPreactivationProbe,
)

PROBES: dict[str, type[Probe]] = {
    p.name: p
    for p in (
        CurvesProbe,
        ActivationFractionProbe,
        SampleSetsProbe,
        PatternPreactivationProbe,
        GradSignProbe,
        DifficultyProbe,
        NoiseRobustnessProbe,
        ActivationGapsProbe,
        PerplexityProbe,
        NodeClassifiersProbe,
    )
}

__all__ = ["PROBES", "EvalBatch", "Probe", "ProbeContext"]
