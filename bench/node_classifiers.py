"""The node_classifiers probe vs per-node scipy and per-node KDEpy, measured in one run.

One checkpoint of a 10x100 ReLU network (one member) with 60,000 training and 10,000 test
samples: the probe fits the discrete and continuous estimates of every (node, class) on
the training pre-activations and scores train and test (70,000 queries per node). The
references do the same work one (node, class) at a time: scipy.stats.gaussian_kde (an
exact sum over all training samples) and KDEpy's FFTKDE (a grid of 2^12 points, then
np.interp at the queries). The references are slow, so they run on a few nodes of layer 1
(and scipy on a slice of the queries as well) and are extrapolated linearly to 1,000 nodes
and 70,000 queries; the script says which numbers are extrapolated. Run:

    python bench/node_classifiers.py [--scipy-nodes 1] [--scipy-queries 2000] [--kdepy-nodes 10]
                                     [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import scipy.stats
import torch

from nodescope.data.prepare import build_group_data
from nodescope.errors import UserError
from nodescope.metrics import PROBES, ProbeContext
from nodescope.models.mlp import StackedMLP
from nodescope.runner.train import record_checkpoint
from nodescope.spec import plan
from nodescope.spec.load import validate_dict

SPEC = {
    "experiment": {"name": "bench"},
    "data": {"name": "mnist", "train_size": 60000, "val_size": 0, "test_size": 10000},
    "model": {"depth": 10, "width": 100, "init": "lecun_uniform"},
    "training": {"loss": "mse"},
    "probes": {"node_classifiers": {"splits": ["train", "test"]}},
}


def setup(device: torch.device):
    group = plan(validate_dict(SPEC, "bench"))[0]
    specs = [m.spec for m in group.members]
    data = build_group_data(specs, device)
    model = StackedMLP(specs, 784, 10).to(device)
    ctx = ProbeContext(1, 1, model.widths, 10, "relu", "mse", data, specs)
    probe = PROBES["node_classifiers"](group.spec.probes.node_classifiers, ctx)
    return model, data, probe


def reference_node(z_train, y_train, queries, kde) -> float:
    """Seconds for the three systems' log-likelihoods of one node, one class at a time."""
    start = time.perf_counter()
    for c in range(10):
        x = z_train[y_train == c]
        on = np.mean(x > 0)
        density = kde(x, queries)
        discrete = np.where(queries > 0, on, 1 - on)
        np.log(np.maximum(density, 1e-300)), np.log(np.maximum(discrete, 1e-6))
    return time.perf_counter() - start


def scipy_kde(x, queries):
    return scipy.stats.gaussian_kde(x, "scott")(queries)


def kdepy_kde(x, queries):
    from KDEpy import FFTKDE

    sigma = np.std(x, ddof=1) * len(x) ** -0.2
    grid, density = FFTKDE(kernel="gaussian", bw=sigma).fit(x).evaluate(2**12)
    return np.interp(queries, grid, density, left=0, right=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scipy-nodes", type=int, default=1)
    ap.add_argument("--scipy-queries", type=int, default=2000)
    ap.add_argument("--kdepy-nodes", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer does
    try:
        model, data, probe = setup(device)
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None

    start = time.perf_counter()
    record_checkpoint(model, data, [probe], 0, "mse", chunk=4096)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ours = time.perf_counter() - start

    with torch.no_grad():
        z_train = model(data.splits["train"].x[0], keep=True).preacts[0][0].cpu().numpy()
        z_test = model(data.splits["test"].x[0], keep=True).preacts[0][0].cpu().numpy()
    y_train = data.splits["train"].labels.cpu().numpy()
    n_nodes, n_queries = 10 * 100, len(z_train) + len(z_test)
    queries = np.concatenate([z_train, z_test])

    t = [
        reference_node(z_train[:, i], y_train, queries[: args.scipy_queries, i], scipy_kde)
        for i in range(args.scipy_nodes)
    ]
    scipy_total = np.mean(t) * n_nodes * n_queries / args.scipy_queries
    t = [
        reference_node(z_train[:, i], y_train, queries[:, i], kdepy_kde)
        for i in range(args.kdepy_nodes)
    ]
    kdepy_total = np.mean(t) * n_nodes

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    threads = torch.get_num_threads()
    print(
        f"device: {device} ({name or platform.machine()}), "
        f"torch {torch.__version__}, {threads} threads"
    )
    print("10x100 ReLU network, 60000 train / 10000 test samples, one checkpoint:")
    print(f"  node_classifiers probe (eval pass included): {ours:8.1f} s")
    print(
        f"  per-node scipy gaussian_kde: {scipy_total:8.0f} s (extrapolated from "
        f"{args.scipy_nodes} node(s) x {args.scipy_queries} queries)  "
        f"ratio x{scipy_total / ours:.0f}"
    )
    print(
        f"  per-node KDEpy FFTKDE + interp: {kdepy_total:8.1f} s (extrapolated from "
        f"{args.kdepy_nodes} nodes)  ratio x{kdepy_total / ours:.1f}"
    )
    acc = probe.results()["layer_accuracy"].sel(split="test").isel(member=0, epoch=0, layer=0)
    print(
        f"  (untrained network, layer 1 test accuracy, {acc.system.values}: {acc.values.round(3)})"
    )


if __name__ == "__main__":
    main()
