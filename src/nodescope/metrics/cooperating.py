"""Layers of cooperating classifiers: Davel, Theunissen, Pretorius & Barnard, "DNNs as layers
of cooperating classifiers" (AAAI 2020), Eqs. 1-2 (layer perplexity) and Section 5.1 with
Eq. 11 (every node a classifier; a layer a naive-Bayes product of its nodes).

Pure torch tensor functions: they know nothing about runners, checkpoints or xarray. A
leading member dimension E (several networks stacked) runs through every function.

Notation (layer l with H nodes, class c, samples S, S_c the N_c samples of class c):

* z^s_{l,i}   pre-activation of node i for sample s; ẑ^s_{l,i} = [z^s_{l,i} > 0] its on/off
              state (sigmoid networks: activation > 0.5), see ``sample_sets.is_on``.
* K(c, l)     the multiset of counts n of the distinct binary patterns ẑ^s_l, s ∈ S_c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .class_sums import class_counts_of
from .sample_sets import is_on

__all__ = [
    "WORD_BITS",
    "BANDWIDTH_FACTORS",
    "GridKDE",
    "SYSTEMS",
    "class_log_prior",
    "continuous_floor",
    "discrete_floor",
    "discrete_log_tables",
    "fit_class_kdes",
    "layer_log_posteriors",
    "on_fractions",
    "output_on",
    "pack_patterns",
    "pattern_entropy",
    "perplexity",
]

WORD_BITS = 64

# scipy.stats.gaussian_kde's factors for one dimension (d = 1): the kernel's standard
# deviation is factor · std(samples, ddof=1).
BANDWIDTH_FACTORS = {
    "scott": lambda n: n ** (-1.0 / 5.0),  # n^(−1/(d+4))
    "silverman": lambda n: (n * 3.0 / 4.0) ** (-1.0 / 5.0),  # (n (d+2) / 4)^(−1/(d+4))
}


# --------------------------------------------------------------------------- patterns


def pack_patterns(on: torch.Tensor) -> torch.Tensor:
    """Binary patterns (…, H) bool packed into int64 words (…, ⌈H/64⌉).

    Bit j of word w holds node 64·w + j; the last word is zero-padded, so patterns of any
    width map one-to-one onto word rows. Bit 63 lands on the sign bit: the words are
    compared for equality only, never ordered, so that is harmless. nodescope's own
    encoding; the paper does not say how it counts patterns.
    """
    h = on.shape[-1]
    n_words = max(1, -(-h // WORD_BITS))
    padded = torch.zeros(*on.shape[:-1], n_words * WORD_BITS, dtype=torch.int64, device=on.device)
    padded[..., :h] = on.to(torch.int64)
    bits = padded.view(*on.shape[:-1], n_words, WORD_BITS)
    shifts = torch.arange(WORD_BITS, dtype=torch.int64, device=on.device)
    # Distinct powers of two never carry, so the (wrapping) int64 sum is a bitwise OR.
    return (bits << shifts).sum(-1)


def pattern_entropy(
    words: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pattern entropy H(c, l) (paper Eq. 1) and distinct-pattern count |K(c, l)|.

    H(c, l) = −Σ_{n ∈ K(c,l)} (n / N_c) ln(n / N_c)

    with natural logarithms, as the paper writes it. The counts n come from one
    ``torch.unique`` over rows (member, class, pattern words) on the tensors' device:
    sorting, not an O(N²) comparison of samples.

    Args:
        words: int64 (E, N, W), packed patterns (:func:`pack_patterns`).
        labels: integer (N,), class of every sample in [0, n_classes).
    Returns:
        entropy float64 (E, C), NaN for classes without samples; distinct int64 (E, C).
    """
    if words.dim() != 3:
        raise ValueError(f"words must have shape (E, N, W), got {tuple(words.shape)}")
    e, n, _ = words.shape
    device = words.device
    labels = labels.to(device=device, dtype=torch.int64)
    member = torch.arange(e, device=device).repeat_interleave(n)
    rows = torch.cat([member[:, None], labels.repeat(e)[:, None], words.reshape(e * n, -1)], dim=1)
    keys, counts = torch.unique(rows, dim=0, return_counts=True)
    cell = keys[:, 0] * n_classes + keys[:, 1]  # (member, class) of every distinct pattern
    class_size = torch.bincount(labels, minlength=n_classes).to(torch.float64)
    p = counts.to(torch.float64) / class_size[keys[:, 1]]
    entropy = torch.zeros(e * n_classes, dtype=torch.float64, device=device)
    entropy.index_add_(0, cell, -p * torch.log(p))
    distinct = torch.bincount(cell, minlength=e * n_classes)
    entropy = entropy.view(e, n_classes)
    entropy = torch.where(class_size > 0, entropy, torch.nan)
    return entropy, distinct.view(e, n_classes)


