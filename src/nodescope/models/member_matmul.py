"""One GEMM per member, written into stacked outputs, with its own backward.

z[e] = x_e @ w[e] (+ b[e]) for x shared (B, F) or per member (E, B, F), w (E, F, H).
Autograd over `torch.stack([x @ w_e for w_e in w.unbind(0)])` would copy every output
into the stack and, in the backward pass, scatter every member's weight gradient into a
zero-filled (E, F, H) tensor; here each GEMM writes its own slice (`out=`). For thin
layers (a single output node, as in the winner-take-most networks) torch's CPU `bmm` is
3.5-10x slower than one `mm` per member (docs/benchmarks.md), so the
stacked model uses this for them too. Each member's GEMMs are the ones it would run
alone, so a member's numbers do not depend on what it is stacked with.
"""

from __future__ import annotations

import torch


def _gemm_into(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b, e: int) -> None:
    """out = x_e @ w[e] (+ b[e]) for member e; x shared (B, F) or per member (E, B, F)."""
    x_e = x if x.dim() == 2 else x[e]
    if b is None:
        torch.mm(x_e, w[e], out=out)
    else:
        torch.addmm(b[e], x_e, w[e], out=out)


class MemberMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        out = x.new_empty(w.shape[0], x.shape[-2], w.shape[2])
        for e in range(w.shape[0]):
            _gemm_into(out[e], x, w, b, e)
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        shared = x.dim() == 2
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if shared:
                grad_x = sum(grad[e] @ w[e].T for e in range(w.shape[0]))
            else:
                grad_x = torch.empty_like(x)
                for e in range(w.shape[0]):
                    torch.mm(grad[e], w[e].T, out=grad_x[e])
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(w)
            for e in range(w.shape[0]):
                torch.mm((x if shared else x[e]).T, grad[e], out=grad_w[e])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(1, keepdim=True)
        return grad_x, grad_w, grad_b


def member_matmul(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None):
    """(B, F) or (E, B, F) inputs, (E, F, H) weights, optional (E, 1, H) bias -> (E, B, H)."""
    return MemberMatmul.apply(x, w, b)


class _LinearGrads:
    """The gradients of x, w and b for z[e] = x_e @ w[e] (+ b[e]), filled one member at a
    time from that member's ∂L/∂z."""

    def __init__(self, x, w, has_bias: bool, needs):
        need_x, need_w, need_b = needs
        self.x, self.w, self.shared = x, w, x.dim() == 2
        self.grad_x = self.grad_w = self.grad_b = None
        if need_x:
            self.grad_x = torch.zeros_like(x) if self.shared else torch.empty_like(x)
        if need_w:
            self.grad_w = torch.empty_like(w)
        if need_b and has_bias:
            self.grad_b = w.new_empty(w.shape[0], 1, w.shape[2])

    def add_member(self, e: int, g: torch.Tensor) -> None:
        x_e = self.x if self.shared else self.x[e]
        if self.grad_w is not None:
            torch.mm(x_e.T, g, out=self.grad_w[e])
        if self.grad_b is not None:
            torch.sum(g, 0, keepdim=True, out=self.grad_b[e])
        if self.grad_x is not None and self.shared:
            self.grad_x.addmm_(g, self.w[e].T)
        elif self.grad_x is not None:
            torch.mm(g, self.w[e].T, out=self.grad_x[e])

    def result(self):
        return self.grad_x, self.grad_w, self.grad_b


