"""`--workers 2` against in-process for a sweep of several groups, whole-process wall time.

Runs `nodescope run` on the same spec three ways in fresh folders: in-process (torch's
default threads), in-process with one thread, and on a local Dask cluster of N
single-threaded workers, and prints the ratios. Run:

    python bench/dask_workers.py [--workers 2] [--groups 4] [--epochs 6]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nodescope.spec.toml_io import dump_toml


def spec(groups: int, epochs: int) -> dict:
    return {
        "experiment": {"name": "bench_dask"},
        "data": {
            "name": "synthetic_patterns",
            "train_size": 6000,
            "val_size": 1000,
            "test_size": 2000,
        },
        "model": {"depth": 2, "width": 64},
        "optimiser": {"name": "adam", "lr": 0.001},
        "training": {"loss": "ce", "batch_size": 32, "epochs": epochs},
        "checkpoints": {"log": {"start": 0.01, "stop": epochs, "num": 20}},
        "probes": {"curves": {}, "sample_sets": {}},
        # groups differ in width; 2 seeds stacked in each
        "sweep": {"seed": [0, 1], "model.width": [48 + 16 * i for i in range(groups)]},
    }


def timed_run(spec_path: Path, out: Path, extra: list[str], env: dict) -> float:
    cmd = [sys.executable, "-m", "nodescope", "run", str(spec_path), "--out", str(out), *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **env})
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "spec.toml"
        path.write_text(dump_toml(spec(args.groups, args.epochs)))
        default = timed_run(path, tmp / "a", [], {})
        one = timed_run(path, tmp / "b", [], {"OMP_NUM_THREADS": "1"})
        dask = timed_run(path, tmp / "c", ["--workers", str(args.workers)], {})
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{args.groups} groups x 2 members, {args.epochs} epochs, whole process:")
    print(f"  in-process, default threads   {default:7.1f} s")
    print(f"  in-process, 1 thread          {one:7.1f} s")
    print(f"  --workers {args.workers}                   {dask:7.1f} s")
    print(
        f"  speed-up of --workers {args.workers}: {default / dask:.2f}x over default threads, "
        f"{one / dask:.2f}x over 1 thread"
    )


if __name__ == "__main__":
    main()
