"""nodescope against what a skilled user would write by hand, on the winner-take-most workload.

Workload (b) of the performance issue, after specs/winner_take_most/layca.toml (paper 4):
the synthetic hidden-pattern data (sigma 0.4; 5,000 training and 2,000 test samples, a
third of the spec's, so that one run takes well under a minute on a 2-core CPU),
one hidden ReLU layer without bias, one BCE output with a bias, He init x4, Layca with an
SGD base in full-batch mode (lr 3^-3, divided by 5 at 15/16 of the epochs). Probes:

- pattern_preactivation: at every checkpoint, each hidden node's mean pre-activation over
  the test samples of every hidden pattern (Figs. 2-3);
- grad_sign: the top-k hidden nodes by |output weight| after training, each training
  sample's mean sign of dL/da over the training steps whose batch held it, and the final
  pre-activations (Fig. 3, rows 3-4).

The same experiment three ways, measured in one process from nodescope's data, initial
weights and batch orders (bench/baselines.py's `_setup`), so all three do the same
arithmetic and their probe values agree (tests/test_baselines_wtm.py checks it on a tiny
case):

- naive: one model at a time, a DataLoader over the member's batch order, nn.Sequential,
  forward hooks on the Linear layers (z) and the last ReLU (a, whose .grad is dL/da);
- vmap: a `torch.func` ensemble (stack_module_state + functional_call + vmap), Layca
  vmapped over the members, dL/da of the last hidden layer from the logits' gradient;
- nodescope: `train_group` of the stacked group.

Both baselines write Layca by hand (`layca` below). Times are best of --repeat, taken in
turn, of data + training + probes; "training alone" is the same run without probes. In
float32 the implementations' GEMMs round differently and full-batch Layca amplifies it:
the largest difference grows from 1e-7 after one step to a few 1e-2 after 20 epochs
(--dtype float64: about 1e-14). Run:

    python bench/baselines_wtm.py                  # 3 and 9 seeds x 1000 nodes
    python bench/baselines_wtm.py --seeds 3 --width 200 --epochs 5
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
from pathlib import Path

# What `nodescope run` sets for itself (cli.main), set before torch's first allocation so
# that every implementation here, and every child process, runs on the same allocator.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from baselines import _setup, best_in_process, group_of, largest_difference  # noqa: E402

from nodescope.results.weights import member_sequential  # noqa: E402
from nodescope.runner.allocator import keep_freed_memory  # noqa: E402
from nodescope.runner.train import train_group  # noqa: E402
from nodescope.spec import checkpoint_steps  # noqa: E402

keep_freed_memory()  # the glibc thresholds of `nodescope run` (runner/allocator.py)

PROBES = (
    "pattern_preactivation",  # (E, T, L, H, P)
    "top_node",  # (E, k)
    "output_weight",  # (E, k)
    "grad_sign_mean",  # (E, k, N_train)
    "preactivation_final",  # (E, k, N_train)
)


def bce(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy from its definition, -t log s(y) - (1-t) log(1 - s(y)),
    with log-sigmoids: its gradient (1-t) s(y) - t s(-y) keeps its sign where torch's
    BCE kernel's sigmoid(y) - t rounds to 0 (a saturated output), as the paper's does."""
    return -(t * F.logsigmoid(logits) + (1 - t) * F.logsigmoid(-logits)).mean()


def wtm_spec(
    seeds: int, width: int, epochs: int, checkpoints: int = 12, train_size: int = 5000, **training
) -> dict:
    """The winner-take-most slice: layca.toml with fewer samples, epochs and checkpoints."""
    return {
        "experiment": {"name": "bench_baselines_wtm"},
        "data": {
            "name": "synthetic_patterns",
            "sigma": 0.4,
            "sigma_test": 0.4,
            "train_size": train_size,
            "test_size": train_size * 2 // 5,
        },
        "model": {
            "depth": 1,
            "width": width,
            "activation": "relu",
            "bias": "none",
            "output_bias": True,
            "init": "he",
            "init_gain": 4.0,
        },
        "optimiser": {
            "name": "layca",
            "layca_base": "sgd",
            "lr": 3.0**-3,
            "schedule": {"milestones": [max(1, round(epochs * 15 / 16))], "factor": 0.2},
        },
        "training": {"loss": "bce", "batch_size": "full", "epochs": epochs, **training},
        "checkpoints": {"log": {"start": 1, "stop": epochs, "num": checkpoints}},
        "probes": {
            "curves": False,  # the baselines compute only the winner-take-most probes
            "pattern_preactivation": {"split": "test"},
            "grad_sign": {"top_k": 10},
        },
        "sweep": {"seed": list(range(seeds))},
    }


def without_probes(spec: dict) -> dict:
    return {**spec, "probes": {"curves": False}}


