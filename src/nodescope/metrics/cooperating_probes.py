"""Probes of "DNNs as layers of cooperating classifiers"; formulas in `cooperating`.

Both probes measure either at every checkpoint (`at = "checkpoints"`) or once, on the
network early stopping restored (`at = "best"`, the paper's "networks with the smallest
validation error"; the runner stores which epoch that was as `best_epoch`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..data.prepare import SplitData
from . import cooperating as coop
from .base import EvalBatch, Probe, ProbeContext, variable
from .sample_sets import is_on

SPLIT_ORDER = ("train", "val", "test")


def forward_chunks(model, split: SplitData, chunk: int) -> Iterator[tuple[torch.Tensor, list]]:
    """(sample indices, per-layer pre-activations) of the split in chunks, for `at = "best"`."""
    for start in range(0, split.size, chunk):
        stop = min(start + chunk, split.size)
        index = torch.arange(start, stop, device=split.x.device)
        yield index, model(split.range_inputs(start, stop), keep=True).preacts


class _CooperatingProbe(Probe):
    """What both probes share: checkpoint or best-network slots and the preact plumbing."""

    needs_preacts = True

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        self.best = options.at == "best"
        self.n_slots = 1 if self.best else ctx.n_checkpoints
        self.chunk = ctx.specs[0].training.eval_chunk if ctx.specs else 4096

    def read_splits(self) -> set[str]:
        raise NotImplementedError

    def splits(self) -> set[str]:
        return set() if self.best else self.read_splits()

    def update(self, ck: int, batch: EvalBatch) -> None:
        self.add_chunk(batch.split, batch.index, [z.detach() for z in batch.fwd.preacts])

    def finish_checkpoint(self, ck: int) -> None:
        self.finish(ck)

    def on_end(self, model) -> None:
        if not self.best:
            return
        for split in sorted(self.read_splits()):
            for index, preacts in forward_chunks(model, self.ctx.data.splits[split], self.chunk):
                self.add_chunk(split, index, preacts)
        self.finish(0)

    def add_chunk(self, split: str, index: torch.Tensor, preacts: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def finish(self, slot: int) -> None:
        raise NotImplementedError

    def dims(self, *rest: str) -> tuple[str, ...]:
        return ("member", *(() if self.best else ("epoch",)), *rest)

    def stored(self, values: np.ndarray) -> np.ndarray:
        return values[:, 0] if self.best else values

    def when(self) -> str:
        return (
            "on the network early stopping restored (epoch: best_epoch)"
            if self.best
            else "at every checkpoint"
        )


class PerplexityProbe(_CooperatingProbe):
    """pattern_entropy, perplexity and distinct_patterns (member, epoch, layer, label):
    H(c,l) = −Σ_{n∈K(c,l)} (n/N_c) ln(n/N_c) over the binary patterns of layer l's nodes
    on the class-c samples of one split, P(c,l) = e^H (cooperating-classifiers Eqs. 1-2)."""

    name = "perplexity"

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        self.split = options.split
        self.labels = ctx.data.splits[self.split].labels
        self.words: list[torch.Tensor] | None = None
        shape = (ctx.n_members, self.n_slots, len(ctx.widths), ctx.n_classes)
        self.entropy = np.full(shape, np.nan)
        self.distinct = np.full(shape, np.nan)

    def read_splits(self) -> set[str]:
        return {self.split}

    def add_chunk(self, split, index, preacts):
        if split != self.split:
            return
        if self.words is None:  # packed patterns of the whole split, one checkpoint at a time
            n = self.ctx.data.splits[split].size
            self.words = [
                torch.zeros(
                    self.ctx.n_members,
                    n,
                    -(-h // coop.WORD_BITS),
                    dtype=torch.int64,
                    device=index.device,
                )
                for h in self.ctx.widths
            ]
        for words, z in zip(self.words, preacts, strict=True):
            on = is_on(z, self.ctx.activation, self.options.threshold)
            words[:, index] = coop.pack_patterns(on)

    def finish(self, slot):
        for layer, words in enumerate(self.words or []):
            entropy, distinct = coop.pattern_entropy(words, self.labels, self.ctx.n_classes)
            self.entropy[:, slot, layer] = entropy.cpu().numpy()
            self.distinct[:, slot, layer] = distinct.cpu().numpy()
        self.words = None

    def results(self):
        dims = self.dims("layer", "label")
        on = "z > 0" if self.ctx.activation != "sigmoid" else "sigmoid(z) > threshold"
        where = f"binary patterns ({on}) of the {self.split} samples, {self.when()}"
        sizes = torch.bincount(self.labels.cpu(), minlength=self.ctx.n_classes).numpy()
        return {
            "pattern_entropy": variable(
                dims,
                self.stored(self.entropy),
                "pattern entropy",
                "nat",
                f"H(c,l) = −Σ_(n∈K(c,l)) (n/N_c) ln(n/N_c), K(c,l) the counts of the distinct "
                f"{where}; cooperating-classifiers paper Eq. 1",
            ),
            "perplexity": variable(
                dims,
                np.exp(self.stored(self.entropy)),
                "layer perplexity",
                "1",
                f"P(c,l) = exp H(c,l): 1 when every class-c sample has the same pattern, N_c "
                f"when each has its own; {where}; cooperating-classifiers paper Eq. 2",
            ),
            "distinct_patterns": variable(
                dims,
                self.stored(self.distinct),
                "distinct patterns",
                "patterns",
                f"|K(c,l)|: number of distinct {where}",
            ),
            "pattern_class_size": variable(
                ("member", "label"),
                np.broadcast_to(sizes, (self.ctx.n_members, len(sizes))).astype(float),
                "class size of the perplexity split",
                "samples",
                f"N_c: class-c samples of the {self.split} split, the largest possible perplexity",
            ),
        }


class NodeClassifiersProbe(_CooperatingProbe):
    """layer_accuracy(member, epoch, layer, system, split): every layer read as a naive-Bayes
    classifier of its nodes (cooperating-classifiers Sec. 5.1, Eq. 11), system ∈ discrete,
    continuous, combined; fitted on the training pre-activations, scored on each split.

    The training split is needed in full before any split can be scored, and the eval pass
    may visit it last, so the probe holds every read split's pre-activations of one
    checkpoint as float32, 4·E·(N_train + N_scored)·Σ_l H_l bytes, and frees them when the
    checkpoint is finished.
    """

    name = "node_classifiers"

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        self.split_names = [s for s in SPLIT_ORDER if s in ctx.data.splits]
        self.scored = [s for s in self.split_names if s in options.splits]
        self.preacts: dict[str, list[torch.Tensor]] = {}
        shape = (ctx.n_members, self.n_slots, len(ctx.widths), len(coop.SYSTEMS))
        self.accuracy = np.full((*shape, len(self.split_names)), np.nan)

    def read_splits(self) -> set[str]:
        return {"train", *self.scored}

    def add_chunk(self, split, index, preacts):
        if split not in self.read_splits():
            return
        if split not in self.preacts:
            n = self.ctx.data.splits[split].size
            self.preacts[split] = [
                torch.empty(self.ctx.n_members, n, h, device=index.device) for h in self.ctx.widths
            ]
        for stored, z in zip(self.preacts[split], preacts, strict=True):
            stored[:, index] = z.float()

    def finish(self, slot):
        if not self.preacts:
            return
        data = self.ctx.data.splits
        for layer in range(len(self.ctx.widths)):
            # A member diverging in this epoch has non-finite pre-activations, on which no
            # density can be fitted; it is fitted on zeros and its accuracy is NaN (the
            # run masks its values after divergence anyway), the other members unchanged.
            finite = torch.stack(
                [torch.isfinite(z[layer]).flatten(1).all(1) for z in self.preacts.values()]
            ).all(0)
            layer_z = {s: _zero_where_not(finite, z[layer]) for s, z in self.preacts.items()}
            posteriors = coop.layer_log_posteriors(
                layer_z["train"],
                data["train"].labels,
                [layer_z[s] for s in self.scored],
                self.ctx.n_classes,
                self.ctx.activation,
                self.options.threshold,
                self.options.bandwidth,
            )
            for split, post in zip(self.scored, posteriors, strict=True):
                right = post.argmax(-1) == data[split].labels.to(post.device)  # (3, E, M)
                accuracy = right.double().mean(-1).T.cpu().numpy()  # (E, 3)
                accuracy[~finite.cpu().numpy()] = np.nan
                self.accuracy[:, slot, layer, :, self.split_names.index(split)] = accuracy
        self.preacts = {}

    def results(self):
        coords = {"system": list(coop.SYSTEMS), "split": self.split_names}
        da = variable(
            self.dims("layer", "system", "split"),
            self.stored(self.accuracy),
            "layer classifier accuracy",
            "1",
            "fraction of the split's samples (true labels) whose argmax_c of log P(c) + "
            "Σ_i log P(z_i|c) over layer l's nodes is their class; P(z|c): discrete = "
            "fraction of class-c training samples with the node on (z > 0), or 1 minus it "
            "when off, floored at 1/(2 max_c N_c); continuous = Gaussian KDE "
            f"({self.options.bandwidth} bandwidth) of the class-c training pre-activations, "
            "floored at 1e-6 of the node's largest class peak; combined = discrete when off, "
            f"continuous when on; fitted on the training split {self.when()}; "
            "cooperating-classifiers paper Sec. 5.1, Eq. 11",
        )
        return {"layer_accuracy": da.assign_coords(coords)}


def _zero_where_not(finite: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(E, N, H) z with the members that are not `finite` (E,) set to 0."""
    return z if bool(finite.all()) else torch.where(finite[:, None, None], z, 0.0)
