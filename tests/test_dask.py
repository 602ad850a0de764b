"""Sweeps on Dask (loopback only): local clusters, an existing scheduler, dying workers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import xarray as xr

import nodescope
from nodescope.cli import main
from nodescope.results.integrity import LOCK_NAME
from nodescope.runner.resume import state_path
from nodescope.spec.toml_io import dump_toml

distributed = pytest.importorskip("distributed")


def write_spec(tmp_path, spec: dict):
    path = tmp_path / "spec.toml"
    path.write_text(dump_toml(spec))
    return path


def assert_same_results(a_dir, b_dir) -> None:
    a, b = nodescope.open(a_dir).load(), nodescope.open(b_dir).load()
    assert set(a.data_vars) == set(b.data_vars)
    for name in b.data_vars:
        if name != "wall_time":
            xr.testing.assert_identical(a[name], b[name])


def test_workers_store_the_same_results_as_in_process(tiny, tmp_path, capsys):
    tiny["sweep"] = {"seed": [0, 1], "model.width": [4, 8, 12]}
    tiny["probes"] = {"curves": {}, "sample_sets": {}}
    spec = write_spec(tmp_path, tiny)
    assert main(["run", str(spec), "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    assert main(["run", str(spec), "--out", str(tmp_path / "dask"), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert len(list((tmp_path / "dask").glob("group-*.nc"))) == 3
    assert_same_results(tmp_path / "dask", tmp_path / "local")
    # progress came from the workers while they trained, one line per group at least
    for index in range(3):
        assert f"group {index} (2 members): step 21/21" in out


def test_a_killed_worker_still_completes_the_sweep_with_identical_results(tiny, tmp_path, capsys):
    tiny["data"].update(train_size=2000)
    tiny["training"].update(epochs=40, batch_size=20)
    tiny["checkpoints"] = {"every": 1}
    tiny["probes"] = {"curves": {}, "sample_sets": {}}
    tiny["resume"] = {"every_epochs": 1}
    tiny["sweep"] = {"seed": [0, 1], "model.width": [8, 12]}
    spec = write_spec(tmp_path, tiny)
    local, dask_dir = tmp_path / "local", tmp_path / "dask"
    assert main(["run", str(spec), "--out", str(local)]) == 0

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
    )
    with cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        result = {}
        argv = ["run", str(spec), "--out", str(dask_dir), "--scheduler", cluster.scheduler_address]
        run = threading.Thread(target=lambda: result.update(rc=main(argv)))
        run.start()
        deadline = time.time() + 240
        states = {i: state_path(dask_dir, i) for i in range(2)}
        while not any(s.exists() for s in states.values()) and time.time() < deadline:
            time.sleep(0.02)
        started = next(i for i, s in states.items() if s.exists())
        key = next(k for k in client.who_has() if f"-group-{started:03d}-" in str(k))
        owner = next(w for w, keys in client.processing().items() if key in keys)
        os.kill(pids[owner], signal.SIGKILL)
        assert not (dask_dir / f"group-{started:03d}.nc").exists(), "killed too late"
        run.join(timeout=600)
        assert result.get("rc") == 0
    out = capsys.readouterr().out
    assert "resuming from its saved training state at epoch" in out
    assert_same_results(dask_dir, local)
    assert not (dask_dir / "state").exists()


def test_a_scheduler_that_is_not_there_is_one_line(tiny, tmp_path, capsys):
    spec = write_spec(tmp_path, tiny)
    started = time.perf_counter()
    code = main(
        ["run", str(spec), "--out", str(tmp_path / "r"), "--scheduler", "tcp://127.0.0.1:9"]
    )
    assert code == 2
    assert time.perf_counter() - started < 30
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "--workers 0: give a positive number or 'auto'"),
        (["--workers", "two"], "--workers two: give a positive number or 'auto'"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "not both"),
    ],
)
def test_bad_dask_options_are_one_line(tiny, tmp_path, capsys, flags, message):
    spec = write_spec(tmp_path, tiny)
    assert main(["run", str(spec), "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not list((tmp_path / "r").glob("group-*.nc"))


def test_a_cluster_that_goes_away_is_one_line_and_keeps_the_state(tiny, tmp_path, capsys):
    tiny["data"].update(train_size=2000)
    tiny["training"].update(epochs=200, batch_size=20)
    tiny["resume"] = {"every_epochs": 1}
    spec = write_spec(tmp_path, tiny)
    out = tmp_path / "r"
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.CRITICAL
    )
    result = {}
    argv = ["run", str(spec), "--out", str(out), "--scheduler", cluster.scheduler_address]
    run = threading.Thread(target=lambda: result.update(rc=main(argv)))
    run.start()
    deadline = time.time() + 120
    while not state_path(out, 0).exists() and time.time() < deadline:
        time.sleep(0.05)
    cluster.close()
    run.join(timeout=120)
    assert not run.is_alive(), "the run hung after its cluster went away"
    assert result["rc"] == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the Dask cluster went away" in err, err
    assert state_path(out, 0).exists()


def test_a_missing_dask_extra_names_it(tiny, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_distributed(name, *args, **kwargs):
        if name.split(".")[0] == "distributed":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_distributed)
    argv = ["run", str(write_spec(tmp_path, tiny)), "--out", str(tmp_path / "r")]
    assert main([*argv, "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'nodescope[dask]'" in err


def _two_worker_run(spec: dict, tmp_path, out, stderr) -> subprocess.Popen:
    """`nodescope run --workers 2` in its own process group, as a terminal's foreground job."""
    cmd = [sys.executable, "-m", "nodescope", "run", str(write_spec(tmp_path, spec))]
    return subprocess.Popen(
        [*cmd, "--out", str(out), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_ctrl_c_on_a_local_cluster_is_one_line(tiny, tmp_path):
    """Ctrl-C reaches the terminal's whole process group, the local cluster's workers
    included: the run ends in its one line, without a traceback from any worker."""
    tiny["training"]["epochs"] = 100000  # far longer than the wait below
    tiny["sweep"] = {"seed": [0, 1]}  # one group: one worker trains, one waits
    out = tmp_path / "run"
    proc = _two_worker_run(tiny, tmp_path, out, stderr=subprocess.STDOUT)
    lines: list[str] = []
    training = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "epoch" in line:  # a worker's progress: the workers are up and training
                training.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert training.wait(180), "".join(lines)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=60)
    after = "".join(lines).split("epoch")[-1]
    assert proc.returncode == 130, "".join(lines)
    assert "Traceback" not in after and "interrupted" in after, "".join(lines)
    assert not (out / LOCK_NAME).exists()


def test_a_cluster_that_cannot_start_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    """A worker killed while it starts fails LocalCluster's start with a RuntimeError."""

    def failing_start(*args, **kwargs):
        raise RuntimeError("Nanny failed to start.")

    monkeypatch.setattr(distributed, "LocalCluster", failing_start)
    tiny["sweep"] = {"seed": [0, 1]}
    code = main(
        ["run", str(write_spec(tmp_path, tiny)), "--out", str(tmp_path / "run"), "--workers", "2"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "the local Dask cluster did not start (Nanny failed to start.)" in err
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def _worker_processes(parent: int) -> list[int]:
    """The local cluster's worker processes: children of `parent` started by spawn."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                spawned = b"spawn_main" in f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and spawned:
            found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the workers in /proc")
def test_ctrl_c_while_the_local_cluster_starts_is_one_line(tiny, tmp_path):
    """Ctrl-C while the workers are still importing: before, each printed a
    KeyboardInterrupt traceback and the half-started cluster failed to close at exit
    (AssertionError: Status.init)."""
    tiny["sweep"] = {"seed": [0, 1]}
    out = tmp_path / "run"
    proc = _two_worker_run(tiny, tmp_path, out, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_worker_processes(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # past their first lines, into the second or so of their imports
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.strip().count("\n") == 0 and "interrupted" in stderr, stderr
    assert not (out / LOCK_NAME).exists()
