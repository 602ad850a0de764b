"""`--set` reaches every key, sweep axes with dots included, and never loses to the sweep."""

from __future__ import annotations

import pytest

from nodescope.cli import main
from nodescope.errors import UserError
from nodescope.spec import load_spec, plan
from nodescope.spec.toml_io import dump_toml


@pytest.fixture
def swept(tiny, tmp_path):
    tiny["sweep"] = {"model.width": [8, 16, 24], "seed": [0, 1]}
    path = tmp_path / "s.toml"
    path.write_text(dump_toml(tiny))
    return path


def members(path, *overrides):
    spec, _ = load_spec(path, list(overrides))
    return [m.coords for g in plan(spec) for m in g.members]


def test_quoted_sweep_axis_narrows_the_sweep(swept):
    got = members(swept, 'sweep."model.width"=[16]')
    assert got == [{"width": 16, "seed": 0}, {"width": 16, "seed": 1}]


def test_setting_a_swept_key_narrows_its_axis(swept):
    assert members(swept, "model.width=24", "seed=1") == [{"width": 24, "seed": 1}]
    assert members(swept, "training.seed=0") == [{"width": w, "seed": 0} for w in (8, 16, 24)]


def test_unquoted_sweep_axis_and_bad_keys_are_one_line(swept, capsys):
    for bad in ("sweep.model.width=[8]", "model..width=3", "model.width"):
        assert main(["validate", str(swept), "--set", bad]) == 1
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and "Traceback" not in err, bad


def test_zipped_axes_refuse_a_single_override(tiny, tmp_path):
    tiny["sweep"] = {
        "model.width": [8, 16],
        "optimiser.lr": [0.1, 0.01],
        "zip": [["model.width", "optimiser.lr"]],
    }
    path = tmp_path / "z.toml"
    path.write_text(dump_toml(tiny))
    with pytest.raises(UserError, match="zips 'model.width'"):
        load_spec(path, ["model.width=8"])


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("nodescope 0.1.0")
