"""Figures of the winner-take-most paper (Figs. 1-5)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .. import accessor  # noqa: F401  registers ds.ns
from .plotting import (
    log_epoch_axis,
    log_epochs,
    mean_and_stderr,
    other_combinations,
    pyplot,
    seed_spread,
)


def _class_colors(plt, classes) -> dict:
    """One tab10 colour per class label."""
    return {c: plt.cm.tab10(i % 10) for i, c in enumerate(np.unique(classes))}


def _first_seed(da: xr.DataArray) -> xr.DataArray:
    return da.isel(seed=0) if "seed" in da.dims else da


def _wtm_members(ds: xr.Dataset, names: list[str], exclude: tuple[str, ...] = ()):
    """(label, member) per combination of the non-seed sweep dims not in `exclude`, first
    seed only, for the variables `names`; combinations without data are left out."""
    dims = [d for d in json.loads(ds.attrs.get("sweep_dims", "[]")) if d not in exclude]
    extras = [n for n in ("final_accuracy", "stop_epoch") if n in ds and n not in names]
    yield from other_combinations(_first_seed(ds[[*names, *extras]]), dims, names[0])


def _top_pattern_preactivations(member: xr.Dataset, rank: int) -> xr.DataArray:
    """μ_k (epoch, pattern) of the rank-th top neuron (last hidden layer), epoch 0 left out."""
    node = int(member["top_node"].isel(rank=rank))
    mu = member["pattern_preactivation"].isel(layer=-1).sel(node=node)
    return log_epochs(mu).transpose("epoch", "pattern")


def _member_note(member: xr.Dataset) -> str:
    """'test acc 97.0%' of a member, '' when the Dataset has no final test accuracy."""
    if "final_accuracy" not in member or "test" not in member.split.values:
        return ""
    acc = float(member["final_accuracy"].sel(split="test"))
    return "" if np.isnan(acc) else f"test acc {100 * acc:.1f}%"


def _mark_stop(ax, member: xr.Dataset) -> None:
    """Dotted vertical line at the member's stop epoch (later checkpoints repeat the
    final weights), when training stopped early."""
    stop = float(member["stop_epoch"]) if "stop_epoch" in member else np.nan
    if np.isfinite(stop) and stop > 0:
        ax.axvline(stop, color="0.3", ls=":", lw=1, label="training stopped")


def _plot_pattern_lines(ax, mu: xr.DataArray, colors: dict) -> None:
    """One line per pattern against log epoch, coloured by the pattern's class."""
    for pattern in mu.pattern.values:
        cls = mu.pattern_class.sel(pattern=pattern).item()
        ax.plot(
            mu.epoch,
            mu.sel(pattern=pattern),
            color=colors[cls],
            lw=1.1,
            alpha=0.85,
            label=f"class {cls} patterns",
        )
    ax.axhline(0, color="0.6", lw=0.6, zorder=0)
    log_epoch_axis(ax, mu.epoch.values)


def _legend_by_label(fig, axes, **kwargs) -> None:
    """One figure legend entry per distinct line label of `axes`."""
    handles = {}
    for ax in np.ravel(axes):
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    labels = sorted(handles, key=lambda text: (not text.startswith("class"), text))
    if labels:
        fig.legend([handles[k] for k in labels], labels, fontsize="small", **kwargs)


def _finish_pattern_grid(fig, axes, colors: dict, title: str):
    """Axis labels, one legend entry per class and the title of a grid of pattern curves."""
    for ax in axes[:, 0]:
        ax.set_ylabel("mean pre-activation $\\mu_k$")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    _legend_by_label(fig, axes, loc="outside lower center", ncols=len(colors))
    fig.suptitle(title)
    return fig


