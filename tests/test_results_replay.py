"""Stored weights, trained networks loaded back, and probes added after training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import nodescope
from nodescope.cli import main
from nodescope.errors import UserError
from nodescope.results.weights import weights_path
from nodescope.spec.toml_io import dump_toml

SWEEP = {"seed": [0, 1], "optimiser.lr": [0.01, 0.03]}


def run(tmp_path: Path, spec: dict, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_toml(spec))
    out = tmp_path / name
    assert main(["run", str(path), "--out", str(out)]) == 0
    return out


def spec_with(tiny: dict, probes: dict, **extra) -> dict:
    tiny = dict(tiny)
    tiny["model"] = {"depth": 2, "width": [16, 9], "batch_norm": True}
    tiny["checkpoints"] = {**tiny["checkpoints"], "weights": True}
    tiny["training"] = {**tiny["training"], "early_stopping": {"patience": 1}}
    tiny["sweep"] = SWEEP
    tiny["probes"] = probes
    tiny.update(extra)
    return tiny


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training once with sample_sets recorded, once with curves only."""
    from tiny_specs import tiny_spec_dict

    tmp = tmp_path_factory.mktemp("replay")
    with_probe = run(tmp, spec_with(tiny_spec_dict(), {"curves": {}, "sample_sets": {}}), "a")
    without = run(tmp, spec_with(tiny_spec_dict(), {"curves": {}}), "b")
    return with_probe, without


def test_stored_weights_reload_into_the_same_outputs(runs):
    a, _ = runs
    stacked = nodescope.load_stacked(a, seed=1)  # one group holds all four members
    x = torch.randn(11, 40, generator=torch.Generator().manual_seed(3))
    out = stacked(x).out
    again = nodescope.load_stacked(a, seed=0)(x).out
    assert torch.equal(out, again)
    for e, (seed, lr) in enumerate([(0, 0.01), (0, 0.03), (1, 0.01), (1, 0.03)]):
        plain = nodescope.load_model(a, seed=seed, lr=lr)
        assert isinstance(plain, torch.nn.Sequential)
        kinds = [type(m).__name__ for m in plain]
        assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
        assert torch.allclose(plain(x), out[e], atol=1e-5, rtol=1e-5)
    # the final network is the one whose accuracy the results report
    ds = nodescope.open(a)
    assert ds.final_accuracy.notnull().all()


def test_final_network_is_the_early_stopping_choice(runs):
    a, _ = runs
    final = nodescope.load_model(a, seed=0, lr=0.03)
    last_checkpoint = nodescope.load_model(a, epoch=3, seed=0, lr=0.03)
    ds = nodescope.open(a)
    stop = float(ds.stop_epoch.sel(seed=0, lr=0.03))
    x = torch.randn(5, 40)
    same = torch.allclose(final(x), last_checkpoint(x))
    # when early stopping froze the member, its best weights differ from the last epoch's
    assert same or not np.isnan(stop)


def test_load_model_needs_exactly_one_member(runs):
    a, _ = runs
    with pytest.raises(UserError, match="2 members match"):
        nodescope.load_model(a, seed=0)
    with pytest.raises(UserError, match="unknown sweep coordinate"):
        nodescope.load_model(a, width=3)
    with pytest.raises(UserError, match="no weights stored at epoch 7"):
        nodescope.load_model(a, epoch=7, seed=0, lr=0.01)


def test_probe_added_after_training_equals_the_recorded_one(runs, capsys):
    a, b = runs
    assert main(["probe", str(b), "--add", "sample_sets"]) == 0
    recorded, replayed = nodescope.open(a), nodescope.open(b)
    for name in (
        "activation_fraction",
        "predictability",
        "informativeness",
        "dead",
        "entered",
        "left",
        "node_cost",
    ):
        xr.testing.assert_allclose(recorded[name], replayed[name], rtol=1e-6, atol=1e-9)
        assert replayed[name].attrs["description"] == recorded[name].attrs["description"]
    # the folder's spec now lists the probe, so a re-run skips every group
    assert main(["run", str(b / "resolved_spec.toml"), "--out", str(b)]) == 0
    assert "1 already stored" in capsys.readouterr().out
    # adding it twice changes nothing
    assert main(["probe", str(b), "--add", "sample_sets"]) == 0
    assert "already stored" in capsys.readouterr().out


