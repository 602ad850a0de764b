"""Experiment specs: pydantic models, TOML loading, sweep expansion. Imports no torch."""

from .checkpoints import checkpoint_steps
from .load import load_spec, resolved_toml, spec_hash
from .model import Spec
from .sweep import Group, Member, expand, plan, sweep_axes

__all__ = [
    "Group",
    "Member",
    "Spec",
    "checkpoint_steps",
    "expand",
    "load_spec",
    "plan",
    "resolved_toml",
    "spec_hash",
    "sweep_axes",
]
