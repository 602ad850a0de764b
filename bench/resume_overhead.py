"""What saving the training state costs: seconds per save, file size, and the overhead of
saving at the default interval and after every epoch, measured in one process. Run:

    python bench/resume_overhead.py [--width 320] [--depth 8] [--members 3] [--epochs 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from nodescope.runner.resume import StateFile, state_path
from nodescope.runner.train import train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict


def spec(args, every_epochs: int) -> dict:
    return {
        "experiment": {"name": "bench_resume"},
        "data": {
            "name": "synthetic_patterns",
            "n_dim": 784,
            "n_patterns": 10,
            "pattern_length": 40,
            "train_size": 6000,
            "val_size": 2000,
            "test_size": 2000,
        },
        "model": {"depth": args.depth, "width": args.width},
        "optimiser": {"name": "adam", "lr": 0.001},
        "training": {"loss": "ce", "batch_size": 60, "epochs": args.epochs},
        "checkpoints": {"log": {"start": 0.01, "stop": args.epochs, "num": 48}},
        "probes": {"curves": {}, "sample_sets": {}},
        "sweep": {"seed": list(range(args.members))},
        "resume": {"every_epochs": every_epochs, "every_minutes": 0},
    }


class TimedStateFile(StateFile):
    seconds: list[float] = []

    def save(self, state, epochs_done):
        start = time.perf_counter()
        super().save(state, epochs_done)
        self.seconds.append(time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    cpu = torch.device("cpu")
    plain = plan(validate_dict(spec(args, 0), "bench"))[0]
    saving = plan(validate_dict(spec(args, 1), "bench"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_group(plain, cpu)
        t_plain = time.perf_counter() - start
        path = state_path(Path(tmp), 0)
        size = {}

        class Sized(TimedStateFile):
            def save(self, state, epochs_done):
                super().save(state, epochs_done)
                size["bytes"] = path.stat().st_size

        start = time.perf_counter()
        train_group(saving, cpu, None, Sized(path, saving))
        t_saving = time.perf_counter() - start
    per_save = sum(TimedStateFile.seconds) / len(TimedStateFile.seconds)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(
        f"group: {args.members} members, depth {args.depth} x width {args.width}, Adam, "
        f"sample_sets at 48 checkpoints, {args.epochs} epochs of 100 steps"
    )
    print(
        f"state file: {size['bytes'] / 1e6:.1f} MB, {per_save:.3f} s per save "
        f"({len(TimedStateFile.seconds)} saves)"
    )
    print(
        f"training without saving {t_plain:.1f} s, saving after every epoch {t_saving:.1f} s "
        f"({(t_saving / t_plain - 1) * 100:+.1f}%)"
    )
    print(
        f"overhead at the default interval (one save per 10 minutes): {per_save / 600 * 100:.3f}%"
    )


if __name__ == "__main__":
    main()
