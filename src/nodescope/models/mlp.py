"""A stack of E independent MLPs held in one set of tensors.

Layer l of member e maps h (B, fan_in) to h @ W[e] + b[e] with W of shape
(E, fan_in, fan_out), so one batched matmul trains every member of a group.
Each member's initial weights come from its own seed, drawn on the CPU in a fixed
order, so they are the same whether the member trains alone or stacked, on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..data.seeds import stream_seed
from ..spec.model import Spec
from .member_matmul import member_linear_relu, member_matmul, member_relu_output

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


@dataclass
class Forward:
    out: torch.Tensor  # (E, B, K) output pre-activations (logits)
    preacts: list[torch.Tensor]  # per hidden layer (E, B, H_l): z = h W + b (after batch norm)
    acts: list[torch.Tensor]  # per hidden layer (E, B, H_l): a = rho(z)


def _init_layer(fan_in: int, fan_out: int, scheme: str, bias: bool, gain: float, g):
    """Weights (fan_in, fan_out) and bias (fan_out,) of one member's layer.

    torch_default: W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (nn.Linear's default).
    he:            W ~ N(0, 2/fan_in), b = 0.
    lecun_uniform: W ~ U(-sqrt(3/fan_in), sqrt(3/fan_in)), b = 0.
    `gain` multiplies W only.
    """
    if scheme == "he":
        w = torch.randn(fan_in, fan_out, generator=g) * math.sqrt(2.0 / fan_in)
    else:
        bound = 1 / math.sqrt(fan_in) if scheme == "torch_default" else math.sqrt(3.0 / fan_in)
        w = (torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound
    b = None
    if bias:
        if scheme == "torch_default":
            b = (torch.rand(fan_out, generator=g) * 2 - 1) / math.sqrt(fan_in)
        else:
            b = torch.zeros(fan_out)
    return w * gain, b


# Layers with at most this many inputs or outputs take one GEMM per member (member_matmul).
THIN = 4


def _shared_input_matmul(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B, F) @ (E, F, H) -> (E, B, H). A broadcast matmul would copy h once per member;
    laying the members' weights side by side makes it one GEMM."""
    E, F, H = w.shape
    out = h @ w.transpose(0, 1).reshape(F, E * H)
    return out.view(h.shape[0], E, H).transpose(0, 1)


class StackedMLP(nn.Module):
    def __init__(self, specs: list[Spec], n_features: int, n_outputs: int):
        super().__init__()
        first = specs[0].model
        self.activation = first.activation
        self.widths = first.hidden_widths()
        self.batch_norm = first.batch_norm
        sizes = [n_features, *self.widths, n_outputs]
        n_layers = len(sizes) - 1
        has_bias = [
            (first.bias == "all" or (first.bias == "first" and i == 0))
            if i < n_layers - 1
            else first.output_bias
            for i in range(n_layers)
        ]
        weights = [[] for _ in range(n_layers)]
        biases = [[] for _ in range(n_layers)]
        for spec in specs:
            g = torch.Generator().manual_seed(stream_seed(spec.training.seed, "init"))
            for i in range(n_layers):
                w, b = _init_layer(
                    sizes[i], sizes[i + 1], spec.model.init, has_bias[i], spec.model.init_gain, g
                )
                weights[i].append(w)
                biases[i].append(b)
        self.weights = nn.ParameterList([nn.Parameter(torch.stack(w)) for w in weights])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.stack(b)[:, None, :]) for b in biases if b[0] is not None]
        )
        self.bias_of = {}
        for i, b in enumerate(biases):
            if b[0] is not None:
                self.bias_of[i] = len(self.bias_of)
        E = len(specs)
        self.frozen: torch.Tensor | None = None  # (E,) bool, set by the trainer's stop rules
        if self.batch_norm:
            self.bn_weight = nn.ParameterList(
                [nn.Parameter(torch.ones(E, 1, h)) for h in self.widths]
            )
            self.bn_bias = nn.ParameterList(
                [nn.Parameter(torch.zeros(E, 1, h)) for h in self.widths]
            )
            for i, h in enumerate(self.widths):
                self.register_buffer(f"bn_mean{i}", torch.zeros(E, 1, h))
                self.register_buffer(f"bn_var{i}", torch.ones(E, 1, h))

    @property
    def n_members(self) -> int:
        return self.weights[0].shape[0]

    def parameter_kinds(self) -> list[tuple[nn.Parameter, str]]:
        """Every parameter with its kind: 'weight', 'bias' or 'batch_norm'."""
        kinds = [(w, "weight") for w in self.weights] + [(b, "bias") for b in self.biases]
        if self.batch_norm:
            kinds += [(p, "batch_norm") for p in [*self.bn_weight, *self.bn_bias]]
        return kinds

    def _linear(self, h: torch.Tensor, i: int) -> torch.Tensor:
        w, b = self.weights[i], self._bias(i)
        if h.dim() == 2 and not torch.is_grad_enabled():
            # evaluation with one input (B, F) shared by every member: a single GEMM
            out = _shared_input_matmul(h, w)
            return out + b if b is not None else out
        if self._per_member(h, i):
            return member_matmul(h, w, b)
        return torch.bmm(h, w) if b is None else torch.baddbmm(b, h, w)

    def _bias(self, i: int) -> torch.Tensor | None:
        return self.biases[self.bias_of[i]] if i in self.bias_of else None

    def _per_member(self, h: torch.Tensor, i: int) -> bool:
        """Whether layer i multiplies one member at a time: training on a shared input, so
        that each member rounds as it would alone, and thin layers, where bmm is several
        times slower than per-member mm. Evaluation on a shared input is one GEMM."""
        shared = h.dim() == 2
        if shared and not torch.is_grad_enabled():
            return False
        return shared or min(self.weights[i].shape[1:]) <= THIN

    def _batch_norm(self, z: torch.Tensor, i: int) -> torch.Tensor:
        mean_buf, var_buf = getattr(self, f"bn_mean{i}"), getattr(self, f"bn_var{i}")
        if self.training:
            mean = z.mean(1, keepdim=True)
            var = z.var(1, unbiased=False, keepdim=True)
            with torch.no_grad():
                n = z.shape[1]
                new_mean = torch.lerp(mean_buf, mean, BN_MOMENTUM)
                new_var = torch.lerp(var_buf, var * n / max(n - 1, 1), BN_MOMENTUM)
                if self.frozen is not None:  # members a stop rule froze keep their statistics
                    keep = self.frozen.view(-1, 1, 1)
                    new_mean = torch.where(keep, mean_buf, new_mean)
                    new_var = torch.where(keep, var_buf, new_var)
                mean_buf.copy_(new_mean)
                var_buf.copy_(new_var)
        else:
            mean, var = mean_buf, var_buf
        return (z - mean) / torch.sqrt(var + BN_EPS) * self.bn_weight[i] + self.bn_bias[i]

    def _rho(self, z: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """The activation of z; a ReLU `in_place` writes over z, whose memory is then
        reused while still in cache (on a (4, 4,096, 320) eval chunk, 0.6 ms against 7 ms
        for a fresh output; docs/benchmarks.md)."""
        if self.activation == "relu":
            return torch.relu_(z) if in_place else torch.relu(z)
        if self.activation == "sigmoid":
            return torch.sigmoid(z)
        return z

    def forward(
        self,
        x: torch.Tensor,
        keep: bool = False,
        grad_acts: bool = False,
        acts: bool = False,
        last_grad: Callable[[int, torch.Tensor], None] | None = None,
    ) -> Forward:
        """x: (B, F) shared by all members, or (E, B, F). `keep` returns z and a per layer,
        `acts` a alone (a ReLU then writes over its z); `grad_acts` makes the activations
        differentiable leaves of the output. `last_grad(e, grad)` is called in the backward
        pass with member e's ∂L/∂a of the last hidden layer, (B, H); it must not keep
        `grad`, which may be a reused buffer."""
        h = x
        preacts, activations = [], []
        last = len(self.widths) - 1
        for i in range(len(self.widths)):
            if self.activation == "relu" and not self.batch_norm and self._per_member(h, i):
                if i == last and not (keep or acts or grad_acts) and self._thin_output():
                    out = member_relu_output(
                        h,
                        self.weights[i],
                        self._bias(i),
                        self.weights[-1],
                        self._bias(i + 1),
                        last_grad,
                    )
                    return Forward(out, [], [])
                out = member_linear_relu(h, self.weights[i], self._bias(i), keep)
                z, h = out if keep else (None, out)
            else:
                z = self._linear(h, i)
                if self.batch_norm:
                    z = self._batch_norm(z, i)
                h = self._rho(z, in_place=not keep)
            if grad_acts and not h.requires_grad:
                h.requires_grad_(True)
            if keep:
                preacts.append(z)
            if keep or acts:
                activations.append(h)
        if last_grad is not None and h.requires_grad:
            h.register_hook(partial(_each_member, last_grad))
        return Forward(self._linear(h, len(self.widths)), preacts, activations)

    def _thin_output(self) -> bool:
        """Whether the output layer multiplies one member at a time in training."""
        return min(self.weights[-1].shape[1:]) <= THIN


def _each_member(call: Callable[[int, torch.Tensor], None], grad: torch.Tensor) -> None:
    for e in range(grad.shape[0]):
        call(e, grad[e])
