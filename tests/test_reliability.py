"""Faults that must never lose or silently change finished results."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nodescope
from nodescope.cli import main
from nodescope.errors import UserError
from nodescope.results.integrity import LOCK_NAME, FolderLock, damage
from nodescope.runner.store import write_atomic
from nodescope.spec.toml_io import dump_toml


def write_spec(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(dump_toml(spec))
    return path


def lock_as(run_dir: Path, pid: int, host: str | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "since": time.time()}
    (run_dir / LOCK_NAME).write_text(json.dumps(owner))


def test_a_folder_in_use_refuses_a_second_run_even_with_fresh(tiny, tmp_path, capsys):
    spec = write_spec(tmp_path, tiny)
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    lock_as(out, os.getppid())  # a live process on this host owns it
    for extra in ([], ["--fresh"]):
        capsys.readouterr()
        assert main(["run", str(spec), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert f"in use by another nodescope run (pid {os.getppid()}" in err
        assert err.count("\n") == 1
    assert (out / "group-000.nc").exists()  # --fresh deleted nothing
    lock_as(out, 12345, host="another-host")
    assert main(["probe", str(out), "--add", "activation_fraction"]) == 2


def test_a_stale_lock_is_taken_over(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    lock_as(out, 2**22 + 12345)  # above the kernel's pid limit: no such process
    assert main(["run", str(write_spec(tmp_path, tiny)), "--out", str(out)]) == 0
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists()


def test_lock_is_exclusive_within_a_process(tmp_path):
    with FolderLock(tmp_path / "run"):
        lock = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert lock["pid"] == os.getpid()
        with pytest.raises(UserError, match="in use by another nodescope run"):
            FolderLock(tmp_path / "run").__enter__()
    assert not (tmp_path / "run").exists()  # an empty folder is not left behind


def test_a_flipped_byte_is_named_and_the_group_redone(tiny, tmp_path, capsys):
    spec = write_spec(tmp_path, tiny)
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    before = nodescope.open(out).activation_fraction.load()
    path = out / "group-000.nc"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert damage(path) is not None
    with pytest.raises(UserError, match="group-000.nc is damaged"):
        nodescope.open(out)
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "group-000.nc is damaged" in err and "run the spec again" in err
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert "already stored" not in capsys.readouterr().out
    xr.testing.assert_equal(nodescope.open(out).activation_fraction.load(), before)


def read_only_prefix(folder: Path) -> list[str] | None:
    """A command prefix under which `folder` cannot be written, or None where none works.

    Root ignores file modes, so as root the folder is bind-mounted read-only in a private
    mount namespace (a read-only share of results, as on a cluster); otherwise its mode is
    set to r-x.
    """
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    if not (shutil.which("unshare") and shutil.which("mount")):
        return None
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    prefix = ["unshare", "--mount", "sh", "-c", script, "sh", str(folder)]
    probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True)
    return prefix if probe.returncode != 0 and not (folder / "probe").exists() else None


def test_a_read_only_folder_is_one_line_and_its_results_stay_readable(tiny, tmp_path, capsys):
    tiny["sweep"] = {"model.width": [8, 16]}
    spec = write_spec(tmp_path, tiny)
    shared = tmp_path / "shared"
    run = shared / "run"
    assert main(["run", str(spec), "--out", str(run)]) == 0
    for unfinished in run.glob("group-001.nc*"):  # as if the run had stopped after group 0
        unfinished.unlink()
    stored = {p.name: p.read_bytes() for p in run.iterdir()}
    prefix = read_only_prefix(shared)
    if prefix is None:
        pytest.skip("no way to make a folder read-only for this user")

    def nodescope_cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [*prefix, sys.executable, "-m", "nodescope", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    try:
        for args, fix in [
            (("run", str(spec), "--out", str(run)), "--out DIR"),
            (("run", str(spec), "--out", str(run), "--fresh"), "--out DIR"),
            (("run", str(spec), "--out", str(shared / "new")), "--out DIR"),
            (("plot", str(run)), "--out DIR"),
            (("probe", str(run), "--add", "sample_sets"), "--out DIR"),
        ]:
            done = nodescope_cli(*args)
            assert done.returncode == 2, (args, done.stderr)
            assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
            assert fix in done.stderr and str(shared) in done.stderr, done.stderr
        report = nodescope_cli("report", str(run))
        assert report.returncode == 0 and "width" in report.stdout, report.stderr
        opened = subprocess.run(
            [
                *prefix,
                sys.executable,
                "-c",
                f"import nodescope; print(nodescope.open({str(run)!r}).width.values.tolist())",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert opened.returncode == 0 and opened.stdout.strip() == "[8]", opened.stderr
    finally:
        shared.chmod(0o755)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == stored
    assert main(["run", str(spec), "--out", str(run)]) == 0
    assert len(list(run.glob("group-*.nc"))) == 2
    assert "1 already stored" in capsys.readouterr().out


def test_a_full_disk_loses_no_finished_group(tiny, tmp_path, capsys, monkeypatch):
    tiny["sweep"] = {"model.width": [8, 16]}  # two groups
    spec = write_spec(tmp_path, tiny)
    out = tmp_path / "run"
    real = xr.Dataset.dump_to_store  # how write_atomic writes a group file's contents
    calls = []

    def second_write_fails(self, store, *args, **kwargs):
        calls.append(store)
        if len(calls) == 2:  # the file is created, half its contents written
            real(self, store, *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, store, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "dump_to_store", second_write_fails)
    assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(xr.Dataset, "dump_to_store", real)
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert "1 already stored" in capsys.readouterr().out


def test_concurrent_writers_never_leave_an_unreadable_file(tmp_path):
    path = tmp_path / "group-000.nc"
    errors = []

    def writer(value: float) -> None:
        try:
            for _ in range(8):
                write_atomic(xr.Dataset({"v": ("x", np.full(1000, value))}), path)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(float(i),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with xr.open_dataset(path) as ds:
        assert len(set(ds.v.values.tolist())) == 1
    assert damage(path) is None
    assert not list(tmp_path.glob(".*.tmp"))


def test_sigterm_ends_a_run_in_one_line_and_leaves_nothing_behind(tiny, tmp_path):
    tiny["training"]["epochs"] = 5000  # far longer than the 3 s before the signal
    tiny["sweep"] = {"model.width": [8, 16]}
    spec = write_spec(tmp_path, tiny)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nodescope", "run", str(spec), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / LOCK_NAME).exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().count("\n") == 0 and "interrupted" in err
    assert not (out / LOCK_NAME).exists()
    assert not list(out.glob(".*.tmp"))


# A run whose Ctrl-C or SIGTERM arrives while the netCDF library writes a group file, on
# the first variable: raised there, the interrupt once left the HDF5 lock held, and the
# file's cleanup then waited for it forever.
_SIGNAL_DURING_WRITE = """
import os, signal, sys
from xarray.backends.netCDF4_ import NetCDF4DataStore

