"""Figures of the activation gap paper (Figs. 5–9), one row per architecture showing its
selected member (see `activation_gaps.selected_members`)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .activation_gaps import selected_members
from .plotting import pyplot

BLUE, ORANGE, GREEN = "tab:blue", "tab:orange", "tab:green"
STAGES = {False: "before normalisation", True: "after normalisation"}


def _rows(ds: xr.Dataset) -> list[tuple[str, xr.Dataset]]:
    rows = []
    for where, member in selected_members(ds):
        label = ", ".join(f"{k}={v}" for k, v in member.items())
        rows.append((label if where else f"selected: {label}", ds.sel(member).load()))
    return rows


def _grid(n_rows: int, n_cols: int, width: float = 4.6, height: float = 3.0):
    plt = pyplot()
    return plt.subplots(
        n_rows,
        n_cols,
        figsize=(width * n_cols, height * n_rows + 0.8),
        squeeze=False,
        layout="constrained",
    )


def _few_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))


def _correct_pairs(member: xr.Dataset) -> np.ndarray:
    return ((member.pair_sample_correct == 1) & (member.pair_other_correct == 1)).values


def _misclassified_pairs(member: xr.Dataset) -> np.ndarray:
    valid = member.pair_sample >= 0
    return (valid & ((member.pair_sample_correct == 0) | (member.pair_other_correct == 0))).values


def _products(member: xr.Dataset, normalised: bool) -> tuple[np.ndarray, np.ndarray]:
    """α_jcc′ φ_jcc′ and α_kcc′ φ_kc′c of every pair (the two sides of Eq. 16)."""
    alpha = member.activation_gap.sel(normalised=normalised)
    phi = member.weight_gap.sel(normalised=normalised)
    return (
        (alpha.sel(summary_node="j") * phi.sel(summary_node="j")).values,
        (alpha.sel(summary_node="k") * -phi.sel(summary_node="k")).values,
    )


def gap_weight_products_figure(ds: xr.Dataset):
    """Paper Fig. 5: φ_jcc′, φ_kc′c and their product (Eq. 15) for every ordered class pair
    c ≠ c′, before and after weight normalisation."""
    rows = _rows(ds)
    fig, axes = _grid(len(rows), 2)
    for r, (label, member) in enumerate(rows):
        w = member.summary_output_weight
        classes = w.label.values
        pairs = [(c, d) for c in classes for d in classes if c != d]
        for col, normalised in enumerate(STAGES):
            wn = w.sel(normalised=normalised)
            wj, wk = wn.sel(summary_node="j").values, wn.sel(summary_node="k").values
            phi_j = np.array([wj[c] - wj[d] for c, d in pairs])
            phi_k_rev = np.array([wk[d] - wk[c] for c, d in pairs])
            ax = axes[r, col]
            x = np.arange(len(pairs))
            ax.plot(x, phi_j, ".", color=BLUE, label="φ_jcc′")
            ax.plot(x, phi_k_rev, ".", color=ORANGE, label="φ_kc′c")
            ax.axhline(0, color="grey", lw=0.5)
            # the product has its own scale (it grows most under normalisation)
            right = ax.twinx()
            product = phi_j * phi_k_rev
            right.plot(x, product, "-", color="black", lw=1, label="φ_jcc′ φ_kc′c (right)")
            negative = product <= 0
            right.plot(x[negative], product[negative], "x", color="red", label="Eq. 15 fails")
            right.axhline(0, color="black", lw=0.5, ls=":")
            ax.set_title(f"{label}\n{STAGES[normalised]}", fontsize="small")
            ax.set_xlabel("class pair (c, c′)")
            if r == 0 and col == 0:
                handles = [
                    *ax.get_legend_handles_labels()[0],
                    *right.get_legend_handles_labels()[0],
                ]
                ax.legend(handles=handles, fontsize="small")
    fig.suptitle("Weight gaps of the summary nodes (Eq. 15: the product is positive)")
    return fig


def gap_products_figure(ds: xr.Dataset):
    """Paper Figs. 6 (after) and 8 (before normalisation): α_jcc′ φ_jcc′ against
    α_kcc′ φ_kc′c for pairs of correctly classified samples (Eq. 16: the first is larger),
    sorted by the first; a third column shows the pairs with a misclassified sample."""
    rows = _rows(ds)
    fig, axes = _grid(len(rows), 3)
    for r, (label, member) in enumerate(rows):
        columns = [
            (True, _correct_pairs(member), "correct pairs, after normalisation (Fig. 6)"),
            (False, _correct_pairs(member), "correct pairs, before normalisation (Fig. 8)"),
            (True, _misclassified_pairs(member), "pairs with a misclassified sample, after"),
        ]
        for col, (normalised, keep, title) in enumerate(columns):
            left, right = _products(member, normalised)
            left, right = left[keep], right[keep]
            order = np.argsort(left, kind="stable")
            ax = axes[r, col]
            x = np.arange(order.size)
            ax.scatter(x, left[order], s=1, color=BLUE, label="α_jcc′ φ_jcc′", rasterized=True)
            ax.scatter(x, right[order], s=1, color=ORANGE, label="α_kcc′ φ_kc′c", rasterized=True)
            met = np.mean(left > right) if left.size else np.nan
            ax.set_title(f"{label}\n{title}\nEq. 16 holds for {100 * met:.1f}%", fontsize="small")
            ax.set_xlabel("pair, sorted by α_jcc′ φ_jcc′")
            _few_ticks(ax)
    axes[0, 0].legend(fontsize="small", markerscale=6)
    fig.suptitle("The two sides of Eq. 16 per sample pair")
    return fig


def gap_ratios_figure(ds: xr.Dataset):
    """Paper Figs. 7 (after) and 9 (before and after normalisation): the weight ratio
    |φ_kc′c/φ_jcc′| (green) and the activation ratio |α_jcc′/α_kcc′| of pairs of correctly
    classified samples with α_jcc′ α_kcc′ > 0 (Eq. 18): larger when φ_jcc′ α_kcc′ > 0
    (blue), smaller when < 0 (orange). Pairs sorted by weight ratio; log axis."""
    rows = _rows(ds)
    fig, axes = _grid(len(rows), 2)
    for r, (label, member) in enumerate(rows):
        for col, normalised in enumerate((True, False)):
            alpha = member.activation_gap.sel(normalised=normalised)
            phi = member.weight_gap.sel(normalised=normalised)
            a_j, a_k = alpha.sel(summary_node="j").values, alpha.sel(summary_node="k").values
            p_j, p_k = phi.sel(summary_node="j").values, phi.sel(summary_node="k").values
            keep = _correct_pairs(member) & (a_j * a_k > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                act_ratio = np.abs(a_j / a_k)[keep]
                weight_ratio = np.abs(p_k / p_j)[keep]
            larger = (p_j * a_k)[keep] > 0
            order = np.argsort(weight_ratio, kind="stable")
            x = np.arange(order.size)
            ax = axes[r, col]
            up = larger[order]
            for side, color, sign in ((up, BLUE, ">"), (~up, ORANGE, "<")):
                label_side = f"α-ratio, φ_jcc′ α_kcc′ {sign} 0"
                ax.scatter(x[side], act_ratio[order][side], s=1, color=color, label=label_side)
            ax.plot(x, weight_ratio[order], color=GREEN, lw=1.2, label="φ-ratio |φ_kc′c/φ_jcc′|")
            if np.any(act_ratio > 0) or np.any(weight_ratio > 0):
                ax.set_yscale("log")
            fig_no = "Figs. 7, 9" if normalised else "Fig. 9"
            ax.set_title(
                f"{label}\n{STAGES[normalised]} ({fig_no}), {order.size} pairs with α_jα_k > 0",
                fontsize="small",
            )
            ax.set_xlabel("pair, sorted by φ-ratio")
            _few_ticks(ax)
    axes[0, 0].legend(fontsize="small", markerscale=6)
    fig.suptitle("Activation ratios against weight ratios (Eq. 18)")
    return fig
