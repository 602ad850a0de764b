"""nodescope against what a skilled user would write by hand, on the sample-set slice.

The same experiment three ways, measured in one process: the members' initial weights,
batch orders and data are nodescope's, so all three do the same arithmetic and their
probe values agree (tests/test_baselines.py checks it on a tiny case).

- naive: one model at a time, a DataLoader over the member's batch order, nn.Sequential,
  forward hooks on the ReLUs at every checkpoint;
- vmap: a `torch.func` ensemble (stack_module_state + functional_call + vmap), one Adam
  over the stacked parameters, the probe counts from the vmapped forward;
- nodescope: `train_group` of the stacked group.

Probes at every checkpoint on the validation split: per-node, per-class activation
fraction, predictability and informativeness (paper 1, eqs. 9-15). Each is timed in this
process (best of --repeat, taken in turn) and as a fresh process with its imports:
`nodescope run` of the slice's spec (results stored, report printed) against this script
running one baseline. Run:

    python bench/baselines.py                 # the two slices of the performance issue
    python bench/baselines.py --seeds 9 --depth 1 --width 20 --epochs 2 [--loss mse]
    python bench/baselines.py --larger --epochs 3  # both losses, widths 20 and 80
    python bench/baselines.py --float64-cost       # float64 against float32, each

Needs MNIST (`nodescope fetch mnist`).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# What `nodescope run` sets for itself (cli.main), set before torch's first allocation so
# that every implementation here, and every child process, runs on the same allocator.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch
from torch import nn

from nodescope.data.prepare import build_group_data
from nodescope.data.seeds import stream_seed
from nodescope.metrics.sample_sets import activation_fraction, informativeness, predictability
from nodescope.models.loss import n_outputs
from nodescope.models.mlp import StackedMLP
from nodescope.results.weights import member_sequential
from nodescope.runner.allocator import keep_freed_memory
from nodescope.runner.train import train_group
from nodescope.spec import checkpoint_steps, plan
from nodescope.spec.load import validate_dict
from nodescope.spec.toml_io import dump_toml, read_toml

keep_freed_memory()  # the glibc thresholds of `nodescope run` (runner/allocator.py)

PROBES = ("activation_fraction", "predictability", "informativeness")


def slice_spec(
    seeds: int,
    depth: int,
    width: int,
    epochs: int,
    checkpoints: int = 20,
    dtype="float32",
    loss: str = "ce",
) -> dict:
    """The sample-set slice: MNIST, Adam, batch 60, log-spaced checkpoints."""
    return {
        "experiment": {"name": "bench_baselines"},
        "data": {"name": "mnist", "val_size": 12000},
        "model": {"depth": depth, "width": width, "bias": "first"},
        "optimiser": {"name": "adam", "lr": 0.001},
        "training": {"loss": loss, "batch_size": 60, "epochs": epochs, "dtype": dtype},
        "checkpoints": {"log": {"start": 0.01, "stop": epochs, "num": checkpoints}},
        "probes": {
            "curves": False,  # the baselines compute only the sample-set probes
            "sample_sets": {"split": "val", "churn": False, "node_cost": False},
        },
        "sweep": {"seed": list(range(seeds))},
    }


def group_of(spec: dict):
    return plan(validate_dict(spec, "bench"))[0]


def _setup(group, device):
    """nodescope's data, initial networks and batch-order generators of a group."""
    specs = [m.spec for m in group.members]
    dtype = getattr(torch, group.spec.training.dtype)
    data = build_group_data(specs, device, dtype)
    outputs = n_outputs(group.spec.training.loss, data.n_classes)
    model = StackedMLP(specs, group.spec.data.num_features, outputs)
    model = model.to(device=device, dtype=dtype)
    orders = [torch.Generator().manual_seed(stream_seed(s.training.seed, "order")) for s in specs]
    return specs, data, model, orders


def _probe_values(on_counts: torch.Tensor, class_counts: torch.Tensor) -> dict:
    """(…, H, C) on-counts → the three probes; float64 on the host."""
    on_counts, class_counts = on_counts.cpu(), class_counts.cpu()
    return {
        "activation_fraction": activation_fraction(on_counts, class_counts),
        "predictability": predictability(on_counts, class_counts),
        "informativeness": informativeness(on_counts, class_counts),
    }


