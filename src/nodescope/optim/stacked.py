"""SGD, Adam and Layca on stacked parameters (leading member dimension E).

Every update is computed per member with that member's hyperparameters, so a stacked
optimiser behaves exactly like one optimiser per member. Members marked inactive (a
stop rule fired) keep their parameters and optimiser state unchanged.
"""

from __future__ import annotations

import torch

from ..spec.model import Spec

LAYCA_MIN_STEP_NORM = 1e-7


def _per_member(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _expand(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (p.dim() - 1)))


def _norm(t: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of each member's slice, shaped to broadcast against t."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


class StackedOptimiser:
    """One optimiser over the parameters of a StackedMLP.

    sgd:   b <- mu b + g;  p <- p - lr b                (torch.optim.SGD, dampening 0)
    adam:  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
           p <- p - lr m_hat / (sqrt(v_hat) + eps),  m_hat = m/(1-b1^t), v_hat = v/(1-b2^t)
    layca: as the authors' Keras layca_optimizers.py, per layer and member:
           the base step s carries the learning rate, as in Keras:
             sgd:  s <- mu s + lr g  (Keras keeps the velocity v = -s = mu v - lr g)
             adam: s = lr_t m / (sqrt(v) + eps),  lr_t = lr sqrt(1-b2^t) / (1-b1^t)
                   (Keras's form; eps is added to sqrt(v), not sqrt(v_hat), and Keras's
                   default eps is 1e-7 where nodescope's is torch's 1e-8);
           s is projected on the orthogonal complement of w:  s <- s - (<s,w>/<w,w>) w,
           set to 0 if ||s|| <= 1e-7, else rescaled to the weight's norm:
           s <- s ||w|| / ||s||;  then w' = w - lr s, and w' is rescaled back to ||w||.
           Biases and batch-norm parameters are not updated. Each step rotates a layer
           by the angle atan(lr). Since the velocity holds the learning rate of the
           steps that built it, a learning-rate change turns the direction gradually,
           as in Keras.
    """

    def __init__(self, params: list[tuple[torch.nn.Parameter, str]], specs: list[Spec]):
        opt = specs[0].optimiser
        self.name = opt.name
        self.base = opt.base
        self.params = params
        like = params[0][0]
        self.lr = _per_member([s.optimiser.lr for s in specs], like)
        self.momentum = _per_member([s.optimiser.momentum for s in specs], like)
        self.beta1 = _per_member([s.optimiser.betas[0] for s in specs], like)
        self.beta2 = _per_member([s.optimiser.betas[1] for s in specs], like)
        self.eps = _per_member([s.optimiser.eps for s in specs], like)
        self.t = torch.zeros_like(self.lr)
        self._unbound: dict[tuple[str, int], tuple[torch.Tensor, ...]] = {}
        self._member_sets: dict[tuple, list[int]] = {}
        for e, s in enumerate(specs):
            o = s.optimiser
            self._member_sets.setdefault((o.lr, o.momentum, *o.betas, o.eps), []).append(e)
        self.state = [
            {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}
            if self.base == "adam"
            else {"b": torch.zeros_like(p)}
            for p, _ in params
        ]

    def zero_grad(self) -> None:
        for p, _ in self.params:
            p.grad = None

    @torch.no_grad()
    def step(
        self,
        lr_scale: float = 1.0,
        active: torch.Tensor | None = None,
        active_members: list[int] | None = None,
    ) -> None:
        """One update; `lr_scale` is the schedule's factor, `active` (E,) bool or None (all
        active). `active_members`, the indices where `active` is true, known on the host,
        lets Adam and SGD use torch's fused kernels on those members alone."""
        self.t = self.t + 1 if active is None else torch.where(active, self.t + 1, self.t)
        if self.name in ("adam", "sgd") and (active is None or active_members is not None):
            # members stop for good, so every active member has taken every step: one t
            self._fused_step(lr_scale, range(len(self.t)) if active is None else active_members)
            return
        lr = self.lr * lr_scale
        for (p, kind), state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            if self.name == "layca" and kind != "weight":
                continue
            keep = None if active is None else _expand(active, p)
            g = p.grad
            layca = self.name == "layca"
            lr_p = _expand(lr, p)
            if self.base == "adam":
                b1, b2 = _expand(self.beta1, p), _expand(self.beta2, p)
                m = _masked(keep, b1 * state["m"] + (1 - b1) * g, state["m"])
                v = _masked(keep, b2 * state["v"] + (1 - b2) * g * g, state["v"])
                state["m"], state["v"] = m, v
                t = _expand(self.t.clamp(min=1), p)
                eps = _expand(self.eps, p)
                if layca:  # Keras: lr_t m / (sqrt(v) + eps)
                    s = lr_p * (1 - b2**t).sqrt() / (1 - b1**t) * m / (v.sqrt() + eps)
                else:  # torch: m_hat / (sqrt(v_hat) + eps), scaled by lr below
                    s = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
            else:
                grad_step = lr_p * g if layca else g  # Keras's velocity holds lr
                b = _masked(keep, _expand(self.momentum, p) * state["b"] + grad_step, state["b"])
                state["b"] = s = b
            new = _layca_update(p, s, lr_p) if layca else p - lr_p * s
            p.copy_(_masked(keep, new, p))

    def load(self, saved: dict) -> None:
        """Continue from `{"t": ..., "state": ...}` as saved by a training state."""
        self.t, self.state = saved["t"], saved["state"]
        self._unbound.clear()

    def _member_slices(self, kind: str, i: int, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The members' views of a parameter or state tensor (updated in place, so the
        views stay valid), made once."""
        key = (kind, i)
        if key not in self._unbound:
            self._unbound[key] = tensor.unbind(0)
        return self._unbound[key]

    def _fused_step(self, lr_scale: float, active_members) -> None:
        """torch's own fused Adam or SGD kernel (`torch.optim.Adam(fused=True)`), once per
        set of members sharing hyperparameters, on each member's own slices: per member
        this is exactly torch's update. Whole stacked tensors would be one call too, but
        the kernel's vector loop and its scalar tail round differently (FMA), so a member's
        bits would then depend on where its slice starts, i.e. on what it is stacked with."""
        at = [i for i, (p, _) in enumerate(self.params) if p.grad is not None]
        ps = [self._member_slices("p", i, self.params[i][0]) for i in at]
        gs = [self.params[i][0].grad.unbind(0) for i in at]  # a new tensor every step
        names = ("m", "v") if self.base == "adam" else ("b",)
        state = {k: [self._member_slices(k, i, self.state[i][k]) for i in at] for k in names}
        active = set(active_members)
        for (lr, momentum, beta1, beta2, eps), same in self._member_sets.items():
            members = [e for e in same if e in active]
            if not members:
                continue

            params, grads = _pick(ps, members), _pick(gs, members)
            if self.base == "adam":
                step = self.t[members[0]].to(torch.float32)  # as torch keeps it for fused
                torch._fused_adam_(
                    params,
                    grads,
                    _pick(state["m"], members),
                    _pick(state["v"], members),
                    [],
                    [step] * len(params),
                    lr=lr * lr_scale,
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=0.0,
                    eps=eps,
                    amsgrad=False,
                    maximize=False,
                )
            else:
                torch._fused_sgd_(
                    params,
                    grads,
                    _pick(state["b"], members) if momentum else [],
                    weight_decay=0.0,
                    momentum=momentum,
                    lr=lr * lr_scale,
                    dampening=0.0,
                    nesterov=False,
                    maximize=False,
                    is_first_step=False,
                )


def _pick(slices: list[tuple[torch.Tensor, ...]], members: list[int]) -> list[torch.Tensor]:
    """The given members' views, tensor by tensor."""
    return [per_member[e] for per_member in slices for e in members]


def _masked(keep: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return new if keep is None else torch.where(keep, new, old)


def _layca_update(w: torch.Tensor, s: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    w_norm = _norm(w)
    s = s - (s * w).flatten(1).sum(1).view_as(w_norm) / (w_norm**2) * w
    s_norm = _norm(s)  # the step still carries the learning rate here, as in Keras
    s = torch.where(s_norm > LAYCA_MIN_STEP_NORM, s * w_norm / s_norm.clamp_min(1e-30), 0.0)
    new = w - lr * s
    return new * w_norm / _norm(new)
