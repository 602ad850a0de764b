"""Specs that used to pass `validate` and then crash or hang: refused up front, one line."""

from __future__ import annotations

import pytest
from tiny_specs import tiny_spec_dict

from nodescope.cli import main
from nodescope.spec.toml_io import dump_toml

CASES = {
    "duplicate sweep values": ({"sweep": {"seed": [0, 0]}}, "appears twice"),
    "seed swept twice": ({"sweep": {"seed": [0, 1], "training.seed": [2]}}, "keep one"),
    "axis in two zips": (
        {
            "sweep": {
                "model.width": [4, 8],
                "optimiser.lr": [0.1, 0.2],
                "zip": [["model.width", "optimiser.lr"], ["model.width"]],
            }
        },
        "in two zip lists",
    ),
    "noise robustness with swept sigma_test": (
        {"probes.noise_robustness": {}, "sweep": {"data.sigma_test": [0.1, 0.2]}},
        "do not also sweep data.sigma_test",
    ),
    "no checkpoint inside training": (
        {"checkpoints": {"initial": False, "final": False, "at": [100]}},
        "none falls inside",
    ),
    "tiny every": ({"checkpoints": {"every": 1e-9}}, "choose a larger interval"),
    "huge log.num": (
        {"checkpoints": {"log": {"start": 0.1, "stop": 1, "num": 10**9}}},
        "choose fewer",
    ),
    "infinite stop": (
        {"checkpoints": {"log": {"start": 0.1, "stop": float("inf"), "num": 3}}},
        "finite number",
    ),
    "seed 2^64": ({"training.seed": 2**64}, "less than"),
    "negative seed": ({"training.seed": -1}, "greater than or equal to 0"),
    "threshold outside (0, 1)": (
        {"model.activation": "sigmoid", "probes.activation_fraction": {"threshold": 1.5}},
        "less than 1",
    ),
    "name ..": ({"experiment.name": ".."}, "not a folder name"),
    "name too long": ({"experiment.name": "a" * 101}, "at most 100 characters"),
    "huge network": ({"model.depth": 10**4, "model.width": 10**5}, "parameters per member"),
    "depth 2^64": ({"model.depth": 2**64}, "less than or equal to 10000"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_refused_in_one_line_before_training(name, tmp_path, capsys):
    overrides, expected = CASES[name]
    path = tmp_path / "spec.toml"
    path.write_text(dump_toml(tiny_spec_dict(**overrides)))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run" / "group-000.nc").exists()
