"""Peak memory of `nodescope.open` plus one selection, against loading everything eagerly.

Writes a results folder with the shapes of the sample-set grid (specs/sample_sets.toml:
54 members in 18 groups, 50 log-spaced checkpoints, sample_sets probe with churn and node
cost, padded to 8 layers x 320 nodes) filled with random values, then measures in fresh
child processes:

- lazy: `ds = nodescope.open(run)`, then `ds.sel(depth=8, width=320).activation_fraction.load()`
- eager: `nodescope.open(run).load()`, what a fully in-memory reader pays

Run:  python bench/open_memory.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_grid(run_dir: Path) -> None:
    """Group files of the sample-set grid with random probe values of the real shapes."""
    from nodescope.metrics.base import variable
    from nodescope.results.folder import RESOLVED_NAME
    from nodescope.runner.store import group_dataset, group_path, write_atomic
    from nodescope.runner.train import GroupRun
    from nodescope.spec import checkpoint_steps, load_spec, plan, resolved_toml

    spec, _ = load_spec(ROOT / "specs/sample_sets.toml")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESOLVED_NAME).write_text(resolved_toml(spec) + "\n")
    rng = np.random.default_rng(0)
    for group in plan(spec):
        widths = group.spec.model.hidden_widths()
        steps = checkpoint_steps(group.spec)
        E, T, C = len(group.members), len(steps), 10
        node = ("member", "epoch", "layer", "node")

        def per_node(*rest, E=E, T=T, widths=widths):
            values = np.full((E, T, len(widths), max(widths), *rest), np.nan)
            for layer, h in enumerate(widths):
                values[:, :, layer, :h] = rng.random((E, T, h, *rest))
            return values

        variables = {
            "activation_fraction": variable((*node, "label"), per_node(C), "f", "1", ""),
            "node_cost": variable((*node, "label"), per_node(C), "c", "1", ""),
        }
        for name in (
            "predictability",
            "informativeness",
            "dead",
            "always_active",
            "entered",
            "left",
        ):
            variables[name] = variable(node, per_node(), name, "1", "")
        for name in ("final_loss", "final_accuracy"):
            variables[name] = variable(("member", "split"), rng.random((E, 3)), name, "1", "")
            variables[name] = variables[name].assign_coords(split=["train", "val", "test"])
        variables["stop_epoch"] = variable(("member",), np.full(E, np.nan), "s", "epoch", "")
        variables["wall_time"] = variable(("member",), np.ones(E), "w", "s", "")
        run = GroupRun(
            variables, steps, group.spec.steps_per_epoch(), widths, [str(c) for c in range(C)], 1.0
        )
        write_atomic(group_dataset(spec, group, run, "cpu"), group_path(run_dir, group))


def high_water_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would carry the parent's
    peak across the spawn's exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(run_dir: str, mode: str, queue) -> None:
    import dask.array  # noqa: F401  imports are paid by both modes; measure the data alone
    import netCDF4  # noqa: F401

    import nodescope
    import nodescope.results.lazy  # noqa: F401

    before = high_water_mb()
    started = time.perf_counter()
    ds = nodescope.open(run_dir)
    if mode == "lazy":
        values = ds.sel(depth=8, width=320).activation_fraction.load()
    else:
        values = ds.load().activation_fraction
    seconds = time.perf_counter() - started
    queue.put((high_water_mb() - before, seconds, values.nbytes / 2**20))


def measure(run_dir: Path, mode: str) -> tuple[float, float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=peak_rss, args=(str(run_dir), mode, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="write the grid here and keep it")
    args = ap.parse_args()
    run_dir = Path(args.keep or tempfile.mkdtemp()) / "sample_sets_grid"
    write_grid(run_dir)
    size = sum(f.stat().st_size for f in run_dir.glob("group-*.nc")) / 2**20
    print(f"sample-set grid: 54 members, 18 group files, {size:.0f} MB on disk")
    eager_mb, eager_s, eager_bytes = measure(run_dir, "eager")
    lazy_mb, lazy_s, lazy_bytes = measure(run_dir, "lazy")
    print(
        f"eager open + load:      +{eager_mb:.0f} MB peak RSS, {eager_s:.1f} s "
        f"(activation_fraction alone {eager_bytes:.0f} MB)"
    )
    print(
        f"lazy open + selection:  +{lazy_mb:.0f} MB peak RSS, {lazy_s:.1f} s "
        f"(selection {lazy_bytes:.1f} MB)"
    )
    print(f"ratio lazy / eager: {lazy_mb / eager_mb:.3f}")


if __name__ == "__main__":
    main()
