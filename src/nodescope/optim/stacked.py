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
        self.base = opt.layca_base if opt.name == "layca" else opt.name
        self.params = params
        like = params[0][0]
        self.lr = _per_member([s.optimiser.lr for s in specs], like)
        self.momentum = _per_member([s.optimiser.momentum for s in specs], like)
        self.beta1 = _per_member([s.optimiser.betas[0] for s in specs], like)
        self.beta2 = _per_member([s.optimiser.betas[1] for s in specs], like)
        self.eps = _per_member([s.optimiser.eps for s in specs], like)
        self.t = torch.zeros_like(self.lr)
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
    def step(self, lr_scale: float = 1.0, active: torch.Tensor | None = None) -> None:
        """One update; `lr_scale` is the schedule's factor, `active` (E,) bool or None."""
        self.t = self.t + 1 if active is None else torch.where(active, self.t + 1, self.t)
        lr = self.lr * lr_scale
        if active is None and self.name == "adam":
            self._adam_step(lr)
            return
        if active is None and self.name == "sgd":
            self._sgd_step(lr)
            return
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

    def _adam_step(self, lr: torch.Tensor) -> None:
        """torch's Adam for every member at once, in place: the same arithmetic in the same
        order as the general loop of `step` (so the same bits), with the per-member bias
        corrections computed once per step instead of once per parameter."""
        t = self.t.clamp(min=1)
        keep1, keep2 = 1 - self.beta1, 1 - self.beta2
        fix1, fix2 = 1 - self.beta1**t, 1 - self.beta2**t
        for (p, _), state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            m, v = state["m"], state["v"]
            m.mul_(_expand(self.beta1, p)).add_(_expand(keep1, p) * g)
            v.mul_(_expand(self.beta2, p)).add_(_expand(keep2, p) * g * g)
            s = (m / _expand(fix1, p)) / ((v / _expand(fix2, p)).sqrt_().add_(_expand(self.eps, p)))
            p.sub_(_expand(lr, p) * s)

    def _sgd_step(self, lr: torch.Tensor) -> None:
        """SGD with momentum for every member at once, in place; the same bits as the
        general loop of `step`."""
        for (p, _), state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            b = state["b"].mul_(_expand(self.momentum, p)).add_(p.grad)
            p.sub_(_expand(lr, p) * b)


def _masked(keep: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return new if keep is None else torch.where(keep, new, old)


def _layca_update(w: torch.Tensor, s: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    w_norm = _norm(w)
    s = s - (s * w).flatten(1).sum(1).view_as(w_norm) / (w_norm**2) * w
    s_norm = _norm(s)  # the step still carries the learning rate here, as in Keras
    s = torch.where(s_norm > LAYCA_MIN_STEP_NORM, s * w_norm / s_norm.clamp_min(1e-30), 0.0)
    new = w - lr * s
    return new * w_norm / _norm(new)
