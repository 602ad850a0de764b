"""Activation fraction of every node per class (sample-set paper, eq. 8)."""

from __future__ import annotations

import numpy as np
import torch

from . import sample_sets
from .base import EvalBatch, Probe, ProbeContext, variable


class ActivationFractionProbe(Probe):
    """activation_fraction(member, epoch, layer, node, label) = |Ŝ⁽ᶜ⁾_{l,i}| / |S_c|,
    Ŝ⁽ᶜ⁾_{l,i} = {s in S_c : z^s_{l,i} > 0} on the eval split (sigmoid: activation > 0.5)."""

    name = "activation_fraction"
    needs_preacts = True

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        self.split = ctx.default_eval_split() if options.split == "auto" else options.split
        if self.split not in ctx.data.splits:
            self.split = ctx.default_eval_split()
        self.counts = [
            torch.zeros(ctx.n_members, h, ctx.n_classes, dtype=torch.int64) for h in ctx.widths
        ]
        self.fraction = np.full(
            (ctx.n_members, ctx.n_checkpoints, len(ctx.widths), ctx.max_width, ctx.n_classes),
            np.nan,
        )
        labels = ctx.data.splits[self.split].labels.cpu()
        self.class_counts = sample_sets.class_counts(labels, ctx.n_classes)

    def splits(self) -> set[str]:
        return {self.split}

    def update(self, ck: int, batch: EvalBatch) -> None:
        if batch.split != self.split:
            return
        for layer, z in enumerate(batch.fwd.preacts):
            on = sample_sets.is_on(z, self.ctx.activation)
            counts = sample_sets.class_on_counts(on, batch.labels, self.ctx.n_classes)
            self.counts[layer] += counts.cpu()

    def finish_checkpoint(self, ck: int) -> None:
        for layer, counts in enumerate(self.counts):
            frac = sample_sets.activation_fraction(counts, self.class_counts)
            self.fraction[:, ck, layer, : counts.shape[1]] = frac.double().numpy()
            counts.zero_()

    def results(self):
        return {
            "activation_fraction": variable(
                ("member", "epoch", "layer", "node", "label"),
                self.fraction,
                "activation fraction",
                "1",
                "|S_c^(l,i)| / |S_c|: fraction of class-c eval samples with pre-activation "
                "z > 0 at node i of layer l (sigmoid: activation > 0.5); sample-set paper eq. 8",
            )
        }