spec, out, sent = sys.argv[1], sys.argv[2], getattr(signal, sys.argv[3])
original = NetCDF4DataStore.prepare_variable

def prepare_variable(self, *args, **kwargs):
    NetCDF4DataStore.prepare_variable = original
    os.kill(os.getpid(), sent)
    return original(self, *args, **kwargs)

NetCDF4DataStore.prepare_variable = prepare_variable
from nodescope.cli import main
sys.exit(main(["run", spec, "--out", out]))
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_during_a_group_write_waits_until_the_file_is_in_place(
    tiny, tmp_path, signal_name
):
    spec = write_spec(tmp_path, tiny)
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", _SIGNAL_DURING_WRITE, str(spec), str(out), signal_name]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "interrupted" in done.stderr
    group = out / "group-000.nc"
    assert group.exists() and damage(group) is None
    assert not list(out.glob(".*.tmp")) and not (out / LOCK_NAME).exists()
    stored = group.stat().st_mtime_ns
    again = subprocess.run(
        [sys.executable, "-m", "nodescope", "run", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert group.stat().st_mtime_ns == stored  # kept, not trained again
    assert nodescope.open(out).sizes["epoch"] > 1


def test_diverged_members_are_recorded_and_the_rest_trains_unchanged(tiny, tmp_path, capsys):
    tiny["optimiser"] = {"name": "sgd", "lr": 0.05}
    tiny["training"]["loss"] = "mse"
    tiny["probes"] = {"curves": {}, "sample_sets": {}}
    alone = tmp_path / "alone"
    assert main(["run", str(write_spec(tmp_path, tiny)), "--out", str(alone)]) == 0
    tiny["sweep"] = {"optimiser.lr": [0.05, 1e6]}
    both = tmp_path / "both"
    capsys.readouterr()
    assert main(["run", str(write_spec(tmp_path, tiny)), "--out", str(both)]) == 0
    out = capsys.readouterr().out
    assert "diverged" in out and "lr=1000000.0" in out
    ds, ref = nodescope.open(both).isel(seed=0), nodescope.open(alone).isel(seed=0)
    assert int(ds.diverged.sel(lr=0.05)) == 0 and int(ds.diverged.sel(lr=1e6)) == 1
    assert float(ds.diverged_epoch.sel(lr=1e6)) == 1
    bad = ds.sel(lr=1e6)
    assert bad.final_accuracy.isnull().all() and bad.final_loss.isnull().all()
    assert bad.activation_fraction.isel(epoch=slice(1, None)).isnull().all()
    assert bad.activation_fraction.isel(epoch=0).notnull().any()  # before it diverged
    good = ds.sel(lr=0.05)
    np.testing.assert_allclose(good.final_loss.values, ref.final_loss.values)
    np.testing.assert_allclose(
        good.activation_fraction.values, ref.activation_fraction.values, equal_nan=True
    )


def _file_size_limit(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize(
    ("file", "limit"), [("group-000.nc", 16384), ("state/group-000.pt", 16384), (LOCK_NAME, 10)]
)
def test_a_write_the_system_refuses_is_one_line_and_leaves_nothing_behind(
    tiny, tmp_path, file, limit
):
    """A real refused write, not a mocked OSError: netCDF and torch.save report a full disk
    or a file-size limit as a RuntimeError that has lost the system's error. A 16 KB
    file-size limit lets the spec files through and stops the group file (48 KB) or the
    training state (width 400: about 200 KB); 10 bytes stop the folder's lock file."""
    if file.startswith("state"):
        tiny["model"]["width"] = 400
        tiny["resume"] = {"every_epochs": 1}
    spec = write_spec(tmp_path, tiny)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nodescope", "run", str(spec), "--out", str(out)]
    limited = subprocess.run(
        cmd, capture_output=True, text=True, preexec_fn=_file_size_limit(limit), timeout=300
    )
    assert limited.returncode == 2, limited.stderr
    assert limited.stderr.count("\n") == 1 and "Traceback" not in limited.stderr
    assert f"cannot write {out / file} (File too large); raise the file-size limit" in (
        limited.stderr.replace("\n", "")
    )
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("group-*"))
    assert not (out / LOCK_NAME).exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert damage(out / "group-000.nc") is None


def test_a_library_error_that_is_not_about_the_disk_stays_itself(tmp_path):
    from nodescope.results.integrity import write_file_atomic

    def half_then_bug(tmp: Path) -> None:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("NetCDF: not a disk problem")

    with pytest.raises(RuntimeError, match="not a disk problem"):
        write_file_atomic(tmp_path / "group-000.nc", half_then_bug)
    assert not list(tmp_path.iterdir())


def test_a_full_disk_from_the_start_is_one_line_naming_the_file(
    tiny, tmp_path, capsys, monkeypatch
):
    spec = write_spec(tmp_path, tiny)
    out = tmp_path / "run"

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", disk_full)
    assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err, err
    assert str(out / "spec.toml") in err.replace("\n", "")
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("killed_at", [1, 2])
def test_a_writer_killed_between_its_renames_leaves_a_file_that_verifies(
    tmp_path, monkeypatch, killed_at
):
    """write_file_atomic renames two files (the data and its checksum sidecar); a process
    killed after either rename must leave a complete file that `damage` accepts."""
    from nodescope.results import integrity
    from nodescope.results.integrity import write_file_atomic

    path = tmp_path / "state.pt"
    write_file_atomic(path, lambda tmp: tmp.write_bytes(b"first version"))
    real, renames = os.replace, []

    def killed(src, dst):
        renames.append(dst)
        if len(renames) == killed_at:
            raise SystemExit("killed")
        real(src, dst)

    monkeypatch.setattr(integrity.os, "replace", killed)
    with pytest.raises(SystemExit):
        write_file_atomic(path, lambda tmp: tmp.write_bytes(b"second version!"))
    monkeypatch.setattr(integrity.os, "replace", real)
    assert damage(path) is None, path.read_bytes()
    path.write_bytes(b"first versioX")  # a damaged file is still caught
    assert damage(path) is not None


def test_a_checksum_cache_that_cannot_be_written_leaves_no_temporary_file(tmp_path, monkeypatch):
    import hashlib

    from nodescope.results.provenance import cached_sha256

    group = tmp_path / "group-000.nc"
    group.write_bytes(b"finished results")
    real = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real(self, text[:3])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", half_then_full)
    assert cached_sha256(group) == hashlib.sha256(b"finished results").hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["group-000.nc"]


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_figures_the_disk_refuses_are_one_line_and_keep_the_earlier_ones(tiny, tmp_path):
    run = tmp_path / "run"
    assert main(["run", str(write_spec(tmp_path, tiny)), "--out", str(run)]) == 0
    assert main(["plot", str(run)]) == 0
    figures = run / "figures"
    before = {p.name: p.read_bytes() for p in figures.iterdir()}
    assert "curves.png" in before
    cmd = [sys.executable, "-m", "nodescope", "plot", str(run)]
    limited = subprocess.run(
        cmd, capture_output=True, text=True, preexec_fn=_file_size_limit(1000), timeout=300
    )
    assert limited.returncode == 2, limited.stderr
    assert limited.stderr.count("\n") == 1 and "Traceback" not in limited.stderr
    assert "(File too large)" in limited.stderr and ".png" in limited.stderr
    assert {p.name: p.read_bytes() for p in figures.iterdir()} == before


def test_a_damaged_stored_spec_is_one_line_and_keeps_the_results(tiny, tmp_path, capsys):
    spec = write_spec(tmp_path, tiny)
    run = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run)]) == 0
    group = (run / "group-000.nc").read_bytes()
    with (run / "resolved_spec.toml").open("a") as f:
        f.write("half a line [[\n")
    capsys.readouterr()
    assert main(["run", str(spec), "--out", str(run)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "resolved_spec.toml: TOML syntax error" in err and "the stored spec is damaged" in err
    assert "pass --fresh to replace the results" in err
    assert (run / "group-000.nc").read_bytes() == group