def _accuracy_rows(acc: xr.DataArray, dims: list[str]):
    """(title, row labels, row name, values (rows, sigma_test)) per heat map of Fig. 1."""
    if "sigma" in dims:
        mean, stderr = seed_spread(acc)
        both = xr.Dataset({"mean": mean, "stderr": stderr})
        for label, part in other_combinations(both, [d for d in dims if d != "sigma"]):
            part = part.transpose("sigma", "sigma_test")
            labels = [f"{v:g}" for v in part.sigma.values]
            yield label, labels, "$\\sigma_{train}$", part["mean"].values, part["stderr"].values
    elif not dims:  # a single run without sweep dims
        values = acc.values.reshape(1, -1)
        yield "", ["run"], "member", values, np.full(values.shape, np.nan)
    else:
        stacked = acc.stack(_row=dims).transpose("_row", "sigma_test")
        keep = stacked.notnull().any("sigma_test").values
        stacked = stacked.isel(_row=keep)
        labels = [", ".join(f"{d}={stacked[d].values[i]}" for d in dims) for i in range(keep.sum())]
        yield "", labels, "member", stacked.values, np.full(stacked.shape, np.nan)


def wtm_accuracy_grid_figure(ds: xr.Dataset):
    """Winner-take-most paper Fig. 1: test accuracy over sigma_train (rows, the `sigma`
    sweep dim, mean over seeds) × sigma_test (columns), best sigma_train per column boxed.

    Without a `sigma` dim, one row per member.
    """
    plt = pyplot()
    dims = [d for d in json.loads(ds.attrs.get("sweep_dims", "[]")) if d in ds.dims]
    blocks = list(_accuracy_rows(ds["accuracy_noise"], dims))
    n_test = ds.sizes["sigma_test"]
    n_rows = max(len(labels) for _, labels, _, _, _ in blocks)
    fig, axes = plt.subplots(
        1,
        len(blocks),
        figsize=(1.5 + 0.8 * n_test * len(blocks) + 1.2, 1.6 + 0.65 * n_rows),
        squeeze=False,
        layout="constrained",
    )
    values = 100 * np.concatenate([v.ravel() for _, _, _, v, _ in blocks])
    lo, hi = np.nanmin(values), np.nanmax(values)
    for ax, (title, labels, row_name, acc, err) in zip(axes[0], blocks, strict=True):
        pct = 100 * acc
        image = ax.imshow(pct, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        with np.errstate(invalid="ignore"):
            best = np.isclose(pct, np.nanmax(pct, axis=0, keepdims=True))
        for (i, j), value in np.ndenumerate(pct):
            if np.isnan(value):
                continue
            dark = image.norm(value) < 0.6  # viridis is dark below ~60 %
            ax.text(
                j,
                i,
                f"{value:.1f}" + ("" if np.isnan(err[i, j]) else f"\n±{100 * err[i, j]:.1f}"),
                ha="center",
                va="center",
                fontsize="small",
                color="white" if dark else "black",
            )
            if best[i, j]:
                ax.add_patch(
                    plt.Rectangle(
                        (j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="red", lw=2
                    )
                )
        ax.set_xticks(range(n_test), [f"{s:g}" for s in ds.sigma_test.values])
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("$\\sigma_{test}$")
        ax.set_ylabel(row_name)
        if title:
            ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=axes[0, -1], label="test accuracy (%)")
    n_seeds = ds.sizes.get("seed", 1)
    if "sigma" in dims:
        fig.suptitle(
            "Test accuracy, $\\sigma_{train}$ × $\\sigma_{test}$, "
            + (f"mean ± s.e. over {n_seeds} seeds" if n_seeds > 1 else "1 seed")
            + "\nred box: best $\\sigma_{train}$ per column"
        )
    else:
        fig.suptitle(
            "Test accuracy per member and $\\sigma_{test}$\nred box: best member per column"
        )
    return fig


def wtm_pattern_preactivations_figure(ds: xr.Dataset, n_top: int = 3):
    """Winner-take-most paper Figs. 2-3 (rows 1-2): μ_k = mean pre-activation of pattern k
    against log epoch, for the n_top neurons with the largest |w_out| (`top_node`).

    One subplot row per combination of the non-seed sweep dims (first seed), one line per
    pattern, coloured by the pattern's class.
    """
    plt = pyplot()
    members = list(_wtm_members(ds, ["pattern_preactivation", "top_node"]))
    n_top = min(n_top, ds.sizes["rank"])
    colors = _class_colors(plt, ds.pattern_class.values)
    fig, axes = plt.subplots(
        len(members),
        n_top,
        figsize=(3.8 * n_top, 2.8 * len(members) + 1),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for row, (label, member) in enumerate(members):
        for rank in range(n_top):
            ax = axes[row, rank]
            if member["top_node"].isel(rank=rank).isnull():
                ax.set_axis_off()  # the member's layer has fewer neurons than this rank
                continue
            _plot_pattern_lines(ax, _top_pattern_preactivations(member, rank), colors)
            _mark_stop(ax, member)
            node = int(member["top_node"].isel(rank=rank))
            head = ", ".join(t for t in (label, _member_note(member)) if t)
            ax.set_title(
                (f"{head}\n" if head else "") + f"rank {rank} (node {node})", fontsize="medium"
            )
    return _finish_pattern_grid(
        fig,
        axes,
        colors,
        "Mean pre-activation of every pattern in the top neurons (largest |w_out|)"
        + ("\nfirst seed" if "seed" in ds.dims else ""),
    )


def wtm_final_distributions_figure(ds: xr.Dataset):
    """Winner-take-most paper Fig. 3 (rows 3-4), rank-0 neuron of each member (first seed).

    Left: final pre-activation z(x) of every training sample, one box per pattern ordered
    by its mean, coloured by class. Right: histogram of the mean sign of dL/da over
    training, (1/T_s) Σ_t sign(∂L_t/∂a(x_s)), per class.
    """
    plt = pyplot()
    names = ["preactivation_final", "grad_sign_mean"] + ["top_node"] * ("top_node" in ds)
    members = list(_wtm_members(ds, names))
    colors = _class_colors(plt, ds.train_label.values)
    fig, axes = plt.subplots(
        len(members),
        2,
        figsize=(11, 2.8 * len(members) + 1),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 2]},
        layout="constrained",
    )
    for row, (label, member) in enumerate(members):
        z = member["preactivation_final"].isel(rank=0)
        means = z.groupby("train_pattern").mean()
        order = means.train_pattern.values[np.argsort(means.values)]
        groups = [z.values[z.train_pattern.values == p] for p in order]
        classes = [z.train_label.values[z.train_pattern.values == p][0] for p in order]
        ax = axes[row, 0]
        boxes = ax.boxplot(
            groups,
            patch_artist=True,
            widths=0.6,
            medianprops={"color": "k"},
            flierprops={"markersize": 2, "alpha": 0.4},
        )
        for box, cls in zip(boxes["boxes"], classes, strict=True):
            box.set_facecolor(colors[cls])
            box.set_label(f"class {cls}")
        ax.set_xticks(range(1, len(order) + 1), [str(p) for p in order], fontsize="x-small")
        ax.axhline(0, color="0.6", lw=0.6, zorder=0)
        ax.set_ylabel("final pre-activation z")
        node = int(member["top_node"].isel(rank=0)) if "top_node" in member else None
        head = ", ".join(t for t in (label, _member_note(member)) if t)
        ax.set_title(
            (f"{head}: " if head else "")
            + "top neuron"
            + (f" (node {node})" if node is not None else "")
            + ", patterns ordered by mean",
            fontsize="medium",
        )
        ax = axes[row, 1]
        signs = member["grad_sign_mean"].isel(rank=0)
        bins = np.linspace(-1, 1, 41)
        for cls, color in colors.items():
            values = signs.values[signs.train_label.values == cls]
            ax.hist(
                values[np.isfinite(values)], bins=bins, color=color, alpha=0.6, label=f"class {cls}"
            )
        ax.set_xticks([-1, -0.5, 0, 0.5, 1])
        ax.set_ylabel("training samples")
        ax.set_title("mean sign of dL/da over training", fontsize="medium")
    axes[-1, 0].set_xlabel("pattern")
    axes[-1, 1].set_xlabel("mean sign of $\\partial L/\\partial a$")
    _legend_by_label(fig, axes, loc="outside lower center", ncols=len(colors))
    fig.suptitle(
        "Top neuron (largest |w_out|) at the end of training"
        + (", first seed" if "seed" in ds.dims else "")
    )
    return fig


