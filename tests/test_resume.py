"""Training interrupted inside a group continues from its saved state to the same results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import xarray as xr

import nodescope
from nodescope.cli import main
from nodescope.runner.resume import StateFile, state_path
from nodescope.runner.train import train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict
from nodescope.spec.toml_io import dump_toml

CPU = torch.device("cpu")


class Interrupt(Exception):
    pass


def stop_after(step_limit: int):
    def progress(step, total, loss, phase="training"):
        if step >= step_limit:
            raise Interrupt

    return progress


def group_of(spec: dict):
    return plan(validate_dict(spec, "test"))[0]


def assert_same_results(resumed: dict, straight: dict) -> None:
    assert set(resumed) == set(straight)
    for name, value in straight.items():
        if name == "wall_time":
            continue
        xr.testing.assert_identical(resumed[name], value)


CASES = {
    "sample sets, weights, step decay, sgd momentum": (
        {
            "model": {"depth": 2, "width": [16, 9], "batch_norm": True},
            "optimiser": {
                "name": "sgd",
                "lr": 0.05,
                "momentum": 0.9,
                "schedule": {"milestones": [2.0], "factor": 0.2},
            },
            "checkpoints": {"every": 0.5, "weights": True},
            "probes": {"curves": {}, "sample_sets": {}},
        }
    ),
    "winner-take-most probes, layca, early stopping": (
        {
            "optimiser": {"name": "layca", "lr": 0.02, "layca_base": "adam"},
            "training": {"early_stopping": {"patience": 2}},
            "probes": {
                "curves": {},
                "pattern_preactivation": {},
                "grad_sign": {"top_k": 4},
                "difficulty": {},
                "perplexity": {"at": "best"},
                "node_classifiers": {"at": "best", "splits": ["test"]},
            },
        }
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_group_resumed_mid_training_equals_an_uninterrupted_one(tiny, tmp_path, case, one_thread):
    extra = CASES[case]
    tiny["training"].update(epochs=6, **extra.pop("training", {}))
    tiny.update(extra)
    tiny["sweep"] = {"seed": [0, 1, 2]}
    tiny["resume"] = {"every_epochs": 2}
    group = group_of(tiny)
    straight = train_group(group, CPU).variables

    path = state_path(tmp_path, group.index)
    steps_per_epoch = group.spec.steps_per_epoch()
    with pytest.raises(Interrupt):  # killed in epoch 5: the state saved after epoch 4 is kept
        train_group(group, CPU, stop_after(4 * steps_per_epoch + 3), StateFile(path, group))
    assert path.exists()
    lines = []
    resumed = train_group(group, CPU, None, StateFile(path, group, lines.append)).variables
    assert lines == ["group 0: resuming from its saved training state at epoch 4"]
    assert_same_results(resumed, straight)


def test_a_state_from_another_spec_or_a_damaged_one_is_not_used(tiny, tmp_path, one_thread):
    tiny["training"]["epochs"] = 4
    tiny["resume"] = {"every_epochs": 1}
    group = group_of(tiny)
    path, steps_per_epoch = state_path(tmp_path, 0), group.spec.steps_per_epoch()
    with pytest.raises(Interrupt):
        train_group(group, CPU, stop_after(3 * steps_per_epoch), StateFile(path, group))

    tiny["optimiser"]["lr"] = 0.02
    changed = group_of(tiny)
    lines = []
    resumed = train_group(changed, CPU, None, StateFile(path, changed, lines.append)).variables
    assert lines == [
        "group 0: saved training state group-000.pt is not used (it belongs to a different "
        "spec); training the group from the start"
    ]
    assert torch.load(path, weights_only=False)["group_hash"] == changed.hash  # saved anew
    assert_same_results(resumed, train_group(changed, CPU).variables)

    with pytest.raises(Interrupt):
        train_group(group, CPU, stop_after(3 * steps_per_epoch), StateFile(path, group))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    lines = []
    train_group(group, CPU, None, StateFile(path, group, lines.append))
    assert "SHA-256 differs" in lines[0] and lines[0].endswith("training the group from the start")


def test_saving_by_time_and_never(tiny, tmp_path, one_thread):
    tiny["training"]["epochs"] = 3
    by_time = {"every_epochs": 0, "every_minutes": 1e-9}
    never = {"every_epochs": 0, "every_minutes": 0}
    for resume, saved in ((by_time, True), (never, False)):
        tiny["resume"] = resume
        group = group_of(tiny)
        path = state_path(tmp_path / str(saved), 0)
        with pytest.raises(Interrupt):
            stop = stop_after(2 * group.spec.steps_per_epoch() + 1)
            train_group(group, CPU, stop, StateFile(path, group))
        assert path.exists() == saved


def test_a_finished_group_leaves_no_state_and_fresh_removes_states(tiny, tmp_path):
    tiny["resume"] = {"every_epochs": 1}
    spec = tmp_path / "spec.toml"
    spec.write_text(dump_toml(tiny))
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert not (out / "state").exists()
    stale = state_path(out, 0)
    stale.parent.mkdir()
    stale.write_bytes(b"left over")
    assert main(["run", str(spec), "--out", str(out), "--fresh"]) == 0
    assert not stale.exists()


def test_sigkill_mid_group_then_rerun_equals_an_uninterrupted_run(tiny, tmp_path):
    tiny["data"].update(train_size=2000)
    tiny["training"].update(epochs=30, batch_size=20)
    tiny["probes"] = {"curves": {}, "sample_sets": {}}
    tiny["checkpoints"] = {"every": 1}
    tiny["resume"] = {"every_epochs": 1}
    tiny["sweep"] = {"seed": [0, 1]}
    spec = tmp_path / "spec.toml"
    spec.write_text(dump_toml(tiny))
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    cmd = [sys.executable, "-m", "nodescope", "run", str(spec), "--out", str(killed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    state = state_path(killed, 0)
    deadline = time.time() + 180
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert state.exists(), "no training state was saved before the deadline"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not list(killed.glob("group-*.nc")), "the group finished before it was killed"

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from its saved training state" in rerun.stdout + rerun.stderr
    cmd[-1] = str(straight)
    assert subprocess.run(cmd, capture_output=True, env=env).returncode == 0
    a, b = nodescope.open(killed).load(), nodescope.open(straight).load()
    for name in b.data_vars:
        if name != "wall_time":
            xr.testing.assert_identical(a[name], b[name])
    assert np.isfinite(a.final_accuracy).all()
    assert not state.exists()


def test_a_run_that_cannot_start_writes_nothing(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NODESCOPE_DATA", str(tmp_path / "no_data"))
    tiny["data"] = {"name": "mnist", "train_size": 100, "val_size": 0, "test_size": 100}
    spec = tmp_path / "spec.toml"
    spec.write_text(dump_toml(tiny))
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    assert "MNIST is not in" in capsys.readouterr().err
    assert not out.exists()
    if not torch.cuda.is_available():
        tiny["data"] = {"name": "synthetic_patterns"}
        spec.write_text(dump_toml(tiny))
        assert main(["run", str(spec), "--out", str(out), "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
        assert not out.exists()


def test_a_state_that_cannot_be_written_is_one_line(tiny, tmp_path, one_thread):
    from nodescope.errors import UserError

    tiny["resume"] = {"every_epochs": 1}
    group = group_of(tiny)
    (tmp_path / "state").write_text("a file where the state folder should be")
    with pytest.raises(UserError, match=r"cannot write .*group-000.pt .*stored groups are kept"):
        train_group(group, CPU, None, StateFile(state_path(tmp_path, 0), group))