def batch_loss(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The mean loss of a batch, as one would write it with torch (ce or mse on one-hot)."""
    if kind == "ce":
        return nn.functional.cross_entropy(out, y)
    return nn.functional.mse_loss(out, nn.functional.one_hot(y, out.shape[-1]).to(out.dtype))


def run_nodescope(group, device) -> dict:
    """{probe: (E, T, L, H, C) or (E, T, L, H)} from nodescope's stored variables."""
    variables = train_group(group, device).variables
    return {name: torch.as_tensor(variables[name].values) for name in PROBES}


def run_naive(group, device, chunk: int = 4096) -> dict:
    specs, data, stacked, orders = _setup(group, device)
    val = data.splits["val"]
    class_counts = torch.bincount(val.labels, minlength=data.n_classes)
    per_member = [
        _naive_member(member_sequential(stacked, e), spec, orders[e], data, group, device, chunk)
        for e, spec in enumerate(specs)
    ]
    return _stack_counts(per_member, stacked.widths, class_counts)


def _naive_member(model, spec, order, data, group, device, chunk) -> list:
    """Train one member with a DataLoader; on-counts per checkpoint from ReLU hooks."""
    train, val = data.splits["train"], data.splits["val"]
    x_train, y_train = train.inputs(torch.arange(train.size, device=device)), train.labels
    x_val, y_val = val.inputs(torch.arange(val.size, device=device)), val.labels
    n_classes, steps = data.n_classes, checkpoint_steps(group.spec)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=spec.optimiser.lr)
    relus = [m for m in model if isinstance(m, nn.ReLU)]
    counts = []

    def checkpoint() -> None:
        model.eval()
        on = [torch.zeros(m.out_features, n_classes, device=device) for m in model[:-1:2]]
        current = {}
        hooks = [
            relu.register_forward_hook(lambda mod, inp, out, i=i: current.update({i: out}))
            for i, relu in enumerate(relus)
        ]
        with torch.no_grad():
            for start in range(0, val.size, chunk):
                model(x_val[start : start + chunk])
                one_hot = nn.functional.one_hot(y_val[start : start + chunk], n_classes).float()
                for i, out in current.items():
                    on[i] += (out > 0).float().T @ one_hot
        for h in hooks:
            h.remove()
        counts.append(on)
        model.train()

    step = 0
    if 0 in steps:
        checkpoint()
    for _ in range(group.spec.training.epochs):
        sampler = torch.randperm(train.size, generator=order).tolist()
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x_train, y_train),
            batch_size=group.spec.batch_size(),
            sampler=sampler,
        )
        for x, y in loader:
            loss = batch_loss(model(x), y, group.spec.training.loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step in steps:
                checkpoint()
    return counts


def run_vmap(group, device, chunk: int = 4096) -> dict:
    from torch.func import functional_call, stack_module_state, vmap

    specs, data, stacked, orders = _setup(group, device)
    train, val = data.splits["train"], data.splits["val"]
    x_train, y_train = train.inputs(torch.arange(train.size, device=device)), train.labels
    x_val, y_val = val.inputs(torch.arange(val.size, device=device)), val.labels
    n_classes, steps = data.n_classes, checkpoint_steps(group.spec)
    batch, epochs = group.spec.batch_size(), group.spec.training.epochs
    loss = group.spec.training.loss
    class_counts = torch.bincount(y_val, minlength=n_classes)
    models = [member_sequential(stacked, e) for e in range(len(specs))]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    opt = torch.optim.Adam(params.values(), lr=specs[0].optimiser.lr)
    relu_at = [i for i, m in enumerate(models[0]) if isinstance(m, nn.ReLU)]

    # one-hot targets made outside vmap (one_hot inspects values, which vmap cannot batch)
    fit = y_train if loss == "ce" else nn.functional.one_hot(y_train, n_classes).to(x_train.dtype)

    def loss_one(p, b, x, t):
        out = functional_call(base, (p, b), (x,))
        return (
            nn.functional.cross_entropy(out, t) if loss == "ce" else nn.functional.mse_loss(out, t)
        )

    def hidden_one(p, b, x):
        outs, h = [], x
        for i, module in enumerate(base):
            names = {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith(f"{i}.")}
            h = functional_call(module, names, (h,)) if names else module(h)
            if i in relu_at:
                outs.append(h > 0)
        return outs

    grad_all = vmap(torch.func.grad(loss_one), in_dims=(0, 0, 0, 0))
    hidden_all = vmap(hidden_one, in_dims=(0, 0, None))
    counts = []

    def checkpoint() -> None:
        on = [torch.zeros(len(specs), w, n_classes, device=device) for w in stacked.widths]
        with torch.no_grad():
            for start in range(0, val.size, chunk):
                one_hot = nn.functional.one_hot(y_val[start : start + chunk], n_classes).float()
                for i, h in enumerate(hidden_all(params, buffers, x_val[start : start + chunk])):
                    on[i] += h.float().transpose(1, 2) @ one_hot
        counts.append(on)

    step = 0
    if 0 in steps:
        checkpoint()
    for _ in range(epochs):
        perm = torch.stack([torch.randperm(train.size, generator=g) for g in orders]).to(device)
        for start in range(0, train.size, batch):
            index = perm[:, start : start + batch]
            grads = grad_all(params, buffers, x_train[index], fit[index])
            for name, p in params.items():
                p.grad = grads[name]
            opt.step()
            step += 1
            if step in steps:
                checkpoint()
    per_member = [[[layer[e] for layer in ck] for ck in counts] for e in range(len(specs))]
    return _stack_counts(per_member, stacked.widths, class_counts)


def _stack_counts(per_member, widths, class_counts) -> dict:
    """Per member, per checkpoint, per layer (H_l, C) on-counts → (E, T, L, H, C) probes,
    nodes beyond a layer's width NaN as nodescope stores them."""
    width = max(widths)
    values = {name: [] for name in PROBES}
    for counts in per_member:
        rows = {name: [] for name in PROBES}
        for ck in counts:
            layers = {name: [] for name in PROBES}
            for on in ck:
                for name, v in _probe_values(on, class_counts).items():
                    pad = [0, 0] * (v.dim() - 1) + [0, width - v.shape[0]]
                    layers[name].append(nn.functional.pad(v, pad, value=float("nan")))
            for name in PROBES:
                rows[name].append(torch.stack(layers[name]))
        for name in PROBES:
            values[name].append(torch.stack(rows[name]))
    return {name: torch.stack(v) for name, v in values.items()}


def timed(fn, *args) -> tuple[float, dict]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


IMPLEMENTATIONS = {"nodescope": run_nodescope, "vmap": run_vmap, "naive": run_naive}


def best_in_process(
    groups: list, device, repeat: int, implementations: dict = IMPLEMENTATIONS
) -> tuple[list[dict], list[dict]]:
    """Per group, the best time of `repeat` runs of each implementation, all taken in turn
    so that a slow phase of a shared machine does not fall on one of them; the last
    run's values."""
    times = [{name: float("inf") for name in implementations} for _ in groups]
    values = [{} for _ in groups]
    for _ in range(repeat):
        for name, run in implementations.items():
            for i, group in enumerate(groups):
                seconds, values[i][name] = timed(run, group, device)
                times[i][name] = min(times[i][name], seconds)
    return times, values


def largest_difference(ours: dict, theirs: dict) -> float:
    """Largest |difference| over the probe values both sides have (a value can be NaN on
    one side only where float drift switched a node off for good); inf for another shape."""
    gap = 0.0
    for name, a in ours.items():
        a, b = a.double(), theirs[name].double().to(a.device)
        if a.shape != b.shape:
            return float("inf")
        gap = max(gap, float((a - b).abs().nan_to_num(0).max()))
    return gap


# Runs a module or script and writes its peak RSS (VmHWM, kB) to $BENCH_PEAK_FILE at exit.
# getrusage cannot tell: a forked child's maxrss starts at the parent's size.
PEAK_WRAPPER = """
import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(kb)
atexit.register(peak)
real_exit = os._exit  # the nodescope command ends with os._exit, past atexit
def exit_after_peak(code):
    peak()
    real_exit(code)
os._exit = exit_after_peak
target, sys.argv = sys.argv[1], sys.argv[1:]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def whole_process(name: str, spec: dict, device, repeat: int) -> tuple[float, float]:
    """Best wall time of `repeat` fresh processes, imports included, and their peak
    resident memory (MB): `nodescope run` on the slice's spec for nodescope (storing the
    results and printing the report, as a user runs it), this script's `--only NAME` for
    a baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "slice.toml"
        spec_path.write_text(dump_toml(spec))
        if name == "nodescope":
            out = ["--out", str(Path(tmp) / "run"), "--fresh", "--device", device.type]
            args = ["nodescope", "run", str(spec_path), *out]
        else:
            args = [__file__, "--only", name, "--spec", str(spec_path), "--device", device.type]
        peak_file = Path(tmp) / "peak"
        env = {**os.environ, "BENCH_PEAK_FILE": str(peak_file)}
        best, peak = float("inf"), 0.0
        for _ in range(repeat):
            start = time.perf_counter()
            cmd = [sys.executable, "-c", PEAK_WRAPPER, *args]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
            best = min(best, time.perf_counter() - start)
            peak = max(peak, int(peak_file.read_text()) / 1024)
    return best, peak