def layca(w: torch.Tensor, v: torch.Tensor, lr: float) -> torch.Tensor:
    """Layca (Carbonnelle & De Vleeschouwer 2019, as in the authors' Keras code) for one
    weight matrix w and its base step v (SGD: v = momentum v + lr g): v projected
    orthogonal to w, rescaled to ||w|| (0 if ||v|| <= 1e-7), w - lr v rescaled back to
    ||w||, i.e. w rotates by atan(lr) at a constant norm. Like the authors' code, the
    callers leave biases alone."""
    norm = w.norm()
    v = v - (v * w).sum() / norm**2 * w
    v_norm = v.norm()
    v = torch.where(v_norm > 1e-7, v * norm / v_norm, 0.0)
    new = w - lr * v
    return new * norm / new.norm()


def lr_at(opt, epoch: int) -> float:
    """The step schedule: lr x factor per milestone reached."""
    return opt.lr * opt.schedule.factor ** sum(epoch >= m for m in opt.schedule.milestones)


def _splits(data, device):
    """Training inputs and float labels, test inputs and hidden patterns."""
    train, test = data.splits["train"], data.splits["test"]
    x = train.inputs(torch.arange(train.size, device=device))
    x_test = test.inputs(torch.arange(test.size, device=device))
    return x, train.labels.to(x.dtype), x_test, test.patterns


def _has_probes(group) -> bool:
    """Whether the baselines compute the probes: the spec has them (both or neither)."""
    return group.spec.probes.grad_sign is not None


def run_nodescope(group, device) -> dict:
    variables = train_group(group, device).variables
    return {name: torch.as_tensor(variables[name].values) for name in PROBES if name in variables}


def run_naive(group, device) -> dict:
    specs, data, stacked, orders = _setup(group, device)
    probes = _has_probes(group)
    per_member = [
        _naive_member(member_sequential(stacked, e), spec, orders[e], data, group, device, probes)
        for e, spec in enumerate(specs)
    ]
    return {name: torch.stack([m[name] for m in per_member]) for name in per_member[0]}


def _naive_member(model, spec, order, data, group, device, probes) -> dict:
    """Train one member with a DataLoader and Layca by hand; probes from forward hooks."""
    x, y, x_test, p_test = _splits(data, device)
    n, n_patterns, opt = len(y), spec.data.n_patterns, spec.optimiser
    linears = [m for m in model if isinstance(m, nn.Linear)]
    weights = [m.weight for m in linears]  # Layca leaves the output bias alone
    velocity = [torch.zeros_like(w) for w in weights]
    steps = checkpoint_steps(group.spec) if probes else []
    z, a, means = {}, {}, []
    sign_sums = torch.zeros(n, linears[-1].in_features, dtype=x.dtype, device=device)
    counts = torch.zeros(n, dtype=x.dtype, device=device)
    if probes:
        for i, m in enumerate(linears[:-1]):
            m.register_forward_hook(lambda mod, inp, out, i=i: z.update({i: out}))

        def keep_activation(mod, inp, out):
            if out.requires_grad:
                out.retain_grad()
            a["last"] = out

        [m for m in model if isinstance(m, nn.ReLU)][-1].register_forward_hook(keep_activation)
    onehot = F.one_hot(p_test, n_patterns).double()

    def checkpoint() -> None:
        with torch.no_grad():
            model(x_test)
        means.append(torch.stack([z[i].double().T @ onehot / onehot.sum(0) for i in sorted(z)]))

    step = 0
    if 0 in steps:
        checkpoint()
    dataset = torch.utils.data.TensorDataset(x, y, torch.arange(n, device=device))
    for epoch in range(group.spec.training.epochs):
        lr = lr_at(opt, epoch)
        batches = torch.utils.data.BatchSampler(
            torch.randperm(n, generator=order).tolist(), group.spec.batch_size(), False
        )
        for xb, yb, index in torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None):
            loss = bce(model(xb)[:, 0], yb)
            model.zero_grad()
            loss.backward()
            if probes:
                sign_sums.index_add_(0, index, a["last"].grad.sign())
                counts[index] += 1
            with torch.no_grad():
                for w, v in zip(weights, velocity, strict=True):
                    v.mul_(opt.momentum).add_(lr * w.grad)
                    w.copy_(layca(w, v, lr))
            step += 1
            if step in steps:
                checkpoint()
    if not probes:
        return {}
    w_out = weights[-1].detach().abs().sum(0)
    top = w_out.topk(min(spec.probes.grad_sign.top_k, len(w_out))).indices
    with torch.no_grad():
        model(x)
    return {
        "pattern_preactivation": torch.stack(means),
        "top_node": top,
        "output_weight": w_out[top],
        "grad_sign_mean": (sign_sums / counts[:, None])[:, top].T,
        "preactivation_final": z[len(linears) - 2][:, top].T,
    }


