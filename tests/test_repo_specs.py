"""Every paper spec in specs/ runs end to end, shrunk by --set overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nodescope
from nodescope.cli import main
from nodescope.data.idx import write_idx
from nodescope.reports.figures import FIGURES

ROOT = Path(__file__).resolve().parents[1]
SMALL_IDX = [
    "data.train_size=120",
    "data.val_size=60",
    "data.test_size=50",
    "training.epochs=1",
    "checkpoints.log.stop=1",
]


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """Tiny stand-ins for MNIST and Fashion-MNIST (random images, every class present)."""
    rng = np.random.default_rng(0)
    for name in ("mnist", "fashion_mnist"):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for prefix, n in (("train", 300), ("t10k", 100)):
            images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
            labels = (np.arange(n) % 10).astype(np.uint8)
            write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    monkeypatch.setenv("NODESCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NODESCOPE_UNVERIFIED_DATA", "1")  # stand-ins, not the real files


def run(spec: str, out: Path, *overrides: str) -> None:
    args = ["run", str(ROOT / spec), "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0


def test_sample_set_grid_runs(fake_mnist, tmp_path):
    run("specs/sample_sets.toml", tmp_path / "r", *SMALL_IDX, "sweep.seed=[0]", "model.width=8")
    ds = nodescope.open(tmp_path / "r")
    assert dict(ds.sizes)["depth"] == 3 and dict(ds.sizes)["training_loss"] == 2
    assert ds.width.values.tolist() == [8]  # --set on a swept key narrows the sweep
    assert ds.sizes["layer"] == 8 and ds.sizes["node"] == 8
    f = ds.ns.layer_mean("activation_fraction")
    assert f.sel(depth=1, layer=2).isnull().all() and f.sel(depth=8, layer=8).notnull().all()


def test_sample_set_cpu_spec_runs(fake_mnist, tmp_path):
    run("specs/sample_sets_cpu.toml", tmp_path / "r", *SMALL_IDX)
    assert "node_cost" in nodescope.open(tmp_path / "r")


def test_aggregated_mnist_spec_runs(fake_mnist, tmp_path):
    run(
        "specs/winner_take_most/aggregated_mnist.toml",
        tmp_path / "r",
        "data.train_size=200",
        "data.test_size=50",
        "training.epochs=2",
        "model.width=16",
        "training.batch_size=100",
    )
    ds = nodescope.open(tmp_path / "r")
    assert ds.sizes["pattern"] == 10 and list(ds.pattern_class.values) == [0] * 5 + [1] * 5


SMALL_SYNTHETIC = [
    "data.train_size=300",
    "data.test_size=120",
    "training.epochs=2",
    "checkpoints.log.stop=2",
]


@pytest.mark.parametrize("spec", ["noise_grid", "layca", "ablations"])
def test_winner_take_most_specs_run(spec, tmp_path):
    extra = ["training.batch_size=64"] if spec == "noise_grid" else []
    extra += ["model.width=16"] if spec != "ablations" else []
    run(f"specs/winner_take_most/{spec}.toml", tmp_path / "r", *SMALL_SYNTHETIC, *extra)
    ds = nodescope.open(tmp_path / "r")
    assert "grad_sign_mean" in ds and "loss_share" in ds
    if spec == "ablations":
        assert list(ds.tag.values) == ["baseline", "linear", "single neuron", "low noise"]
        assert ds.width.sel(tag="single neuron") == 1


@pytest.mark.parametrize("spec", ["activation_gaps", "activation_gaps_cpu"])
def test_activation_gap_specs_run(spec, fake_mnist, tmp_path):
    small = [
        "data.train_size=200",
        "data.val_size=60",
        "data.test_size=100",
        "training.epochs=2",
        "probes.activation_gaps.n_samples=20",
        "probes.activation_gaps.n_misclassified=10",
        "sweep.seed=[0]",
    ]
    run(f"specs/{spec}.toml", tmp_path / "r", *small)
    ds = nodescope.open(tmp_path / "r")
    assert ds.sizes["pair"] == 435 and "best_val_error" in ds
    for name in ("gap_weight_products", "gap_products", "gap_ratios"):
        FIGURES[name][0](ds).savefig(tmp_path / f"{name}.png")


SMALL_COOPERATING = [
    "data.train_size=120",
    "data.val_size=60",
    "data.test_size=50",
    "training.epochs=2",
    "checkpoints.every=1",
]


def ends_of_sweep(spec: str, out: Path) -> Path:
    """A copy of the spec whose sweep keeps the first and last value of every axis, one seed."""
    from nodescope.spec.toml_io import dump_toml, read_toml

    data, _ = read_toml(ROOT / spec)
    data["sweep"] = {k: v[:1] + v[-1:] for k, v in data["sweep"].items()} | {"seed": [0]}
    out.write_text(dump_toml(data))
    return out


@pytest.mark.parametrize(
    ("spec", "extra"),
    [
        ("depth", ["model.width=8"]),
        ("width", []),
        ("fmnist_6x100_training", ["checkpoints.log.stop=1", "model.width=12"]),
        ("fmnist_depth", ["model.width=8"]),
        ("sigmoid_7x100", ["model.width=12"]),
        ("cpu", ["model.width=12"]),
    ],
)
def test_cooperating_classifier_specs_run(fake_mnist, tmp_path, spec, extra):
    small = ends_of_sweep(f"specs/cooperating_classifiers/{spec}.toml", tmp_path / "spec.toml")
    run(str(small), tmp_path / "r", *SMALL_COOPERATING, *extra)
    ds = nodescope.open(tmp_path / "r")
    measured = ds["layer_accuracy"] if "layer_accuracy" in ds else ds["perplexity"]
    assert measured.notnull().any()
    if "perplexity" in ds:
        perplexity = ds.ns.mean_perplexity()
        assert (perplexity >= 1 - 1e-9).where(perplexity.notnull(), True).all()
    assert ("epoch" not in measured.dims) == ("best_epoch" in ds)
    figures = {
        "cpu": ["cooperating_classifiers_epochs", "cooperating_node_activation"],
        "fmnist_depth": ["cooperating_classifiers_best", "cooperating_test_error"],
    }.get(spec, [])
    if figures:
        assert main(["plot", str(tmp_path / "r"), "--out", str(tmp_path / "f")]) == 0
        assert all((tmp_path / "f" / f"{name}.png").exists() for name in figures)
        assert (tmp_path / "f" / "cooperating_perplexity.png").exists()
