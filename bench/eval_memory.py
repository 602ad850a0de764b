"""Peak memory of a checkpoint eval pass: chunked vs the whole split at once.

Each setting runs in a fresh child process (peak RSS cannot be reset inside one), and
the script prints the ratio against the unchunked baseline. Run:

    python bench/eval_memory.py [--samples 20000] [--width 1000] [--chunks 1024 4096]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource

BASE = {
    "experiment": {"name": "bench"},
    "data": {"name": "synthetic_patterns", "train_size": 100, "val_size": 0},
    "model": {"depth": 2, "width": 1000},
    "training": {"loss": "ce", "epochs": 1},
    "probes": {"curves": {}, "sample_sets": {"split": "test"}},
    "sweep": {"seed": [0, 1, 2, 3]},
}


def peak_rss_mb(samples: int, width: int, chunk: int, queue) -> None:
    import torch

    from nodescope.data.prepare import build_group_data
    from nodescope.metrics import PROBES, ProbeContext
    from nodescope.models.mlp import StackedMLP
    from nodescope.runner.train import record_checkpoint
    from nodescope.spec import plan
    from nodescope.spec.load import validate_dict

    spec = {
        **BASE,
        "data": {**BASE["data"], "test_size": samples},
        "model": {**BASE["model"], "width": width},
    }
    group = plan(validate_dict(spec, "bench"))[0]
    specs = [m.spec for m in group.members]
    data = build_group_data(specs, torch.device("cpu"))
    model = StackedMLP(specs, 500, 2)
    ctx = ProbeContext(len(specs), 1, model.widths, 2, "relu", "ce", data, specs)
    probes = [PROBES[n](o, ctx) for n, o in group.spec.probes.enabled()]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record_checkpoint(model, data, probes, 0, "ce", chunk)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((after - before) / 1024)


def measure(samples: int, width: int, chunk: int) -> float:
    queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=peak_rss_mb, args=(samples, width, chunk, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1024, 4096])
    args = ap.parse_args()
    base = measure(args.samples, args.width, args.samples)
    print(
        f"eval pass over {args.samples} samples, 4 members, 2 layers x {args.width}, "
        "sample_sets probe with churn and node cost"
    )
    print(f"whole split at once: +{base:.0f} MB peak RSS")
    for chunk in args.chunks:
        mb = measure(args.samples, args.width, chunk)
        print(f"chunks of {chunk}: +{mb:.0f} MB peak RSS, ratio {mb / base:.2f}")


if __name__ == "__main__":
    main()
