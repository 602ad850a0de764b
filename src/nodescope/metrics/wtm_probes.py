"""Probes of the winner-take-most paper; formulas in `winner_take_most`.

The neuron-level probes read the last hidden layer (the paper's networks have one).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from ..data.prepare import HostSplit, synthetic_sample
from ..data.seeds import numpy_rng
from ..models.loss import predictions
from . import winner_take_most as wtm
from .base import EvalBatch, Probe, ProbeContext, TrainStep, variable


def pattern_classes(ctx: ProbeContext) -> np.ndarray:
    """Class of every hidden pattern of the data (pattern k -> the label its samples
    carry), whether or not a small training split drew each of them."""
    return ctx.data.pattern_classes


def _pattern_coords(ctx: ProbeContext) -> dict:
    classes = pattern_classes(ctx)
    return {"pattern": np.arange(len(classes)), "pattern_class": ("pattern", classes)}


class PatternPreactivationProbe(Probe):
    """pattern_preactivation(member, epoch, layer, node, pattern) = μ_{l,i,k} =
    (1/|S_k|) Σ_{s in S_k} z^s_{l,i}: mean pre-activation of pattern k's eval samples."""

    name = "pattern_preactivation"
    needs_preacts = True

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        self.split = options.split if options.split in ctx.data.splits else "test"
        patterns = ctx.data.splits[self.split].patterns
        self.n_patterns = len(pattern_classes(ctx))
        self.counts = torch.bincount(patterns.cpu(), minlength=self.n_patterns).double()
        self.sums = [
            torch.zeros(ctx.n_members, h, self.n_patterns, dtype=torch.float64, device=ctx.device)
            for h in ctx.widths
        ]
        shape = (ctx.n_members, ctx.n_checkpoints, len(ctx.widths), ctx.max_width)
        self.means = np.full((*shape, self.n_patterns), np.nan)

    def splits(self) -> set[str]:
        return {self.split}

    def update(self, ck: int, batch: EvalBatch) -> None:
        patterns = self.ctx.data.splits[self.split].patterns[batch.index]
        for layer, z in enumerate(batch.fwd.preacts):
            self.sums[layer] += wtm.pattern_sums(z.detach(), patterns, self.n_patterns)

    def finish_checkpoint(self, ck: int) -> None:
        for layer, sums in enumerate(self.sums):
            self.means[:, ck, layer, : sums.shape[1]] = (sums.cpu() / self.counts).numpy()
            sums.zero_()

    def results(self):
        da = variable(
            ("member", "epoch", "layer", "node", "pattern"),
            self.means,
            "mean pre-activation per pattern",
            "1",
            f"μ_{{l,i,k}} = mean of z_{{l,i}} over the {self.split} samples of hidden pattern k "
            "(winner-take-most paper, Figs. 2-4)",
        )
        return {"pattern_preactivation": da.assign_coords(_pattern_coords(self.ctx))}


class GradSignProbe(Probe):
    """Mean sign of ∂L/∂a over training and final pre-activations, for the top-k neurons.

    grad_sign_mean(member, rank, train_sample) = (1/T_s) Σ_t sign(∂L_t/∂a_i(x_s)) over the
    T_s training steps whose batch held sample s (accumulated in the training step's own
    backward pass); preactivation_final(member, rank, train_sample) = z_i(x_s) after
    training. Neurons of the last hidden layer are ranked by |w_out| (summed over
    outputs), largest first: top_node(member, rank).
    """

    name = "grad_sign"
    needs_train_steps = True

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        train = ctx.data.splits["train"]
        device = train.x.device
        self.k = min(options.top_k, ctx.widths[-1])
        self.sums = torch.zeros(ctx.n_members, train.size, ctx.widths[-1], device=device)
        self.counts = torch.zeros(ctx.n_members, train.size, device=device)
        self.out: dict[str, xr.DataArray] = {}

    def on_train_grad(self, step: TrainStep, member: int, grad: torch.Tensor) -> None:
        active = None if step.active is None else step.active[member]
        wtm.accumulate_signs(
            self.sums[member], self.counts[member], step.index[member], grad, active, step.in_order
        )

    def on_end(self, model) -> None:
        w_out = model.weights[-1].abs().sum(-1)  # (E, H)
        top = torch.argsort(w_out, dim=1, descending=True, stable=True)[:, : self.k]
        train = self.ctx.data.splits["train"]
        # the top-k nodes are picked before anything is computed over the (E, N, H) stack
        top_of = top.unsqueeze(1)
        signs = self.sums.gather(2, top_of.expand(-1, train.size, -1))
        signs /= self.counts.clamp_min(1).unsqueeze(-1)  # (E, N, k)
        never = self.counts == 0
        signs[never] = float("nan")
        z = []
        for start in range(0, train.size, 4096):
            stop = min(start + 4096, train.size)
            z_chunk = model(train.range_inputs(start, stop), keep=True).preacts[-1]
            z.append(z_chunk.gather(2, top_of.expand(-1, stop - start, -1)))
        z = torch.cat(z, dim=1)
        dims = ("member", "rank", "train_sample")
        coords = {
            "train_pattern": ("train_sample", train.patterns.cpu().numpy()),
            "train_label": ("train_sample", train.labels.cpu().numpy()),
        }
        self.out = {
            "top_node": variable(
                ("member", "rank"),
                top.cpu().numpy(),
                "top neuron",
                "1",
                "last-hidden-layer node with the rank-th largest Σ|w_out|",
            ),
            "output_weight": variable(
                ("member", "rank"),
                w_out.gather(1, top).cpu().numpy(),
                "output weight",
                "1",
                "Σ over outputs of |w_out| of the ranked node",
            ),
            "grad_sign_mean": variable(
                dims,
                signs.transpose(1, 2).cpu().numpy(),
                "mean sign of dL/da",
                "1",
                "(1/T_s) Σ_t sign(∂L_t/∂a_i(x_s)) over the training steps whose batch held "
                "x_s (winner-take-most paper, Fig. 3 bottom row); NaN if never in a batch",
            ).assign_coords(coords),
            "preactivation_final": variable(
                dims,
                z.transpose(1, 2).cpu().numpy(),
                "final pre-activation",
                "1",
                "z_i(x_s) of the trained network for every training sample (Fig. 3 row 3)",
            ).assign_coords(coords),
        }

    def results(self):
        return self.out


