"""Every paper spec in specs/ runs end to end, shrunk by --set overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nodescope
from nodescope.cli import main
from nodescope.data.idx import write_idx

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
    """A tiny stand-in for MNIST (random images, every digit present) in the data folder."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 100)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    monkeypatch.setenv("NODESCOPE_DATA", str(tmp_path / "data"))


def run(spec: str, out: Path, *overrides: str) -> None:
    args = ["run", str(ROOT / spec), "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0


def test_sample_set_grid_runs(fake_mnist, tmp_path):
    run("specs/sample_sets.toml", tmp_path / "r", *SMALL_IDX, "sweep.seed=[0]", "model.width=8")
    ds = nodescope.open(tmp_path / "r")
    assert dict(ds.sizes)["depth"] == 3 and dict(ds.sizes)["training_loss"] == 2
    assert ds.sizes["layer"] == 8 and ds.sizes["node"] == 320
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
