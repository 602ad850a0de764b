"""The layout of a results folder and the spec it was made with."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..spec import Spec

RESOLVED_NAME = "resolved_spec.toml"
SPEC_NAME = "spec.toml"
OVERRIDES_NAME = "overrides.toml"


def read_resolved_spec(run_dir: Path) -> Spec:
    """The resolved spec stored beside the results, validated again."""
    from ..spec.load import validate_dict
    from ..spec.toml_io import read_toml

    path = Path(run_dir) / RESOLVED_NAME
    if not path.exists():
        raise UserError(
            f"{run_dir}: no {RESOLVED_NAME}; is this a nodescope results folder? "
            "Run `nodescope run SPEC` to make one"
        )
    return validate_dict(read_toml(path)[0], str(path))