class DifficultyProbe(Probe):
    """difficulty(member, train_sample) d(x) = ⟨x, Σ_{k∉C(x)} c_k⟩ − ⟨x, Σ_{k∈C(x)} c_k⟩
    (paper eq. 2) and loss_share(member, epoch, sample_group) = share of the total
    training loss carried by difficult (d > 0) and regular (d ≤ 0) samples (Fig. 5).

    c_k are the noiseless pattern centroids for synthetic data; for IDX data (digits as
    patterns) the mean training image of each digit stands in for them.
    """

    name = "difficulty"

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        train = ctx.data.splits["train"]
        x = train.x  # (V, N, F): one block per distinct input variant of the group
        classes = torch.from_numpy(pattern_classes(ctx)).to(x.device)
        if ctx.data.centroids is not None:
            cents = torch.from_numpy(ctx.data.centroids).to(x)
        else:  # a digit without training samples has no mean image and adds nothing
            onehot = torch.nn.functional.one_hot(train.patterns, len(classes)).to(x.dtype)
            cents = (onehot.T @ x[0]) / onehot.sum(0).clamp_min(1).unsqueeze(-1)
        self.d = wtm.difficulty(x, train.labels, cents, classes)[train.variant]  # (E, N)
        self.difficult = self.d > 0
        self.loss = torch.zeros(ctx.n_members, train.size, dtype=torch.float64, device=x.device)
        self.shares = np.full((ctx.n_members, ctx.n_checkpoints, 2), np.nan)

    def splits(self) -> set[str]:
        return {"train"}

    def update(self, ck: int, batch: EvalBatch) -> None:
        if batch.split == "train":
            self.loss[:, batch.index] = batch.loss.to(torch.float64)

    def finish_checkpoint(self, ck: int) -> None:
        self.shares[:, ck] = wtm.loss_shares(self.loss, self.difficult).cpu().numpy()

    def results(self):
        return {
            "difficulty": variable(
                ("member", "train_sample"),
                self.d.cpu().numpy(),
                "difficulty",
                "1",
                "d(x) = <x, Σ_{k∉C(x)} c_k> − <x, Σ_{k∈C(x)} c_k> (winner-take-most eq. 2)",
            ),
            "loss_share": variable(
                ("member", "epoch", "sample_group"),
                self.shares,
                "loss share",
                "1",
                "Σ_{s in group} L_s / Σ_s L_s on the training set; difficult: d > 0",
            ).assign_coords(sample_group=["difficult", "regular"]),
        }


class NoiseRobustnessProbe(Probe):
    """accuracy_noise(member, sigma_test): accuracy of the trained member on a fresh test
    set at every noise level of `sigma_test` (same pattern masks, new noise and samples;
    IDX data: Gaussian noise of that std added to the test images). With the training
    sigma as a sweep axis this is the paper's Fig. 1 grid."""

    name = "noise_robustness"

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        self.sigmas = list(options.sigma_test)
        self.accuracy = np.full((ctx.n_members, len(self.sigmas)), np.nan)

    def test_set(self, i: int, sigma: float) -> HostSplit:
        data = self.ctx.specs[0].data
        rng = numpy_rng(data.seed, "probe", i)
        if data.name == "synthetic_patterns":
            n = self.options.n_samples or data.sizes()[2]
            return synthetic_sample(data, n, sigma, rng)
        test = self.ctx.data.splits["test"]
        x = test.x[0].cpu().numpy()
        noisy = (x + sigma * rng.standard_normal(x.shape)).astype(np.float32)
        return HostSplit(noisy, test.labels.cpu().numpy(), None)

    def on_end(self, model) -> None:
        device, dtype = model.weights[0].device, model.weights[0].dtype
        for i, sigma in enumerate(self.sigmas):
            split = self.test_set(i, sigma)
            x = torch.from_numpy(split.x).to(device=device, dtype=dtype)
            y = torch.from_numpy(split.labels).to(device)
            right = torch.zeros(self.ctx.n_members, device=device)
            for start in range(0, len(y), 4096):
                out = model(x[start : start + 4096]).out
                right += (predictions(out, self.ctx.loss) == y[start : start + 4096]).sum(1)
            self.accuracy[:, i] = (right / len(y)).cpu().numpy()

    def results(self):
        da = variable(
            ("member", "sigma_test"),
            self.accuracy,
            "accuracy under test noise",
            "1",
            "accuracy on a fresh test set drawn at noise std sigma_test with the training "
            "patterns' masks (winner-take-most paper, Fig. 1)",
        )
        return {"accuracy_noise": da.assign_coords(sigma_test=self.sigmas)}