DTYPES = ("float32", "float64")


def float64_cost(slices, epochs: int, device, repeat: int) -> None:
    """Each implementation's float64 time over its float32 time, in process, against the
    same ratio for a large matmul: what float64 must cost where the arithmetic is the
    limit (half as many numbers per vector register)."""
    from scaling import matmul_ceiling

    ceiling = {d: matmul_ceiling(dtype=getattr(torch, d)) for d in ("float32", "float64")}
    print(f"2048^3 matmul: float64 {ceiling['float32'] / ceiling['float64']:.2f}x float32")
    for seeds, depth, width, loss in slices:
        specs = [slice_spec(seeds, depth, width, epochs, dtype=d, loss=loss) for d in DTYPES]
        (t32, t64), _ = best_in_process([group_of(s) for s in specs], device, repeat)
        print(f"{seeds} seeds x {depth}x{width}, {loss}, {epochs} epochs, float32 / float64:")
        for name in IMPLEMENTATIONS:
            cost = f"{t64[name] / t32[name]:.2f}x"
            print(f"  {name:<10} {t32[name]:6.1f} s {t64[name]:6.1f} s   float64 costs {cost}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--depth", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--loss", choices=["ce", "mse"], default="ce")
    ap.add_argument("--larger", action="store_true", help="3 seeds x 2x{20,80} x {ce,mse}")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    ap.add_argument(
        "--float64-cost", action="store_true", help="float64 against float32, in process"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", choices=list(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.only:  # a child process of whole_process
        IMPLEMENTATIONS[args.only](group_of(read_toml(Path(args.spec))[0]), device)
        return
    slices = [(9, 1, 20, "ce"), (3, 4, 80, "ce")]
    if args.larger:  # a larger slice of the sample-set grid: both losses, widths 20 and 80
        slices = [(3, 2, w, loss) for loss in ("ce", "mse") for w in (20, 80)]
    if args.seeds:
        slices = [(args.seeds, args.depth or 1, args.width or 20, args.loss)]
    machine = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"machine: {machine}, {os.cpu_count()} cores, torch {torch.__version__}, {device}")
    print(f"torch threads: {threads}; best of {args.repeat}")
    if args.float64_cost:
        float64_cost(slices, args.epochs, device, args.repeat)
        return
    for seeds, depth, width, loss in slices:
        spec = slice_spec(seeds, depth, width, args.epochs, loss=loss)
        (times,), (values,) = best_in_process([group_of(spec)], device, args.repeat)
        # float32 rounding (bmm vs matmul) drifts over 1,600 steps: a few samples flip
        gap = max(largest_difference(values["nodescope"], values[r]) for r in ("vmap", "naive"))
        runs = {name: whole_process(name, spec, device, args.repeat) for name in IMPLEMENTATIONS}
        print(f"{seeds} seeds x {depth}x{width}, {loss}, {args.epochs} epochs:")
        whole = {name: seconds for name, (seconds, _) in runs.items()}
        print("             in process (data, training, probes)  whole process, peak RSS")
        for name in ("naive", "vmap", "nodescope"):
            seconds, peak = runs[name]
            print(f"  {name:<10} {times[name]:9.1f} s {'':26} {seconds:9.1f} s {peak:8.0f} MB")
        print(f"  largest probe difference of nodescope to either: {gap:.2g}")
        for label, t in (("in process", times), ("whole process", whole)):
            ratio = f"{t['naive'] / t['nodescope']:.2f}x the naive loop"
            print(f"  speed-up {label}: {ratio}, {t['vmap'] / t['nodescope']:.2f}x vmap")


if __name__ == "__main__":
    main()