def run_vmap(group, device) -> dict:
    from torch.func import functional_call, grad, stack_module_state, vmap

    specs, data, stacked, orders = _setup(group, device)
    probes = _has_probes(group)
    x, y, x_test, p_test = _splits(data, device)
    n, n_patterns, opt = len(y), specs[0].data.n_patterns, specs[0].optimiser
    models = [member_sequential(stacked, e) for e in range(len(specs))]
    params = {k: v.detach() for k, v in stack_module_state(models)[0].items()}
    base = copy.deepcopy(models[0]).to("meta")
    hidden = [i for i, m in enumerate(base) if isinstance(m, nn.Linear)][:-1]
    weights = [k for k in params if k.endswith("weight")]  # Layca leaves the bias alone
    velocity = {k: torch.zeros_like(params[k]) for k in weights}
    width = params[weights[-1]].shape[-1]

    def forward(p, x):
        """One member: logits and the pre-activations z of every hidden layer."""
        zs, h = [], x
        for i, module in enumerate(base):
            own = {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith(f"{i}.")}
            h = functional_call(module, own, (h,)) if own else module(h)
            if i in hidden:
                zs.append(h)
        return h[:, 0], zs

    def loss(p, x, y):
        logits = forward(p, x)[0]
        return bce(logits, y), logits.detach()

    grads_all = vmap(grad(loss, has_aux=True), in_dims=(0, 0, 0))
    preacts_all = vmap(lambda p, x: forward(p, x)[1], in_dims=(0, None))
    layca_all = vmap(layca, in_dims=(0, 0, None))
    steps = checkpoint_steps(group.spec) if probes else []
    sign_sums = torch.zeros(len(specs), n, width, dtype=x.dtype, device=device)
    counts = torch.zeros(len(specs), n, dtype=x.dtype, device=device)
    onehot = F.one_hot(p_test, n_patterns).double()
    means = []

    def checkpoint() -> None:
        with torch.no_grad():
            zs = preacts_all(params, x_test)
        sums = [torch.einsum("ebh,bp->ehp", z.double(), onehot) for z in zs]
        means.append(torch.stack(sums, dim=1) / onehot.sum(0))

    step = 0
    if 0 in steps:
        checkpoint()
    batch = group.spec.batch_size()
    for epoch in range(group.spec.training.epochs):
        lr = lr_at(opt, epoch)
        perm = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
        for start in range(0, n, batch):
            index = perm[:, start : start + batch]
            g, logits = grads_all(params, x[index], y[index])
            if probes:
                # dL/da of the last hidden layer = (sigmoid(y) - t) w_out / B, written
                # (1 - t) sigmoid(y) - t sigmoid(-y) so that it does not round to 0
                t = y[index]
                dl_dy = (1 - t) * torch.sigmoid(logits) - t * torch.sigmoid(-logits)
                dl_da = dl_dy[..., None] * params[weights[-1]]
                sign_sums.scatter_add_(1, index[..., None].expand(-1, -1, width), dl_da.sign())
                counts.scatter_add_(1, index, torch.ones_like(index, dtype=counts.dtype))
            with torch.no_grad():
                for k in weights:
                    velocity[k].mul_(opt.momentum).add_(lr * g[k])
                    params[k].copy_(layca_all(params[k], velocity[k], lr))
            step += 1
            if step in steps:
                checkpoint()
    if not probes:
        return {}
    w_out = params[weights[-1]].abs().sum(1)  # (E, H)
    top = w_out.topk(min(specs[0].probes.grad_sign.top_k, width), dim=1).indices
    per_sample = top[:, None, :].expand(-1, n, -1)
    with torch.no_grad():
        z_final = preacts_all(params, x)[-1]
    return {
        "pattern_preactivation": torch.stack(means, dim=1),
        "top_node": top,
        "output_weight": w_out.gather(1, top),
        "grad_sign_mean": (sign_sums / counts[..., None]).gather(2, per_sample).transpose(1, 2),
        "preactivation_final": z_final.gather(2, per_sample).transpose(1, 2),
    }


IMPLEMENTATIONS = {"naive": run_naive, "vmap": run_vmap, "nodescope": run_nodescope}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--checkpoints", type=int, default=12)
    ap.add_argument("--train-size", type=int, default=5000, help="layca.toml: 15000")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    # train_group switches flushing on for the rest of the process; on from the start, every
    # run of every implementation sees the same arithmetic
    torch.set_flush_denormal(True)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, torch {torch.__version__}, {device}")
    print(f"torch threads: {torch.get_num_threads()}; best of {args.repeat}")
    for seeds in [args.seeds] if args.seeds else [3, 9]:
        spec = wtm_spec(
            seeds, args.width, args.epochs, args.checkpoints, args.train_size, dtype=args.dtype
        )
        groups = [group_of(spec), group_of(without_probes(spec))]
        (times, alone), (values, _) = best_in_process(groups, device, args.repeat, IMPLEMENTATIONS)
        gap = max(largest_difference(values["nodescope"], values[r]) for r in ("naive", "vmap"))
        print(
            f"{seeds} seeds x 1x{args.width}, {args.train_size} samples, {args.epochs} epochs "
            f"full batch, {args.dtype}:"
        )
        print("               data, training, probes    training alone")
        for name in IMPLEMENTATIONS:
            print(f"  {name:<10} {times[name]:9.1f} s {'':12} {alone[name]:9.1f} s")
        print(f"  largest probe difference of nodescope to either: {gap:.2g}")
        for label, t in (("with probes", times), ("training alone", alone)):
            naive, vmap_, ours = (t[name] for name in IMPLEMENTATIONS)
            print(
                f"  speed-up {label}: {naive / ours:.2f}x the naive loop, {vmap_ / ours:.2f}x vmap"
            )


if __name__ == "__main__":
    main()