def test_probe_after_training_from_a_later_paper(tmp_path, tiny):
    tiny.update(
        checkpoints={"at": [1, 2], "weights": True},
        probes={"curves": {}, "pattern_preactivation": {"split": "test"}},
        sweep={"seed": [0, 1, 2]},  # more members than layers
    )
    recorded = run(tmp_path, tiny, "rec")
    tiny["probes"] = {"curves": {}}
    later = run(tmp_path, tiny, "later")
    assert main(["probe", str(later), "--add", "pattern_preactivation", "--set", "split=test"]) == 0
    recorded, later = nodescope.open(recorded), nodescope.open(later)
    xr.testing.assert_allclose(recorded.pattern_preactivation, later.pattern_preactivation)
    xr.testing.assert_identical(recorded.layer_width, later.layer_width)


def test_probes_that_watch_training_steps_are_refused(runs, capsys):
    _, b = runs
    assert main(["probe", str(b), "--add", "grad_sign"]) == 2
    err = capsys.readouterr().err
    assert "every training step" in err and err.count("\n") == 1


def test_weights_only_at_chosen_checkpoints(tmp_path, tiny):
    tiny["checkpoints"] = {"at": [1, 2, 3], "weights": [2]}
    out = run(tmp_path, tiny, "some")
    with xr.open_dataset(weights_path(out, 0)) as w:
        assert w.kind.values.tolist() == ["checkpoint", "final"]
        assert w.epoch.values[0] == 2
    assert main(["probe", str(out), "--add", "activation_fraction"]) == 0  # already on
    tiny["probes"] = {"curves": {}}
    out = run(tmp_path, tiny, "later")
    assert main(["probe", str(out), "--add", "activation_fraction"]) == 0
    frac = nodescope.open(out).activation_fraction
    have = frac.notnull().any([d for d in frac.dims if d != "epoch"])
    assert have.values.tolist() == [False, False, True, False]  # epochs 0, 1, 2, 3


def test_weights_epoch_must_be_a_checkpoint(tmp_path, tiny, capsys):
    tiny["checkpoints"] = {"at": [1], "weights": [2]}
    path = tmp_path / "s.toml"
    path.write_text(dump_toml(tiny))
    assert main(["validate", str(path)]) == 1
    assert "epoch 2 is not a checkpoint" in capsys.readouterr().err


def test_no_weights_means_no_replay(tmp_path, tiny, capsys):
    out = run(tmp_path, tiny, "plain")
    assert not (out / "weights").exists()
    assert main(["probe", str(out), "--add", "sample_sets"]) == 2
    assert "checkpoints.weights" in capsys.readouterr().err
    with pytest.raises(UserError, match="checkpoints.weights"):
        nodescope.load_model(out)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"model.bias": "first", "model.output_bias": False},
        {"model.batch_norm": True, "model.depth": 3, "model.width": [5, 6, 7]},
        {"model.summary_width": 2, "training.loss": "bce"},
    ],
)
def test_planned_weight_size_counts_every_stored_value(overrides):
    from tiny_specs import tiny_spec_dict

    from nodescope.models.mlp import StackedMLP
    from nodescope.spec.load import validate_dict
    from nodescope.spec.size import parameters_per_member, weight_bytes

    spec = validate_dict(tiny_spec_dict(**overrides), "test")
    model = StackedMLP([spec], 40, 1 if spec.training.loss == "bce" else 2)
    assert parameters_per_member(spec) == sum(v.numel() for v in model.state_dict().values())
    assert weight_bytes(spec, 3) == 0
    spec = validate_dict(tiny_spec_dict(**overrides, **{"checkpoints.weights": True}), "test")
    assert weight_bytes(spec, 3) == 3 * (5 + 1) * parameters_per_member(spec) * 4
