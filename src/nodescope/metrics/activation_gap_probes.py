"""The probe of the activation gap paper: gaps, weight gaps and gap conditions of the
2-node summary layer on sampled pairs of eval samples, before and after weight
normalisation, once at the end of training (the best checkpoint under early stopping).

Formulas live in `activation_gaps` (pure tensor functions).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..data.seeds import stream_seed
from . import activation_gaps as gaps
from .base import Probe, ProbeContext, variable

NORMALISED = [False, True]
SUMMARY_NODES = ["j", "k"]
PAIR_KINDS = ["correct", "misclassified"]
DIMS_PAIR = ("member", "pair")
DIMS_GAP = ("member", "normalised", "pair", "summary_node")
DIMS_CONDITION = ("member", "normalised", "pair", "condition")
PAIR_NOTE = "; −1 (NaN) pads members with fewer pairs than the bound"
CONDITION_TEXT = (
    "pair_separated: Eq. 9 ∧ Eq. 10, a(s)·φ_cc′ > 0 > a(s′)·φ_cc′ (each sample scores "
    "higher for its own class of the two); eq15: φ_jcc′ φ_kc′c > 0; eq16: α_jcc′ φ_jcc′ > "
    "α_kcc′ φ_kc′c; ratio_form: Eq. 15 and Eqs. 17–18, |α_jcc′/α_kcc′| against "
    "|φ_kc′c/φ_jcc′| with the inequality chosen by the signs (activation gap paper)"
)


class ActivationGapsProbe(Probe):
    """activation_gaps: Eqs. 7–18 of Davel, "Activation gap generators in neural networks".

    On the eval split, `n_samples` correctly classified and `n_misclassified` misclassified
    samples are drawn per member (the first ones in one seeded permutation of the split,
    so members that agree on a sample share it); every pair of them from different classes
    is a `pair`, at most C(n_samples + n_misclassified, 2). Pairs of two correctly
    classified samples come first. Classes are the labels each member is scored on; a
    sample is correctly classified when its class's output beats every other output
    strictly (`activation_gaps.strictly_correct`).
    """

    name = "activation_gaps"

    def __init__(self, options, ctx: ProbeContext):
        super().__init__(options, ctx)
        self.n_pairs = gaps.max_pairs(options.n_samples, options.n_misclassified)
        self.out: dict = {}

    @torch.no_grad()
    def _summary_outputs(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, N, 2) summary activations and (E, N, K) outputs on the eval split."""
        split = self.ctx.data.splits[self.options.split]
        chunk = self.ctx.specs[0].training.eval_chunk if self.ctx.specs else 4096
        acts, outs = [], []
        for start in range(0, split.size, chunk):
            stop = min(start + chunk, split.size)
            fwd = model(split.range_inputs(start, stop).double(), keep=True)
            acts.append(fwd.acts[-1])
            outs.append(fwd.out)
        return torch.cat(acts, 1), torch.cat(outs, 1)

    def _pairs(self, correct: torch.Tensor, targets: torch.Tensor):
        """Per member (E, P) first and second sample index, -1 beyond its pairs."""
        E, N = correct.shape
        g = torch.Generator().manual_seed(stream_seed(self.options.seed, "probe"))
        order = torch.randperm(N, generator=g).to(correct.device)
        first = torch.full((E, self.n_pairs), -1, dtype=torch.long, device=correct.device)
        second = first.clone()
        for e in range(E):
            samples = gaps.pick_samples(
                correct[e], order, self.options.n_samples, self.options.n_misclassified
            )
            a, b = gaps.cross_class_pairs(samples, targets[e], correct[e])
            first[e, : len(a)], second[e, : len(b)] = a, b
        return first, second

    def on_end(self, model) -> None:
        trained = copy.deepcopy(model).double().eval()
        normalised = gaps.normalise_stacked(trained)
        acts, out = self._summary_outputs(trained)
        acts_norm, out_norm = self._summary_outputs(normalised)
        targets = self.ctx.data.splits[self.options.split].targets
        correct = gaps.strictly_correct(out, targets)
        first, second = self._pairs(correct, targets)
        valid = first >= 0
        s, s_other = first.clamp(min=0), second.clamp(min=0)
        label, other = targets.gather(1, s), targets.gather(1, s_other)

        both_acts = torch.stack([acts, acts_norm])  # (2, E, N, 2)
        weights = [trained.weights[-1].detach(), normalised.weights[-1].detach()]
        out_weight = torch.stack(weights)  # (2, E, 2, K)
        alpha = gaps.activation_gaps(both_acts, s, s_other)
        phi = gaps.weight_gaps(out_weight, label, other)
        conditions = {
            "pair_separated": gaps.pair_separated(
                gaps.take_pairs(both_acts, s), gaps.take_pairs(both_acts, s_other), phi
            ),
            **gaps.gap_conditions(alpha, phi),
        }
        flags = torch.stack([conditions[c] for c in gaps.CONDITIONS], -1)  # (2, E, P, 4)
        pair_correct = correct.gather(1, s) & correct.gather(1, s_other) & valid
        pair_miss = valid & ~pair_correct
        kinds = torch.stack([pair_correct, pair_miss], 1)  # (E, 2 kinds, P)
        counts = kinds.sum(-1)  # (E, 2)
        met = torch.einsum("nepc,ekp->enkc", flags.double(), kinds.double())
        fraction = met / counts[:, None, :, None]  # NaN where a member has no such pairs

        scale = out.abs().amax((1, 2)).clamp(min=torch.finfo(out.dtype).tiny)
        self.out = {
            "valid": valid.cpu().numpy(),
            "first": first.cpu().numpy(),
            "second": second.cpu().numpy(),
            "label": label.cpu().numpy(),
            "other": other.cpu().numpy(),
            "first_correct": correct.gather(1, s).cpu().numpy(),
            "second_correct": correct.gather(1, s_other).cpu().numpy(),
            "alpha": alpha.transpose(0, 1).cpu().numpy(),
            "phi": phi.transpose(0, 1).cpu().numpy(),
            "flags": flags.transpose(0, 1).cpu().numpy(),
            "fraction": fraction.cpu().numpy(),
            "counts": counts.cpu().numpy(),
            "out_weight": out_weight.transpose(0, 1).cpu().numpy(),
            "change": ((out_norm - out).abs().amax((1, 2)) / scale).cpu().numpy(),
        }

    def _pair_ints(self, key: str, dtype) -> np.ndarray:
        return np.where(self.out["valid"], self.out[key], -1).astype(dtype)

    def results(self):
        if not self.out:
            return {}
        o, valid = self.out, self.out["valid"]
        pad = ~valid[:, None, :, None]
        coords = {"normalised": NORMALISED}
        pair_vars = {
            "pair_label": ("label", np.int16, "class c", "class c of the pair (the lower one)"),
            "pair_other_label": ("other", np.int16, "class c′", "class c′ > c of the pair"),
            "pair_sample": ("first", np.int32, "sample s", "index of s (class c) in the split"),
            "pair_other_sample": ("second", np.int32, "sample s′", "index of s′ (class c′)"),
            "pair_sample_correct": (
                "first_correct",
                np.int8,
                "s correctly classified",
                "1 where s's class has the member's largest output, strictly",
            ),
            "pair_other_correct": (
                "second_correct",
                np.int8,
                "s′ correctly classified",
                "1 where s′'s class has the member's largest output, strictly",
            ),
        }
        results = {
            name: variable(
                DIMS_PAIR,
                self._pair_ints(key, dtype),
                long_name,
                "1",
                description + PAIR_NOTE,
            )
            for name, (key, dtype, long_name, description) in pair_vars.items()
        }
        gap_coords = {**coords, "summary_node": SUMMARY_NODES}
        results["activation_gap"] = variable(
            DIMS_GAP,
            np.where(pad, np.nan, o["alpha"]),
            "activation gap",
            "1",
            "α_·cc′ = a_·(s) − a_·(s′) at summary nodes j and k (activation gap paper Eq. 7), "
            "before and after weight normalisation (Sec. 3.3)" + PAIR_NOTE,
        ).assign_coords(gap_coords)
        results["weight_gap"] = variable(
            DIMS_GAP,
            np.where(pad, np.nan, o["phi"]),
            "weight gap",
            "1",
            "φ_·cc′ = w_·c − w_·c′ from summary nodes j and k (Eq. 8; the k entry is φ_kcc′ "
            "= −φ_kc′c), before and after weight normalisation" + PAIR_NOTE,
        ).assign_coords(gap_coords)
        condition_coords = {**coords, "condition": list(gaps.CONDITIONS)}
        results["gap_condition"] = variable(
            DIMS_CONDITION,
            np.where(pad, -1, o["flags"]).astype(np.int8),
            "gap condition met",
            "1",
            "1 where the pair meets the condition: " + CONDITION_TEXT + PAIR_NOTE,
        ).assign_coords(condition_coords)
        results["gap_condition_fraction"] = variable(
            ("member", "normalised", "pair_kind", "condition"),
            o["fraction"],
            "fraction of pairs meeting the gap condition",
            "1",
            "fraction of the pairs of two correctly classified samples (correct) or with a "
            "misclassified sample (misclassified) that meet: " + CONDITION_TEXT,
        ).assign_coords({**condition_coords, "pair_kind": PAIR_KINDS})
        results["gap_pair_count"] = variable(
            ("member", "pair_kind"),
            o["counts"],
            "number of sample pairs",
            "pairs",
            "cross-class pairs of the sampled eval samples, of two correctly classified "
            "samples (correct) or with a misclassified sample (misclassified)",
        ).assign_coords(pair_kind=PAIR_KINDS)
        results["summary_output_weight"] = variable(
            ("member", "normalised", "summary_node", "label"),
            o["out_weight"],
            "summary-layer output weight",
            "1",
            "w_·c from summary node j or k to the output of class c, before and after weight "
            "normalisation (activation gap paper Fig. 3, Sec. 3.3)",
        ).assign_coords(gap_coords)
        results["normalisation_output_change"] = variable(
            ("member",),
            o["change"],
            "output change by weight normalisation",
            "1",
            "max |o_normalised − o| / max |o| over the eval split's outputs (float64): "
            "weight normalisation preserves the function, so rounding only",
        )
        for name in ("pair_sample_correct", "pair_other_correct", "gap_condition"):
            results[name].attrs["flag_values"] = "-1 0 1"
        return results
