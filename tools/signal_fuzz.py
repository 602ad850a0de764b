"""Random signals against `nodescope run`, then a re-run, compared with an uninterrupted run.

Each trial starts `nodescope run` on a small synthetic sweep (3 groups of 2 members, 30
epochs, training state saved every 3 epochs, weights stored), sends SIGKILL, SIGINT or
SIGTERM at a random moment of its run time, then runs the same command again. It fails
on: a traceback; an exit other than 0, 130 or -9 (or the signal's own, silently, before
Python has started nodescope); more than one line for an interrupt; a
run that does not end within 60 s of the signal; a re-run that does not finish; a
temporary file or training state left behind; a Dask process left running; results that
differ from the uninterrupted run's (exactly on one process; 1e-6 with --workers, whose
workers use one thread each). Needs no data download. Run:

    python tools/signal_fuzz.py --trials 50 --seed 1
    python tools/signal_fuzz.py --trials 20 --workers 2
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import nodescope

SPEC = """
[experiment]
name = "signal_fuzz"

[data]
name = "synthetic_patterns"
n_dim = 40
n_patterns = 4
pattern_length = 3
train_size = 400
val_size = 100
test_size = 100

[model]
depth = 2
width = 16

[optimiser]
name = "adam"
lr = 0.01

[training]
loss = "ce"
batch_size = 16
epochs = 30

[checkpoints]
weights = true
[checkpoints.log]
start = 0.1
stop = 30
num = 12

[probes]
[probes.curves]
[probes.activation_fraction]
[probes.sample_sets]
split = "val"

[resume]
every_epochs = 3

[sweep]
seed = [0, 1]
"model.width" = [8, 16, 32]
"""
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
NOT_COMPARED = ("wall_time",)


def largest_difference(reference, ds) -> float | str:
    worst = 0.0
    for name in reference.data_vars:
        if name in NOT_COMPARED:
            continue
        a, b = reference[name].values, ds[name].values
        if a.dtype.kind not in "fc":
            if not np.array_equal(a, b):
                return f"{name} differs"
            continue
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return f"{name}: NaN in other places"
        if a.size:
            worst = max(worst, float(np.nanmax(np.abs(a - b), initial=0.0)))
    return worst


def dask_processes() -> int:
    """Processes of Dask or multiprocessing on this machine: run the fuzz where no other
    Dask runs."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        count += b"multiprocessing" in text or b"distributed" in text
    return count


def trial(command, spec, out, sent, delay, reference, tolerance) -> dict:
    record = {"signal": sent, "delay_s": round(delay, 2)}
    proc = subprocess.Popen(
        [*command, str(spec), "--out", str(out)],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(SIGNALS[sent])
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {**record, "problem": "did not end within 60 s of the signal"}
    record["exit"] = proc.returncode
    if "Traceback" in stdout + stderr:
        return {**record, "problem": "traceback: " + stderr[-500:]}
    # In Python's own first milliseconds, before any nodescope code runs, a SIGINT or
    # SIGTERM takes its default action; nothing has been written then.
    before_start = proc.returncode in (-2, -15) and not stderr and not out.exists()
    if proc.returncode not in (0, 130, -9) and not before_start:
        return {**record, "problem": f"exit {proc.returncode}: {stderr[-300:]}"}
    if proc.returncode == 130 and len(stderr.strip().splitlines()) != 1:
        return {**record, "problem": "interrupt not one line: " + stderr[-300:]}
    again = subprocess.run(
        [*command, str(spec), "--out", str(out)], text=True, capture_output=True, timeout=300
    )
    if again.returncode != 0 or "Traceback" in again.stderr:
        return {**record, "problem": f"re-run exit {again.returncode}: {again.stderr[-500:]}"}
    left = [p.name for p in out.glob(".*.tmp")] + [p.name for p in out.glob("state/*")]
    if left:
        return {**record, "problem": f"left behind: {left}"}
    time.sleep(1)  # the workers' exit after the cluster closed
    if dask_processes():
        return {**record, "problem": "a Dask process is still running"}
    difference = largest_difference(reference, nodescope.open(out).load())
    record["difference"] = difference
    if isinstance(difference, str) or difference > tolerance:
        record["problem"] = f"results differ from the uninterrupted run: {difference}"
    return record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="run with --workers N")
    args = ap.parse_args()
    # A background job of a non-interactive shell inherits SIGINT ignored; its children
    # would then ignore the Ctrl-C this sends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # The installed command: `python -m nodescope` imports the package before any of its
    # code can catch a Ctrl-C.
    installed = shutil.which("nodescope")
    if installed is None:
        sys.exit("no `nodescope` command on PATH: install nodescope (README) first")
    command = [installed, "run"] + (["--workers", str(args.workers)] if args.workers else [])
    tolerance = 1e-6 if args.workers else 0.0
    rng = random.Random(args.seed)
    problems = 0
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.toml"
        spec.write_text(SPEC)
        start = time.perf_counter()
        subprocess.run(
            [*command, str(spec), "--out", f"{tmp}/reference"], check=True, capture_output=True
        )
        run_time = time.perf_counter() - start
        reference = nodescope.open(f"{tmp}/reference").load()
        print(f"uninterrupted run: {run_time:.1f} s; signals at 0-{1.1 * run_time:.1f} s")
        for i in range(args.trials):
            out = Path(tmp) / f"trial-{i}"
            sent = rng.choice(list(SIGNALS))
            record = trial(
                command, spec, out, sent, rng.uniform(0, 1.1 * run_time), reference, tolerance
            )
            problems += "problem" in record
            print(json.dumps(record), flush=True)
            shutil.rmtree(out, ignore_errors=True)
    print(f"{args.trials} trials, {problems} with a problem")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
