"""How nodescope's cost scales, measured in one process on MNIST:

1. time per member as the stacked group grows (E = 1, 2, 4, 8, 16, 32), widths 20 and 80,
   one epoch of training alone (the training loop's own time per step, best of --repeat
   runs taken in turn);
2. probe overhead: the sample-set probes at 20 and 50 checkpoints in one short epoch, and
   at the paper's density (a checkpoint every 4 epochs of 48,000), against none;
3. achieved training FLOP/s of a depth-8, width-320 group against a large matmul (one
   epoch of training alone, as in 1).

Run (needs `nodescope fetch mnist`):

    python bench/scaling.py [--train-size 12000] [--members 1 2 4 8 16 32] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

# What `nodescope run` sets for itself (cli.main), set before torch's first allocation so
# that every implementation here, and every child process, runs on the same allocator.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch

from nodescope.runner.allocator import keep_freed_memory
from nodescope.runner.train import train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict
from nodescope.spec.size import parameters_per_member

keep_freed_memory()  # the glibc thresholds of `nodescope run` (runner/allocator.py)


def log_checkpoints(n: int) -> dict:
    return {"log": {"start": 0.01, "stop": 1, "num": n}} if n else {"initial": False}


def spec(
    members: int,
    depth: int,
    width: int,
    train_size: int,
    probes: dict,
    checkpoints: dict,
    epochs: int = 1,
) -> dict:
    return {
        "experiment": {"name": "bench_scaling"},
        "data": {"name": "mnist", "train_size": train_size, "val_size": 12000},
        "model": {"depth": depth, "width": width, "bias": "first"},
        "optimiser": {"name": "adam", "lr": 0.001},
        "training": {"loss": "ce", "batch_size": 60, "epochs": epochs},
        "checkpoints": checkpoints,
        "probes": {"curves": False, **probes},
        "sweep": {"seed": list(range(members))},
    }


def seconds(d: dict) -> float:
    group = plan(validate_dict(d, "bench"))[0]
    start = time.perf_counter()
    train_group(group, torch.device("cpu"))
    return time.perf_counter() - start


def matmul_ceiling(n: int = 2048, repeats: int = 10, dtype=torch.float32) -> float:
    """FLOP/s of an n x n matmul: the machine's practical ceiling for this dtype."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def training_seconds_per_step(d: dict) -> float:
    """Seconds per optimiser step of the training loop itself, from train_group's progress
    reports (every 10 steps): from step 10 to the start of the final evaluation, so data
    building, the first steps' allocations and the final evaluation are left out."""
    group = plan(validate_dict(d, "bench"))[0]
    marks = {}

    def progress(step, total, loss, phase="training"):
        if step == 10 or phase == "final evaluation":
            marks[phase if step != 10 else "start"] = (step, time.perf_counter())

    train_group(group, torch.device("cpu"), progress)
    (first, t0), (last, t1) = marks["start"], marks["final evaluation"]
    return (t1 - t0) / (last - first)


def one_epoch(members: int, depth: int, width: int, n: int, repeat: int = 3) -> float:
    """Seconds of one epoch of training alone (best of `repeat` runs)."""
    d = spec(members, depth, width, n, {}, log_checkpoints(0))
    return min(training_seconds_per_step(d) for _ in range(repeat)) * -(-n // 60)


def per_member(n: int, members: list[int], repeat: int) -> None:
    print(f"1. time per member, one epoch of training alone (best of {repeat}, taken in turn):")
    for width in (20, 80):
        best = {e: float("inf") for e in members}
        for _ in range(repeat):  # in turn, so that a slow spell of the machine hits every E
            for e in members:
                best[e] = min(best[e], one_epoch(e, 1, width, n, repeat=1) / e)
        cells = "  ".join(f"E={e}: {t:.4f} s" for e, t in best.items())
        print(f"   width {width:3d}: {cells}")


def probe_overhead(n: int, epochs: int) -> None:
    print("2. probe overhead, 8 members of 1x80, sample sets on the 12,000 validation samples:")
    base = seconds(spec(8, 1, 80, n, {}, log_checkpoints(0)))
    probes = {"sample_sets": {"split": "val", "churn": False, "node_cost": False}}
    for ck in (20, 50):
        with_probes = seconds(spec(8, 1, 80, n, probes, log_checkpoints(ck)))
        extra = (with_probes / base - 1) * 100
        timing = f"{with_probes:.2f} s, {base:.2f} s without ({extra:+.0f}%)"
        print(f"   {ck} checkpoints in 1 epoch: {timing}")
    # specs/sample_sets.toml: 50 checkpoints in 200 epochs of 48,000, one per 4 epochs
    paper = {"every": 4, "initial": False}
    base = seconds(spec(8, 1, 80, 48000, {}, paper, epochs))
    with_probes = seconds(spec(8, 1, 80, 48000, probes, paper, epochs))
    extra = (with_probes / base - 1) * 100
    print(
        f"   the paper's density (a checkpoint every 4 epochs of 48,000; {epochs} epochs): "
        f"{with_probes:.1f} s, {base:.1f} s without ({extra:+.1f}%)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-size", type=int, default=12000, help="training samples (1 epoch)")
    ap.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--paper-epochs", type=int, default=8, help="epochs at the paper's density")
    ap.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--repeat", type=int, default=5, help="runs per member count (section 1)")
    args = ap.parse_args()
    n = args.train_size
    machine = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"machine: {machine}, {os.cpu_count()} cores, torch {torch.__version__}, {threads}")
    print(f"threads; MNIST, Adam, batch 60, one epoch of {n} training samples")
    seconds(spec(1, 1, 20, 600, {}, log_checkpoints(0)))  # warm-up: data cache, allocator

    if 1 in args.sections:
        per_member(n, args.members, args.repeat)
    if 2 in args.sections:
        probe_overhead(n, args.paper_epochs)

    if 3 in args.sections:
        flops_against_ceiling(n)


def flops_against_ceiling(n: int) -> None:
    """Training FLOP/s of 4 members of 8x320 in one epoch of training alone."""
    print("3. training FLOP/s, 4 members of 8x320 against a 2048^3 matmul:")
    weights = parameters_per_member(validate_dict(spec(4, 8, 320, n, {}, {}), "bench"))
    t = one_epoch(4, 8, 320, n)  # biases are a rounding error in the FLOP count
    steps = -(-n // 60)
    flops = 6 * 60 * weights * 4 * steps  # forward 2 B P, backward about twice that
    ceiling = matmul_ceiling()
    share = flops / t / ceiling * 100
    rate = f"{flops / t / 1e9:.1f} GFLOP/s, ceiling {ceiling / 1e9:.1f} GFLOP/s"
    print(f"   one epoch of training: {t:.2f} s, {rate} ({share:.0f}%)")


if __name__ == "__main__":
    main()