class MemberLinearReLU(torch.autograd.Function):
    """h[e] = relu(x_e @ w[e] + b[e]), each member's ReLU (and, backward, its mask and
    GEMMs) run right after its own GEMM, while its output is still in cache: on a stack
    of 9 × 5,000 × 1,000 activations, ReLU over the whole stack took 1.4x and its
    backward 2.2x the time of the same work one member at a time (torch profiler, CPU).
    With `keep`, z is returned too."""

    @staticmethod
    def forward(ctx, x, w, b, keep: bool):
        h = x.new_empty(w.shape[0], x.shape[-2], w.shape[2])
        z = torch.empty_like(h) if keep else h
        for e in range(w.shape[0]):
            _gemm_into(z[e], x, w, b, e)
            torch.clamp_min(z[e], 0, out=h[e])  # torch.relu is clamp_min(z, 0)
        ctx.save_for_backward(x, w, h)
        ctx.has_bias, ctx.keep = b is not None, keep
        ctx.set_materialize_grads(False)
        return (z, h) if keep else h

    @staticmethod
    def backward(ctx, *upstream):
        x, w, h = ctx.saved_tensors
        grad_z, grad_h = upstream if ctx.keep else (None, upstream[0])
        if grad_h is None and grad_z is None:
            return None, None, None, None
        grads = _LinearGrads(x, w, ctx.has_bias, ctx.needs_input_grad[:3])
        g = h.new_empty(h.shape[1:])
        for e in range(w.shape[0]):
            if grad_h is not None:  # ReluBackward's threshold_backward(grad, result, 0)
                torch.ops.aten.threshold_backward.grad_input(grad_h[e], h[e], 0, grad_input=g)
            else:
                g.zero_()
            if grad_z is not None:
                g += grad_z[e]
            grads.add_member(e, g)
        return *grads.result(), None


def member_linear_relu(x, w, b=None, keep: bool = False):
    """relu(member_matmul(x, w, b)) per member; (z, h) with `keep`, else h."""
    return MemberLinearReLU.apply(x, w, b, keep)


class MemberReLUOutput(torch.autograd.Function):
    """y[e] = relu(x_e @ w[e] + b[e]) @ v[e] + c[e]: the last hidden ReLU layer and a thin
    output layer, one member at a time. In the backward pass each member's ∂L/∂a (B, H) is
    computed into one reused buffer, handed to `on_grad(e, grad)` if given (a scratch
    buffer: read it, do not keep it), then masked by the ReLU while still in cache. As two
    Functions the output layer wrote the whole (E, B, H) ∂L/∂a into fresh memory for the
    ReLU layer to read back member by member: 145 ms of a full-batch step of 9 × 5,000 ×
    1,000 (torch profiler, CPU; docs/benchmarks.md). The GEMMs are those of
    `member_linear_relu` followed by `member_matmul`, so the numbers are the same."""

    @staticmethod
    def forward(ctx, x, w, b, v, c, on_grad):
        E, B = w.shape[0], x.shape[-2]
        h = x.new_empty(E, B, w.shape[2])
        y = x.new_empty(E, B, v.shape[2])
        for e in range(E):
            _gemm_into(h[e], x, w, b, e)
            torch.clamp_min(h[e], 0, out=h[e])
            _gemm_into(y[e], h, v, c, e)
        ctx.save_for_backward(x, w, v, h)
        ctx.has_b, ctx.has_c, ctx.on_grad = b is not None, c is not None, on_grad
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, w, v, h = ctx.saved_tensors
        grads = _LinearGrads(x, w, ctx.has_b, ctx.needs_input_grad[:3])
        need_v, need_c = ctx.needs_input_grad[3:5]
        grad_v = torch.empty_like(v) if need_v else None
        grad_c = grad_y.sum(1, keepdim=True) if need_c and ctx.has_c else None
        g = h.new_empty(h.shape[1:])
        for e in range(w.shape[0]):
            if grad_v is not None:
                torch.mm(h[e].T, grad_y[e], out=grad_v[e])
            torch.mm(grad_y[e], v[e].T, out=g)  # ∂L/∂a of member e
            if ctx.on_grad is not None:
                ctx.on_grad(e, g)
            torch.ops.aten.threshold_backward.grad_input(g, h[e], 0, grad_input=g)
            grads.add_member(e, g)
        return *grads.result(), grad_v, grad_c, None


def member_relu_output(x, w, b, v, c, on_grad=None):
    """relu(x_e @ w[e] + b[e]) @ v[e] + c[e] per member, (E, B, O); `on_grad(e, ∂L/∂a)`
    is called for each member in the backward pass."""
    return MemberReLUOutput.apply(x, w, b, v, c, on_grad)
