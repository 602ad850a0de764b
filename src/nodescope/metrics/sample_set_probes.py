"""Probes of the sample-set paper: which eval samples switch each node on, per class.

Formulas live in `sample_sets` (pure tensor functions); these classes accumulate them
over the chunks of every checkpoint's eval pass.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..models.loss import n_outputs
from . import cooperating, sample_sets
from .base import EvalBatch, Probe, ProbeContext, variable
from .class_sums import count_dtype

DIMS_NODE = ("member", "epoch", "layer", "node")
DIMS_CLASS = (*DIMS_NODE, "label")


class ActivationFractionProbe(Probe):
    """activation_fraction(member, epoch, layer, node, label) = |Ŝ⁽ᶜ⁾_{l,i}| / |S_c|,
    Ŝ⁽ᶜ⁾_{l,i} = {s in S_c : z^s_{l,i} > 0} on the eval split (sigmoid: activation > 0.5)."""

    name = "activation_fraction"

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        # On/off states from a where they equal those of z, so that the eval pass of a
        # ReLU network keeps no z (one tensor per layer and chunk fewer to write).
        self.needs_acts = sample_sets.same_state_from_activations(ctx.activation, options.threshold)
        self.needs_preacts = not self.needs_acts
        self.split = options.split if options.split in ctx.data.splits else None
        self.split = self.split or ctx.default_eval_split()
        self.labels = ctx.data.splits[self.split].labels
        self.class_counts = sample_sets.class_counts(self.labels.cpu(), ctx.n_classes)
        self.on_counts = [
            torch.zeros(ctx.n_members, h, ctx.n_classes, dtype=torch.int64, device=ctx.device)
            for h in ctx.widths
        ]
        self.fraction = self._empty(DIMS_CLASS)
        self.outputs = n_outputs(ctx.loss, ctx.n_classes) if options.output_layer else 0
        self.output_counts = torch.zeros(
            ctx.n_members, self.outputs, ctx.n_classes, dtype=torch.int64, device=ctx.device
        )
        self.output_fraction = np.full(
            (ctx.n_members, ctx.n_checkpoints, self.outputs, ctx.n_classes), np.nan
        )

    def _empty(self, dims: tuple[str, ...]) -> np.ndarray:
        sizes = {
            "member": self.ctx.n_members,
            "epoch": self.ctx.n_checkpoints,
            "layer": len(self.ctx.widths),
            "node": self.ctx.max_width,
            "label": self.ctx.n_classes,
        }
        return np.full([sizes[d] for d in dims], np.nan)

    def splits(self) -> set[str]:
        return {self.split}

    def node_on(self, values: torch.Tensor, dtype: torch.dtype = torch.bool) -> torch.Tensor:
        """On/off states from a layer's z, or its a where `needs_acts`."""
        return sample_sets.is_on(values, self.ctx.activation, self.options.threshold, dtype)

    def update(self, ck: int, batch: EvalBatch) -> None:
        fwd = batch.fwd
        as_counted = count_dtype(batch.labels.shape[0])  # 0/1 in the counts' own float type
        for layer, values in enumerate(fwd.acts if self.needs_acts else fwd.preacts):
            on = self.node_on(values.detach(), as_counted)
            self.on_counts[layer] += sample_sets.class_on_counts(
                on, batch.labels, self.ctx.n_classes
            )
            self.update_layer(ck, layer, batch, on)
        if self.outputs:
            on = cooperating.output_on(batch.fwd.out.detach(), self.ctx.loss)
            self.output_counts += sample_sets.class_on_counts(on, batch.labels, self.ctx.n_classes)

    def update_layer(self, ck: int, layer: int, batch: EvalBatch, on: torch.Tensor) -> None:
        """Hook for subclasses: one layer's on-states (E, B, H) of one chunk, as 0/1 floats."""

    def finish_checkpoint(self, ck: int) -> None:
        for layer, on_device in enumerate(self.on_counts):
            counts = on_device.cpu()
            h = counts.shape[1]
            frac = sample_sets.activation_fraction(counts, self.class_counts)
            self.fraction[:, ck, layer, :h] = frac.numpy()
            self.finish_layer(ck, layer, counts)
            on_device.zero_()
        if self.outputs:
            frac = sample_sets.activation_fraction(self.output_counts.cpu(), self.class_counts)
            self.output_fraction[:, ck] = frac.numpy()
            self.output_counts.zero_()

    def finish_layer(self, ck: int, layer: int, counts: torch.Tensor) -> None:
        """Hook for subclasses: a layer's per-class on-counts (E, H, C) at checkpoint ck."""

    def results(self):
        out = {
            "activation_fraction": variable(
                DIMS_CLASS,
                self.fraction,
                "activation fraction",
                "1",
                "|Ŝ⁽ᶜ⁾_{l,i}| / |S_c|: fraction of the class-c eval samples that switch node i "
                "of layer l on (z > 0; sigmoid: activation > threshold); sample-set paper eq. 9",
            )
        }
        if self.outputs:
            out["output_activation_fraction"] = variable(
                ("member", "epoch", "output", "label"),
                self.output_fraction,
                "output activation fraction",
                "1",
                "fraction of the class-c eval samples that switch output node k on: z_k > 0 "
                "for linear (mse) and sigmoid (bce) outputs, softmax_k > 1/K for ce; "
                "cooperating-classifiers paper Fig. 1",
            )
        return out


