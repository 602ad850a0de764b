"""Stacked training vs one member at a time, measured in one process.

Trains the same E members (a seed sweep) once as one stacked group and once as E
single-member groups, and prints the wall-time ratio. Run:

    python bench/stacking.py [--members 6] [--width 200] [--epochs 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch

from nodescope.runner.train import train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict

BASE = {
    "experiment": {"name": "bench"},
    "data": {"name": "synthetic_patterns", "train_size": 6000, "val_size": 0, "test_size": 2000},
    "model": {"depth": 1, "width": 200, "bias": "none"},
    "optimiser": {"name": "sgd", "lr": 1.0},
    "training": {"loss": "bce", "batch_size": 64, "epochs": 5},
    "checkpoints": {"log": {"start": 0.01, "stop": 5, "num": 10}},
    "probes": {"curves": {}, "activation_fraction": {}},
}


def timed(groups, device) -> float:
    start = time.perf_counter()
    for g in groups:
        train_group(g, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=6)
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    spec = copy.deepcopy(BASE)
    spec["model"]["width"] = args.width
    spec["training"]["epochs"] = args.epochs
    spec["sweep"] = {"seed": list(range(args.members))}
    stacked = plan(validate_dict(spec, "bench"))
    spec["device"] = {"max_group_size": 1}
    alone = plan(validate_dict(spec, "bench"))
    timed(plan(validate_dict({**spec, "sweep": {"seed": [0]}}, "bench")), device)  # warm-up
    t_alone = timed(alone, device)
    t_stacked = timed(stacked, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device {device} ({name or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{args.members} members, width {args.width}, {args.epochs} epochs")
    print(
        f"one at a time: {t_alone:.2f} s   stacked: {t_stacked:.2f} s   "
        f"speed-up x{t_alone / t_stacked:.2f}"
    )


if __name__ == "__main__":
    main()
