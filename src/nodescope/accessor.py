"""The `ds.ns` accessor: the papers' aggregate definitions on stored results.

ds.ns.layer_mean("activation_fraction")   # f_l of the sample-set paper
ds.ns.layer_mean("predictability")        # p_l
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .aggregates import cooperating

ALL_NODE_MEANS = ("activation_fraction",)
DEFINED_NODE_MEANS = ("predictability", "informativeness")


@xr.register_dataset_accessor("ns")
class NodescopeAccessor:
    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def layer_mean(self, name: str) -> xr.DataArray:
        """Layer aggregate of a node measurement, exactly as the sample-set paper defines it.

        activation_fraction: f_l = (1/N_a) Σ_{i: |Ŝ_{l,i}| ≠ 0} (1/|C|) Σ_c |Ŝ⁽ᶜ⁾_{l,i}|/|S_c|
            (eq. 16; N_a = number of nodes that are not dead).
        predictability, informativeness: mean over the N_b nodes that are neither dead
            nor always active (eqs. 17-18); such nodes are NaN in the node values already.
        Nodes beyond a layer's width are NaN and never count. NaN where no node qualifies.
        """
        ds = self._ds
        if name not in ds:
            raise KeyError(f"{name!r} is not in this dataset; record it with its probe")
        values = ds[name]
        if name in ALL_NODE_MEANS:
            values = values.mean("label")
            if "dead" in ds:
                values = values.where(ds["dead"] != 1)
            else:  # activation_fraction probe alone: dead = no class switches the node on
                values = values.where(values > 0)
        elif name in DEFINED_NODE_MEANS:
            values = values.where((ds["dead"] != 1) & (ds["always_active"] != 1))
        else:
            raise ValueError(
                f"no paper aggregate for {name!r}; use one of "
                f"{', '.join(ALL_NODE_MEANS + DEFINED_NODE_MEANS)}"
            )
        with np.errstate(invalid="ignore"):
            out = values.mean("node")
        out.attrs = {
            "long_name": f"layer mean of {name}",
            "units": "1",
            "description": self.layer_mean.__doc__.split("\n\n")[1].strip(),
        }
        return out

    def wtm_index(self) -> xr.DataArray:
        """Winner-take-most index of every node for every class c, over epochs:

            W_c = 2 max(0, min(max_{k∈c} μ_k − max_{k∉c} μ_k, min_{k∉c} μ_k − min_{k∈c} μ_k))
                  / (max_{k∈c} μ_k − min_{k∈c} μ_k)

        from pattern_preactivation μ_k. W_c > 0 when class c's patterns overhang all other
        patterns on both sides (winners above, losers below the other classes); 0 for a
        class detector, a node that separates nothing, or a class without spread; 1 when
        the other classes sit at one point in the middle of class c's range.

        The index is nodescope's own, not the paper's: the winner-take-most paper plots μ_k
        (Figs. 2-4) and describes winners and losers in words but defines no number. W_c
        condenses that reading into one value per node and class so that runs can be
        compared and aggregated.
        """
        mu = self._ds["pattern_preactivation"]
        classes = np.unique(mu.pattern_class.values).astype(int)
        per_class = []
        for c in classes:
            own, other = mu.where(mu.pattern_class == c), mu.where(mu.pattern_class != c)
            up = own.max("pattern") - other.max("pattern")
            down = other.min("pattern") - own.min("pattern")
            overhang = np.minimum(up, down).clip(min=0)
            spread = own.max("pattern") - own.min("pattern")
            per_class.append(xr.where(spread > 0, 2 * overhang / spread, 0).where(spread.notnull()))
        out = xr.concat(per_class, dim="label").assign_coords(label=classes)
        out.attrs = {
            "long_name": "winner-take-most index",
            "units": "1",
            "description": self.wtm_index.__doc__.split("\n\n")[1].strip(),
        }
        return out.transpose(*[d for d in mu.dims if d != "pattern"], "label")

    def top_neuron_wtm(self) -> xr.DataArray:
        """W_c of the class whose training samples have the most negative mean dL/da sign
        (the class the neuron pushes up), per rank of the top neurons.

        The top neurons and the dL/da signs are the paper's (Fig. 3); picking the pushed-up
        class this way and scoring it with :meth:`wtm_index` is nodescope's own summary.
        """
        ds = self._ds
        sign_by_class = ds["grad_sign_mean"].groupby(ds["train_label"]).mean("train_sample")
        top = ds["top_node"]  # NaN for ranks beyond a narrow layer's width
        pushed_up = sign_by_class.fillna(0).idxmin("train_label").astype(int)
        index = self.wtm_index().isel(layer=-1).sel(node=top.fillna(0).astype(int))
        out = index.sel(label=pushed_up).where(top.notnull())
        out = out.drop_vars(["label", "node", "train_label"], errors="ignore")
        out.attrs = {
            "long_name": "winner-take-most index of the pushed-up class",
            "units": "1",
            "description": "wtm_index of the class with the most negative mean "
            "dL/da sign, for the top neurons ranked by |output weight|",
        }
        return out

    def mean_perplexity(self) -> xr.DataArray:
        """Per-layer perplexity averaged over classes (cooperating classifiers, Fig. 3)."""
        return cooperating.mean_perplexity(self._ds)

    def relative_perplexity(self) -> xr.DataArray:
        """Perplexity of every class relative to its size, P(c, l) / N_c."""
        return cooperating.relative_perplexity(self._ds)

    def node_counts(self, name: str) -> xr.DataArray:
        """Number of nodes per layer flagged by `dead` or `always_active`; NaN for layers a
        member does not have."""
        counts = (self._ds[name] == 1).sum("node")
        if "layer_width" in self._ds.coords:
            counts = counts.where(self._ds["layer_width"] > 0)
        return counts

    def at_epoch(self, epoch: float) -> xr.Dataset:
        """The checkpoint nearest to `epoch`; warns when it is not exactly there. The chosen
        checkpoint is in the result's `epoch` coordinate and its `at_epoch` attribute."""
        import warnings

        ds = self._ds.sel(epoch=epoch, method="nearest")
        took = float(ds.epoch)
        ds.attrs["at_epoch"] = f"asked for epoch {epoch:g}, took the checkpoint at epoch {took:g}"
        if not np.isclose(took, epoch):
            warnings.warn(ds.attrs["at_epoch"], stacklevel=2)
        return ds