class SampleSetsProbe(ActivationFractionProbe):
    """All node-level measurements of the sample-set paper (Davel et al., SACAIR 2020).

    Adds to activation_fraction, per checkpoint on the eval split:
    predictability p = 1 − H(Ẑ|Y)/log 2 and informativeness u = 1 − H(Y|Ẑ)/log|C|
    (NaN for dead and always-active nodes), dead (|Ŝ| = 0), always_active (|Ŝ| = |S|),
    churn entered/left (eval samples that joined / left the sample set since the
    previous checkpoint) and node_cost = mean over class-c members of Ŝ of ∂L_s/∂a (the
    paper's per-sample cost, eq. 2; the class mean is nodescope's).
    """

    name = "sample_sets"

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        self.needs_dl_da = options.node_cost
        self.predictability = self._empty(DIMS_NODE)
        self.informativeness = self._empty(DIMS_NODE)
        self.dead = self._empty(DIMS_NODE)
        self.always_active = self._empty(DIMS_NODE)
        self.entered = self._empty(DIMS_NODE)
        self.left = self._empty(DIMS_NODE)
        self.node_cost = self._empty(DIMS_CLASS)
        n = ctx.data.splits[self.split].size
        device = ctx.data.splits[self.split].x.device
        self.prev_on = (
            [torch.zeros(ctx.n_members, n, h, dtype=torch.bool, device=device) for h in ctx.widths]
            if options.churn
            else None
        )
        self.churn_counts = [
            torch.zeros(2, ctx.n_members, h, dtype=torch.int64, device=device) for h in ctx.widths
        ]
        self.cost_sums = [
            torch.zeros(ctx.n_members, h, ctx.n_classes, dtype=torch.float64, device=device)
            for h in ctx.widths
        ]

    def update_layer(self, ck, layer, batch, on):
        if self.prev_on is None and not self.needs_dl_da:
            return
        on = on.bool()
        if self.prev_on is not None:
            previous = self.prev_on[layer][:, batch.index]
            if ck > 0:
                entered, left = sample_sets.churn(previous, on)
                self.churn_counts[layer][0] += entered
                self.churn_counts[layer][1] += left
            self.prev_on[layer][:, batch.index] = on
        if self.needs_dl_da:
            self.cost_sums[layer] += sample_sets.class_cost_sums(
                batch.dl_da[layer], on, batch.labels, self.ctx.n_classes
            )

    def finish_layer(self, ck, layer, counts):
        h = counts.shape[1]
        cc = self.class_counts
        self.predictability[:, ck, layer, :h] = sample_sets.predictability(counts, cc).numpy()
        self.informativeness[:, ck, layer, :h] = sample_sets.informativeness(counts, cc).numpy()
        self.dead[:, ck, layer, :h] = sample_sets.dead(counts, cc).numpy()
        self.always_active[:, ck, layer, :h] = sample_sets.always_active(counts, cc).numpy()
        if self.prev_on is not None and ck > 0:
            entered, left = self.churn_counts[layer].cpu()
            self.entered[:, ck, layer, :h] = entered.numpy()
            self.left[:, ck, layer, :h] = left.numpy()
        self.churn_counts[layer].zero_()
        if self.needs_dl_da:
            cost = sample_sets.node_cost(self.cost_sums[layer].cpu(), counts)
            self.node_cost[:, ck, layer, :h] = cost.numpy()
            self.cost_sums[layer].zero_()

    def results(self):
        c = self.ctx.n_classes
        out = super().results()
        out["predictability"] = variable(
            DIMS_NODE,
            self.predictability,
            "predictability",
            "1",
            "p = 1 − H(Ẑ|Y)/log 2, H(Ẑ|Y) = −Σ_c Σ_ẑ e(ẑ,c) log(e(ẑ,c)/Σ_x e(x,c)), "
            "e(1,c) = |Ŝ⁽ᶜ⁾|/|S|, e(0,c) = (|S_c| − |Ŝ⁽ᶜ⁾|)/|S|; NaN for dead and "
            "always-active nodes; sample-set paper eqs. 12, 14",
        )
        out["informativeness"] = variable(
            DIMS_NODE,
            self.informativeness,
            "informativeness",
            "1",
            "u = 1 − H(Y|Ẑ)/log|C|, H(Y|Ẑ) = −Σ_ẑ Σ_c e(ẑ,c) log(e(ẑ,c)/Σ_x e(ẑ,x)); "
            f"at most log 2/log|C| = {math.log(2) / math.log(c):.4f} for balanced classes; "
            "NaN for dead and always-active nodes; sample-set paper eqs. 13, 15",
        )
        out["dead"] = variable(
            DIMS_NODE,
            self.dead,
            "dead node",
            "1",
            "1 where |Ŝ_{l,i}| = 0: no eval sample switches the node on",
        )
        out["always_active"] = variable(
            DIMS_NODE,
            self.always_active,
            "always-active node",
            "1",
            "1 where |Ŝ_{l,i}| = |S|: every eval sample switches the node on",
        )
        if self.prev_on is not None:
            out["entered"] = variable(
                DIMS_NODE,
                self.entered,
                "samples entering the sample set",
                "samples",
                "|Ŝ_t \\ Ŝ_(t−1)|: eval samples on at this checkpoint, off at the previous",
            )
            out["left"] = variable(
                DIMS_NODE,
                self.left,
                "samples leaving the sample set",
                "samples",
                "|Ŝ_(t−1) \\ Ŝ_t|: eval samples off at this checkpoint, on at the previous",
            )
        if self.needs_dl_da:
            out["node_cost"] = variable(
                DIMS_CLASS,
                self.node_cost,
                "node-supported cost",
                "1",
                "mean over s in Ŝ⁽ᶜ⁾_{l,i} of φ^s_{l,i} = ∂L_s/∂a_{l,i} (the sum over active "
                "paths of λ_p Π w, sample-set paper eq. 2); NaN where Ŝ⁽ᶜ⁾ is empty",
            )
        for name in ("dead", "always_active"):
            out[name].attrs["flag_values"] = "0 1"
        return out