def perplexity(entropy: torch.Tensor) -> torch.Tensor:
    """Perplexity P(c, l) = e^{H(c, l)} (paper Eq. 2): 1 when every class-c sample has the
    same pattern, N_c when every one has its own."""
    return torch.exp(entropy)


# --------------------------------------------------------------------------- batched KDE


@dataclass
class GridKDE:
    """Gaussian KDEs of many rows, tabulated on one evenly spaced grid per row.

    Row r = (member, node, class); ``density`` has shape (E, H, C, G). Between grid points
    values are interpolated linearly. The grid reaches ``pad`` bandwidths past the outermost
    sample, where every KDE has fallen below 1e-6 of its peak (:func:`fit_class_kdes`); its
    two end points are set to 0 and queries beyond them take the end value.
    """

    density: torch.Tensor  # (E, H, C, G)
    lo: torch.Tensor  # (E, H, C) first grid point
    step: torch.Tensor  # (E, H, C) grid spacing Δ
    bandwidth: torch.Tensor  # (E, H, C) kernel standard deviation σ

    def peak(self) -> torch.Tensor:
        """(E, H, C) largest tabulated density of every row."""
        return self.density.amax(-1)

    def __call__(self, query: torch.Tensor) -> torch.Tensor:
        """Density of every class's KDE at every query point: (E, B, H) -> (E, B, H, C)."""
        return self.interpolate(_segments(self.density), query)

    def log_segments(self, floor: torch.Tensor) -> torch.Tensor:
        """Segments (see :meth:`interpolate`) of log max(density, floor), floor (E, H)."""
        density = self.density.to(torch.float64)
        return _segments(torch.log(torch.maximum(density, floor[..., None, None])))

    def interpolate(self, segments: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Linear interpolation of a tabulated function of every row at the query points.

        segments: (E, H, C, G − 1, 2), value and increment of each grid interval.
        query: (E, B, H) -> (E, B, H, C), the rows of a node's C classes side by side.
        """
        e, h, c, cells, _ = segments.shape
        scale = 1 / self.step[:, None]
        t = torch.addcmul(-self.lo[:, None] * scale, query.to(scale.dtype)[..., None], scale)
        left = t.clamp_(0, cells).floor().clamp_(max=cells - 1)
        frac = t.sub_(left).to(segments.dtype)
        row = torch.arange(0, e * h * c * cells, cells, device=query.device).view(e, 1, h, c)
        pair = segments.view(-1, 2)[left.to(torch.int64).add_(row)]
        return torch.addcmul(pair[..., 0], frac, pair[..., 1])


def _segments(table: torch.Tensor) -> torch.Tensor:
    """(…, G) -> (…, G − 1, 2): left value and increment of every grid interval, so one
    gather per query point serves the interpolation."""
    return torch.stack([table[..., :-1], table.diff(dim=-1)], dim=-1)


def _class_moments(z: torch.Tensor, labels: torch.Tensor, n_classes: int):
    """Per (member, node, class): sample count, mean, std (ddof = 1), min and max, float64.

    z: (E, N, H) -> every output (E, H, C) (counts (C,)).
    """
    x = z.to(torch.float64).transpose(1, 2)  # (E, H, N)
    e, h, _ = x.shape
    count = torch.bincount(labels, minlength=n_classes).to(torch.float64)
    total = x.new_zeros(e, h, n_classes).index_add_(2, labels, x)
    mean = total / count.clamp(min=1)
    dev = x - mean[:, :, labels]
    var = x.new_zeros(e, h, n_classes).index_add_(2, labels, dev * dev) / (count - 1).clamp(min=1)
    std = torch.where(count > 1, var.sqrt(), torch.nan)
    index = labels.view(1, 1, -1).expand(e, h, -1)
    lo = x.new_full((e, h, n_classes), math.inf).scatter_reduce(2, index, x, "amin")
    hi = x.new_full((e, h, n_classes), -math.inf).scatter_reduce(2, index, x, "amax")
    return count, mean, std, lo, hi


def fit_class_kdes(
    z: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    bandwidth: str = "scott",
    points_per_bandwidth: int = 100,
    pad: float = 8.0,
    max_grid: int = 1 << 15,
    max_elements: int = 1 << 24,
) -> GridKDE:
    """Gaussian KDE of every (member, node, class) row of a layer at once (paper Sec. 5.1,
    "continuous" node classifier), by linear binning and FFT convolution.

    The paper's estimate: f_{l,i,c}(x) = (1/N_c) Σ_{s ∈ S_c} φ((x − z^s_{l,i}) / σ) / σ, a
    Gaussian KDE of the class-c training pre-activations at the node. The bandwidth is
    scipy.stats.gaussian_kde's: σ = factor(N_c) · std(z, ddof = 1) with Scott's factor
    N_c^(−1/5) or Silverman's (3 N_c / 4)^(−1/5). The paper names neither; everything
    below is nodescope's way of computing that estimate fast.

    * Grid: per row, G evenly spaced points from min − pad·σ to max + pad·σ, G the same
      for every row and chosen so that every row gets at least ``points_per_bandwidth``
      points per σ (at most ``max_grid``). Beyond ``pad`` = 8 bandwidths past the
      outermost sample a KDE of N_c samples lies below N_c e^(−32) ≈ 1.3e-14·N_c of its
      peak, so below 1e-6 of it for N_c < 7·10⁷; the grid holds everything above that.
    * Linear binning: each sample splits its weight 1/N_c between its two neighbouring
      grid points in proportion to proximity (Wand 1994, as in KDEpy's FFTKDE).
    * Convolution of the binned weights with the Gaussian sampled on the grid, by a
      zero-padded real FFT in float64 (no wrap-around); rows are processed in blocks of at
      most ``max_elements`` grid values to bound memory.
    * Evaluation: linear interpolation between grid points (:class:`GridKDE`).

    Binning and interpolation each err by about Δ²/8 · |f''/f| relative, largest in the
    tails where |f''/f| ≈ (u² − 1)/σ² at u bandwidths from the data; at 1e-6 of the peak
    u ≈ 5.3, so Δ = σ/100 keeps the total below 1e-3 relative (checked against
    scipy.stats.gaussian_kde in the tests). Rows with fewer than two samples or zero
    spread get σ = 1e-6·(1 + |mean|) (scipy refuses them); classes without samples get
    density 0.

    Args:
        z: (E, N, H) pre-activations of the training samples.
        labels: integer (N,) classes.
        bandwidth: "scott" or "silverman".
    """
    if bandwidth not in BANDWIDTH_FACTORS:
        raise ValueError(f"bandwidth must be one of {sorted(BANDWIDTH_FACTORS)}, got {bandwidth!r}")
    labels = labels.to(device=z.device, dtype=torch.int64)
    count, mean, std, lo_data, hi_data = _class_moments(z, labels, n_classes)
    factor = BANDWIDTH_FACTORS[bandwidth](count.clamp(min=1))
    sigma = torch.nan_to_num(std * factor, nan=0.0)
    sigma = torch.maximum(sigma, 1e-6 * (1 + mean.abs()))
    empty = count == 0
    lo_data = torch.where(empty, mean, lo_data)
    hi_data = torch.where(empty, mean, hi_data)
    lo = lo_data - pad * sigma
    span = hi_data + pad * sigma - lo
    needed = int(math.ceil(float((span / sigma).max()) * points_per_bandwidth)) + 1
    g = min(max(needed, 64), max_grid)
    step = span / (g - 1)

    e, n, h = z.shape
    # Linear binning of every sample into its row (member, node, class).
    t = (z.to(torch.float64).transpose(1, 2) - lo[:, :, labels]) / step[:, :, labels]
    left = t.floor().clamp(0, g - 2)
    right_weight = (t - left).clamp(0, 1)
    row = (torch.arange(e * h, device=z.device).view(e, h, 1) * n_classes + labels) * g
    weight = (1.0 / count.clamp(min=1))[labels].expand(e, h, n)
    binned = torch.zeros(e * h * n_classes * g, dtype=torch.float64, device=z.device)
    binned.index_add_(0, (row + left.long()).flatten(), (weight * (1 - right_weight)).flatten())
    binned.index_add_(0, (row + left.long() + 1).flatten(), (weight * right_weight).flatten())
    binned = binned.view(-1, g)

    density = torch.empty(e * h * n_classes, g, dtype=torch.float32, device=z.device)
    size = _fft_size(2 * g - 1)
    offsets = torch.arange(-(g - 1), g, dtype=torch.float64, device=z.device)
    flat_step, flat_sigma = step.flatten(), sigma.flatten()
    block = max(1, max_elements // size)
    for start in range(0, binned.shape[0], block):
        rows = slice(start, start + block)
        u = offsets * (flat_step[rows, None] / flat_sigma[rows, None])
        kernel = torch.exp(-0.5 * u * u) / (math.sqrt(2 * math.pi) * flat_sigma[rows, None])
        # Kernel offsets −(G−1)..G−1 start at index 0, so output index G−1+j is grid point j.
        spectrum = torch.fft.rfft(binned[rows], size) * torch.fft.rfft(kernel, size)
        full = torch.fft.irfft(spectrum, size)[:, g - 1 : 2 * g - 1]
        density[rows] = full.clamp(min=0).to(torch.float32)
    density = density.view(e, h, n_classes, g)
    density[:, :, empty] = 0
    density[..., [0, -1]] = 0
    return GridKDE(density, lo, step, sigma)


def _fft_size(n: int) -> int:
    """The smallest 2^a·3^b·5^c >= n (sizes the FFT handles fastest)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


# --------------------------------------------------------------------------- node classifiers


def on_fractions(on: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """p_{l,i,c} = |{s ∈ S_c : ẑ^s_{l,i} = 1}| / N_c, float64 (E, H, C); NaN for empty
    classes. The paper's discrete estimate of P(z > 0 | c) (Sec. 5.1)."""
    labels = labels.to(device=on.device, dtype=torch.int64)
    counts = class_counts_of(on, labels, n_classes).to(torch.float64)
    size = torch.bincount(labels, minlength=n_classes).to(torch.float64)
    return counts / size  # 0/0 -> NaN


def discrete_floor(labels: torch.Tensor, n_classes: int) -> float:
    """Floor of the discrete probabilities: half a sample of the largest class, 1/(2 max_c N_c).

    nodescope's choice (the paper gives none): below every non-zero fraction the data can
    produce, the same for every class, so a node no class-c sample switches on costs class c
    log(1/(2 max N_c)) instead of −∞, and a node that no class switches on favours none.
    """
    return 0.5 / float(torch.bincount(labels.to(torch.int64), minlength=n_classes).max())


def discrete_log_tables(fractions: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(z | c) of the discrete node classifier (paper Sec. 5.1) for an on and an off
    node, each float64 (E, H, C).

    P(z | c) = p_{l,i,c} if z > 0 (node on), 1 − p_{l,i,c} otherwise, floored at ``floor``
    (:func:`discrete_floor`).

    Args:
        fractions: (E, H, C) from :func:`on_fractions`.
    """
    p = torch.nan_to_num(fractions.to(torch.float64), nan=0.0)
    return torch.log(p.clamp(min=floor)), torch.log((1 - p).clamp(min=floor))


def class_log_prior(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """log P(c) = log(N_c / N) of the training labels, float64 (C,); −∞ for absent classes."""
    counts = torch.bincount(labels.to(torch.int64), minlength=n_classes).to(torch.float64)
    return torch.log(counts / counts.sum())


def continuous_floor(kde: GridKDE) -> torch.Tensor:
    """Floor of the continuous densities, (E, H): 1e-6 of the node's largest class peak,
    max_c max_x f_{l,i,c}(x).

    nodescope's choice (the paper gives none): the level down to which
    :func:`fit_class_kdes` is accurate, shared by the node's classes so that a value no
    class's KDE reaches favours none.
    """
    return 1e-6 * kde.peak().amax(-1).to(torch.float64)


SYSTEMS = ("discrete", "continuous", "combined")


def layer_log_posteriors(
    fit_z: torch.Tensor,
    fit_labels: torch.Tensor,
    queries: list[torch.Tensor],
    n_classes: int,
    activation: str = "relu",
    threshold: float | None = None,
    bandwidth: str = "scott",
    node_block: int = 8,
    query_chunk: int = 4096,
) -> list[torch.Tensor]:
    """Unnormalised log-posteriors of the three layer classifiers (paper Sec. 5.1, Eq. 11).

    log P(c) + Σ_i log P(z_i | c) for the systems of :data:`SYSTEMS` (nodes taken as
    independent; the normaliser Σ_m P(z | m) P(m) of Eq. 11 is the same for every class, so
    the argmax over c is the layer's prediction). P(z_i | c) comes from
    the node's discrete estimate (:func:`discrete_log_tables`), its continuous one (the
    class KDE at z, floored at :func:`continuous_floor`), or combined: the discrete estimate
    when the node is off (z ≤ 0), the continuous one when it is on. The log-density is
    interpolated linearly between grid points (log-linear: more accurate in the tails than
    interpolating the density itself). Fitted on ``fit_z``/``fit_labels``
    (the training pre-activations), evaluated at every query. Nodes are processed in blocks
    of ``node_block`` and queries in chunks of ``query_chunk`` to bound memory; the sums
    over nodes are exact in any order up to float64 rounding.

    Args:
        fit_z: (E, N, H) pre-activations the classifiers are fitted on.
        fit_labels: integer (N,).
        queries: (E, M_k, H) pre-activations to classify.
    Returns:
        one float64 (3, E, M_k, C) tensor per query.
    """
    fit_labels = fit_labels.to(device=fit_z.device, dtype=torch.int64)
    prior = class_log_prior(fit_labels, n_classes)
    floor = discrete_floor(fit_labels, n_classes)
    e, _, h = fit_z.shape
    out = [prior.new_zeros(len(SYSTEMS), e, q.shape[1], n_classes) + prior for q in queries]
    for start in range(0, h, node_block):
        nodes = slice(start, start + node_block)
        z = fit_z[..., nodes]
        fractions = on_fractions(is_on(z, activation, threshold), fit_labels, n_classes)
        log_on, log_off = discrete_log_tables(fractions, floor)
        all_off = log_off.sum(1, keepdim=True)  # (E, 1, C): Σ_i log P(off | c)
        kde = fit_class_kdes(z, fit_labels, n_classes, bandwidth)
        log_kde = kde.log_segments(continuous_floor(kde))
        for query, total in zip(queries, out, strict=True):
            for first in range(0, query.shape[1], query_chunk):
                rows = slice(first, first + query_chunk)
                q = query[:, rows, nodes]
                on = is_on(q, activation, threshold).to(torch.float64)  # (E, B, h)
                cont = kde.interpolate(log_kde, q)  # (E, B, h, C)
                # Sums over nodes of where(on, a, b) as b-sums plus on-weighted a − b.
                discrete = all_off + torch.bmm(on, log_on - log_off)
                continuous = cont.sum(2)
                combined = all_off + torch.einsum("ebhc,ebh->ebc", cont, on)
                combined -= torch.bmm(on, log_off)
                total[:, :, rows] += torch.stack([discrete, continuous, combined])
    return out


# --------------------------------------------------------------------------- output nodes


def output_on(out: torch.Tensor, loss: str) -> torch.Tensor:
    """On/off state of the output nodes (paper Fig. 1 counts them beside the hidden ones).

    The paper's networks have linear outputs (MSE), on when z > 0 like a hidden ReLU. For
    the other output functions nodescope picks the reading that matches its activation:
    sigmoid (bce) on when σ(z) > 0.5 ⇔ z > 0; softmax (ce) on when the node's probability
    exceeds the uniform 1/K ⇔ z_k > log((1/K) Σ_j e^{z_j}), which, unlike z > 0, does not
    change when every logit shifts by the same amount (softmax ignores such shifts).

    Args:
        out: (…, K) output pre-activations (logits).
        loss: "mse", "bce" or "ce".
    """
    if loss == "ce":
        k = out.shape[-1]
        return out > torch.logsumexp(out, dim=-1, keepdim=True) - math.log(k)
    return out > 0
