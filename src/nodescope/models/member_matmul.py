"""One GEMM per member, written into stacked outputs, with its own backward.

z[e] = x_e @ w[e] (+ b[e]) for x shared (B, F) or per member (E, B, F), w (E, F, H).
Autograd over `torch.stack([x @ w_e for w_e in w.unbind(0)])` would copy every output
into the stack and, in the backward pass, scatter every member's weight gradient into a
zero-filled (E, F, H) tensor; here each GEMM writes its own slice (`out=`). For thin
layers (a single output node, as in the winner-take-most networks) torch's CPU `bmm` is
5-10x slower than one `mm` per member (bench notes in docs/benchmarks.md), so the
stacked model uses this for them too. Each member's GEMMs are the ones it would run
alone, so a member's numbers do not depend on what it is stacked with.
"""

from __future__ import annotations

import torch


class MemberMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        E, _, H = w.shape
        shared = x.dim() == 2
        out = x.new_empty(E, x.shape[-2], H)
        for e in range(E):
            x_e = x if shared else x[e]
            if b is None:
                torch.mm(x_e, w[e], out=out[e])
            else:
                torch.addmm(b[e], x_e, w[e], out=out[e])
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
