"""Learning curves: loss and accuracy of every member on every split at every checkpoint."""

from __future__ import annotations

import numpy as np
import torch

from .base import EvalBatch, Probe, ProbeContext, variable


class CurvesProbe(Probe):
    """loss(member, split, epoch) = (1/|S|) sum_{s in S} L_s and
    accuracy(member, split, epoch) = (1/|S|) sum_{s in S} [prediction_s = target_s]."""

    name = "curves"

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        self.split_names = [s for s in options.splits if s in ctx.data.splits]
        shape = (ctx.n_members, len(self.split_names), ctx.n_checkpoints)
        self.loss_sum = torch.zeros(shape, dtype=torch.float64, device=ctx.device)
        self.correct = torch.zeros(shape, dtype=torch.int64, device=ctx.device)
        self.count = np.zeros(shape)

    def splits(self) -> set[str]:
        return set(self.split_names)

    def update(self, ck: int, batch: EvalBatch) -> None:
        if batch.split not in self.split_names:
            return
        i = self.split_names.index(batch.split)
        loss, correct = batch.totals()
        self.loss_sum[:, i, ck] += loss
        self.correct[:, i, ck] += correct
        self.count[:, i, ck] += batch.loss.shape[1]

    def results(self):
        dims = ("member", "split", "epoch")
        with np.errstate(invalid="ignore"):
            loss = self.loss_sum.cpu().numpy() / self.count
            acc = self.correct.cpu().numpy() / self.count
        coords = {"split": self.split_names}
        return {
            "loss": variable(
                dims, loss, "loss", "1", f"mean per-sample {self.ctx.loss} loss over the split"
            ).assign_coords(coords),
            "accuracy": variable(
                dims, acc, "accuracy", "1", "fraction of the split's samples predicted correctly"
            ).assign_coords(coords),
        }
