"""Property-based: a small spec that `validate` accepts runs to the end, or stops before
training with one line; never a traceback after validation."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tiny_specs import TINY

import nodescope
from nodescope.cli import main
from nodescope.errors import UserError
from nodescope.spec import plan
from nodescope.spec.load import validate_dict
from nodescope.spec.toml_io import dump_toml

OPTIONS = {
    "model.depth": st.integers(1, 3),
    "model.width": st.sampled_from([1, 3, 8, [4, 2]]),
    "model.activation": st.sampled_from(["relu", "sigmoid", "linear"]),
    "model.bias": st.sampled_from(["all", "first", "none"]),
    "model.output_bias": st.booleans(),
    "model.batch_norm": st.booleans(),
    "model.init": st.sampled_from(["torch_default", "he", "lecun_uniform"]),
    "optimiser.name": st.sampled_from(["sgd", "adam", "layca"]),
    "optimiser.momentum": st.sampled_from([0.0, 0.9]),
    "optimiser.lr": st.sampled_from([1e-3, 0.1, 1e3]),
    "training.loss": st.sampled_from(["ce", "mse", "bce"]),
    "training.batch_size": st.sampled_from([1, 7, 64, "full"]),
    "training.epochs": st.integers(1, 3),
    "training.until_train_accuracy": st.sampled_from([None, 0.5, 1.0]),
    "training.early_stopping": st.sampled_from([None, {"patience": 1}]),
    "training.dtype": st.sampled_from(["float32", "float64"]),
    "noise.label_fraction": st.sampled_from([0.0, 0.3]),
    "noise.input_sigma_train": st.sampled_from([0.0, 0.5]),
    "data.val_size": st.sampled_from([0, 30]),
    "data.n_classes": st.sampled_from([2, 3]),
    "checkpoints": st.sampled_from(
        [
            {"every": 1},
            {"log": {"start": 0.1, "stop": 3, "num": 4}},
            {"at": [0.5, 2], "initial": False},
            {"every": 1, "weights": True},
            {"first_epoch_every_step": True, "final": True},
        ]
    ),
    "resume.every_epochs": st.sampled_from([0, 1]),
}
PROBES = st.sampled_from(
    [
        {"activation_fraction": {"output_layer": True}},
        {"sample_sets": {}},
        {"pattern_preactivation": {}, "grad_sign": {"top_k": 2}, "difficulty": {}},
        {"noise_robustness": {"sigma_test": [0.0, 0.5], "n_samples": 20}},
        {"perplexity": {}, "node_classifiers": {"splits": ["test"]}},
        {"activation_gaps": {"n_samples": 10, "n_misclassified": 4}},
        {"curves": False},
    ]
)
SWEEPS = st.sampled_from(
    [{}, {"seed": [0, 1]}, {"optimiser.lr": [0.01, 1e6]}, {"model.width": [2, 5]}]
)


@st.composite
def small_specs(draw):
    spec = copy.deepcopy(TINY)
    spec["data"].update(train_size=60, val_size=20, test_size=30)
    for path in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=6, unique=True)):
        value = draw(OPTIONS[path])
        table, _, key = path.partition(".")
        if key:
            spec.setdefault(table, {})[key] = value
        else:
            spec[table] = value
    spec["probes"] = draw(PROBES)
    spec["sweep"] = draw(SWEEPS)
    return spec


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=small_specs())
@example(  # found by a longer run: KDEs of a member diverging mid-epoch
    spec={
        **copy.deepcopy(TINY),
        "model": {"depth": 2, "width": 16},
        "training": {"loss": "mse", "batch_size": 32, "epochs": 1},
        "probes": {"perplexity": {}, "node_classifiers": {"splits": ["test"]}},
        "sweep": {"optimiser.lr": [0.01, 1e6]},
    }
)
def test_every_accepted_small_spec_runs_or_stops_in_one_line(spec, tmp_path_factory, capsys):
    try:
        plan(validate_dict(copy.deepcopy(spec), "fuzz"))
    except UserError:
        return  # refused by validate: the spec fuzz tests check those messages
    folder = tmp_path_factory.mktemp("accepted")
    path = folder / "spec.toml"
    path.write_text(dump_toml(spec))
    capsys.readouterr()
    code = main(["run", str(path), "--out", str(folder / "run")])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), err
    if code == 2:
        assert err.count("\n") == 0 and not list((folder / "run").glob("group-*.nc")), err
        return
    ds = nodescope.open(folder / "run")
    assert "final_accuracy" in ds