def wtm_ablations_figure(ds: xr.Dataset):
    """Winner-take-most paper Fig. 4: μ_k of the top neuron against log epoch, one column
    per `tag` (the ablation variants; first seed), one line per pattern coloured by class.
    """
    plt = pyplot()
    tags = ds.tag.values
    rows = list(_wtm_members(ds, ["pattern_preactivation", "top_node"], exclude=("tag",)))
    colors = _class_colors(plt, ds.pattern_class.values)
    riders = [c for c in ds.coords if ds[c].dims == ("tag",) and c != "tag"]
    fig, axes = plt.subplots(
        len(rows),
        len(tags),
        figsize=(3.6 * len(tags), 2.8 * len(rows) + 1.2),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for row, (label, part) in enumerate(rows):
        for col, tag in enumerate(tags):
            ax = axes[row, col]
            member = part.sel(tag=tag)
            if member["pattern_preactivation"].isnull().all():
                ax.set_visible(False)
                continue
            _plot_pattern_lines(ax, _top_pattern_preactivations(member, 0), colors)
            _mark_stop(ax, member)
            detail = ", ".join(f"{c}={member[c].item()}" for c in riders)
            note = _member_note(member)
            detail = f"{detail}\n{note}" if detail and note else detail or note
            ax.set_title(
                f"{tag}" + (f"\n{detail}" if detail else "") + (f"\n{label}" if label else ""),
                fontsize="medium",
            )
    return _finish_pattern_grid(
        fig,
        axes,
        colors,
        "Ablations: mean pre-activation of every pattern in the top neuron"
        + (", first seed" if "seed" in ds.dims else ""),
    )


def wtm_difficulty_figure(ds: xr.Dataset):
    """Winner-take-most paper Fig. 5. Left: distribution of the difficulty coefficient
    d(x) = ⟨x, Σ_{k∉C(x)} c_k⟩ − ⟨x, Σ_{k∈C(x)} c_k⟩ (eq. 2) per member (first seed);
    difficult: d > 0. Right: the difficult samples' share of the training loss against
    log epoch, mean ± s.e. over seeds, one line per non-seed sweep combination.
    """
    plt = pyplot()
    dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    members = list(_wtm_members(ds, ["difficulty"]))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(members)))
    d_all = np.concatenate([m["difficulty"].values.ravel() for _, m in members])
    bins = np.linspace(np.nanmin(d_all), np.nanmax(d_all), 50)
    for (label, member), color in zip(members, colors, strict=True):
        d = member["difficulty"].values
        share = f"{100 * np.mean(d[np.isfinite(d)] > 0):.1f}% difficult"
        label = f"{label}: {share}" if label else share
        left.hist(d, bins=bins, histtype="step", lw=1.5, color=color, label=label)
    left.axvline(0, color="k", ls="--", lw=1)
    left.set_xlabel("difficulty $d(x)$ (eq. 2)")
    left.set_ylabel("training samples")
    left.set_title("difficulty coefficient" + (", first seed" if "seed" in ds.dims else ""))
    left.legend(fontsize="small")

    share = log_epochs(ds["loss_share"].sel(sample_group="difficult"))
    if "seed" not in share.dims:
        share = share.expand_dims("seed")
    combos = [
        (label, part) for label, part in other_combinations(share, dims) if part.notnull().any()
    ]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(combos)))
    for (label, part), color in zip(combos, colors, strict=True):
        mean, se = mean_and_stderr(part)
        right.plot(mean.epoch, mean, color=color, label=label or None)
        right.fill_between(mean.epoch, mean - se, mean + se, color=color, alpha=0.25)
    right.axhline(0.5, color="k", ls="--", lw=1)
    log_epoch_axis(right, share.epoch.values)
    right.set_ylim(0, 1)
    right.set_xlabel("epoch")
    right.set_ylabel("difficult share of the training loss")
    right.set_title("$\\Sigma_{d(x)>0} L_x / \\Sigma_x L_x$ (regular: 1 − it)")
    if combos[0][0]:
        right.legend(fontsize="small")
    n_seeds = ds.sizes.get("seed", 1)
    fig.suptitle(
        f"Difficult training samples; loss shares mean ± s.e. over {n_seeds} seed"
        + "s" * (n_seeds != 1)
    )
    return fig
