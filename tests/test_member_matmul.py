"""The per-member GEMM and its hand-written backward against autograd's own."""

from __future__ import annotations

import pytest
import torch

from nodescope.models.member_matmul import member_matmul


def gradcheck_inputs(shared: bool, seed: int, E: int, B: int, F: int, H: int):
    """float64 x (shared (B, F) or (E, B, F)), w (E, F, H), b (E, 1, H), all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    shapes = ((B, F) if shared else (E, B, F), (E, F, H), (E, 1, H))
    return [
        torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)
        for shape in shapes
    ]


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_match_finite_differences(shared, bias):
    x, w, b = gradcheck_inputs(shared, 0, E=3, B=5, F=4, H=2)
    assert torch.autograd.gradcheck(member_matmul, (x, w, b if bias else None))


def test_every_member_gets_its_own_gemm_bit_for_bit_and_autograds_gradients():
    g = torch.Generator().manual_seed(1)
    E, B, F, H = 4, 37, 23, 1  # a thin output layer
    x = torch.randn(E, B, F, generator=g, requires_grad=True)
    w = torch.randn(E, F, H, generator=g, requires_grad=True)
    b = torch.randn(E, 1, H, generator=g, requires_grad=True)
    upstream = torch.randn(E, B, H, generator=g)
    out = member_matmul(x, w, b)
    grads = torch.autograd.grad(out, (x, w, b), upstream)
    for e in range(E):
        x_e, w_e, b_e = (t.detach()[e].requires_grad_(True) for t in (x, w, b))
        alone = torch.addmm(b_e, x_e, w_e)
        assert torch.equal(out[e], alone)
        ref = torch.autograd.grad(alone, (x_e, w_e, b_e), upstream[e])
        for got, want in zip(grads, ref, strict=True):
            torch.testing.assert_close(got[e], want, rtol=1e-6, atol=1e-6)
    # a member's weight gradient depends on its own slice only
    w2 = w.detach().clone().requires_grad_(True)
    with torch.no_grad():
        w2[1:] += 1.0
    again = torch.autograd.grad(member_matmul(x, w2, b), w2, upstream)[0]
    assert torch.equal(again[0], grads[1][0])


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("keep", [True, False])
def test_linear_relu_gradients_match_finite_differences(shared, bias, keep):
    from nodescope.models.member_matmul import member_linear_relu

    x, w, b = gradcheck_inputs(shared, 2, E=3, B=6, F=4, H=5)

    def fn(x, w, b):
        out = member_linear_relu(x, w, b if bias else None, keep)
        return (out[0] * 0.5 + out[1]) if keep else out  # gradients reach z and h

    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_linear_relu_equals_relu_of_each_members_gemm_and_its_autograd():
    from nodescope.models.member_matmul import member_linear_relu

    g = torch.Generator().manual_seed(4)
    E, B, F, H = 3, 50, 30, 40
    x = torch.randn(B, F, generator=g)  # shared input, as in full-batch training
    w = torch.randn(E, F, H, generator=g, requires_grad=True)
    b = torch.randn(E, 1, H, generator=g, requires_grad=True)
    upstream = torch.randn(E, B, H, generator=g)
    z, h = member_linear_relu(x, w, b, keep=True)
    grads = torch.autograd.grad(h, (w, b), upstream)
    assert (h == 0).any() and (h > 0).any()
    for e in range(E):
        w_e, b_e = w.detach()[e].requires_grad_(True), b.detach()[e].requires_grad_(True)
        z_e = torch.addmm(b_e, x, w_e)
        h_e = torch.relu(z_e)
        assert torch.equal(z[e], z_e) and torch.equal(h[e], h_e)
        ref = torch.autograd.grad(h_e, (w_e, b_e), upstream[e])
        torch.testing.assert_close(grads[0][e], ref[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grads[1][e], ref[1], rtol=1e-6, atol=1e-6)
    alone = member_linear_relu(x, w.detach(), b.detach())
    assert torch.equal(alone, h)


@pytest.mark.parametrize("grad", [False, True])
def test_stacked_forward_keeps_z_apart_from_the_relu_that_overwrites_it(tiny, grad):
    """keep returns every layer's z and a = relu(z) as one member alone computes them; the
    ReLU writes over z only where z is not returned (eval and training paths alike)."""
    from nodescope.models.mlp import StackedMLP
    from nodescope.spec import plan
    from nodescope.spec.load import validate_dict

    tiny["model"] = {"depth": 3, "width": [12, 9, 7], "bias": "all"}
    tiny["sweep"] = {"seed": [0, 1]}
    group = plan(validate_dict(tiny, "t"))[0]
    model = StackedMLP([m.spec for m in group.members], 40, 4).double()
    x = torch.randn(30, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        kept = model(x, keep=True)
        plain = model(x, acts=True)
    assert len(kept.preacts) == 3 and plain.preacts == []
    for e in range(2):
        h = x
        for i, (z, a) in enumerate(zip(kept.preacts, kept.acts, strict=True)):
            z_e = h @ model.weights[i][e].detach() + model._bias(i)[e].detach()
            torch.testing.assert_close(z[e], z_e, rtol=1e-12, atol=1e-12)
            assert (z[e] < 0).any() and (z[e] > 0).any()
            assert torch.equal(a[e], torch.relu(z[e]))
            assert torch.equal(plain.acts[i][e], a[e])
            h = a[e]
    assert torch.equal(plain.out, kept.out)


def _fold_inputs(shared: bool, bias: bool, out_bias: bool, seed: int, outputs: int = 1):
    g = torch.Generator().manual_seed(seed)
    E, B, F, H = 3, 11, 5, 7
    x = torch.randn(*((B, F) if shared else (E, B, F)), generator=g).requires_grad_(True)
    w = torch.randn(E, F, H, generator=g).requires_grad_(True)
    b = torch.randn(E, 1, H, generator=g).requires_grad_(True) if bias else None
    v = torch.randn(E, H, outputs, generator=g).requires_grad_(True)
    c = torch.randn(E, 1, outputs, generator=g).requires_grad_(True) if out_bias else None
    upstream = torch.randn(E, B, outputs, generator=g)
    return x, w, b, v, c, upstream


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("out_bias", [True, False])
@pytest.mark.parametrize("outputs", [1, 3])
def test_relu_output_fold_equals_the_two_layers_bit_for_bit(shared, bias, out_bias, outputs):
    """Outputs, every gradient and each member's dL/da (before the ReLU's mask) are those
    of member_linear_relu followed by member_matmul, with a hook on the activations."""
    from nodescope.models.member_matmul import member_linear_relu, member_relu_output

    x, w, b, v, c, upstream = _fold_inputs(shared, bias, out_bias, seed=4, outputs=outputs)
    inputs = [t for t in (x, w, b, v, c) if t is not None]
    seen = []
    folded = member_relu_output(x, w, b, v, c, lambda e, g: seen.append((e, g.clone())))
    got = torch.autograd.grad(folded, inputs, upstream)

    h = member_linear_relu(x, w, b)
    hooked = []
    h.register_hook(hooked.append)
    two_layers = member_matmul(h, v, c)
    want = torch.autograd.grad(two_layers, inputs, upstream)

    assert torch.equal(folded, two_layers)
    for a, b_ in zip(got, want, strict=True):
        assert torch.equal(a, b_)
    assert [e for e, _ in seen] == [0, 1, 2]
    (dl_da,) = hooked
    assert (h == 0).any() and (dl_da[h == 0] != 0).any()  # the mask would show
    for e, g in seen:
        assert torch.equal(g, dl_da[e])


def test_relu_output_fold_gradients_match_finite_differences():
    from nodescope.models.member_matmul import member_relu_output

    g = torch.Generator().manual_seed(5)
    E, B, F, H = 2, 6, 4, 5
    x, w, b, v, c = (
        torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True)
        for s in ((B, F), (E, F, H), (E, 1, H), (E, H, 1), (E, 1, 1))
    )
    assert torch.autograd.gradcheck(lambda *t: member_relu_output(*t), (x, w, b, v, c))


def test_model_folds_a_thin_output_in_training_only_and_feeds_each_members_dl_da():
    """StackedMLP takes the fold where the last ReLU layer and a thin output both multiply
    one member at a time with gradients on; `last_grad` then sees every member's dL/da, as
    it does through the hook of the unfolded path (a wide output, or acts requested)."""
    from tiny_specs import tiny_spec_dict

    from nodescope.models.mlp import StackedMLP
    from nodescope.spec import plan
    from nodescope.spec.load import validate_dict

    d = tiny_spec_dict()
    d["model"] = {"depth": 1, "width": 6}
    d["sweep"] = {"seed": [0, 1]}
    specs = [m.spec for m in plan(validate_dict(d, "t"))[0].members]
    thin = StackedMLP(specs, 9, 1)
    x = torch.randn(13, 9, generator=torch.Generator().manual_seed(0))
    calls = []
    out = thin(x, last_grad=lambda e, g: calls.append((e, g.clone()))).out
    assert type(out.grad_fn).__name__ == "MemberReLUOutputBackward"
    out.sum().backward()
    unfolded = thin(x, acts=True)
    assert type(unfolded.out.grad_fn).__name__ != "MemberReLUOutputBackward"
    (want,) = torch.autograd.grad(unfolded.out.sum(), unfolded.acts[-1])
    assert [e for e, _ in calls] == [0, 1]
    for e, g in calls:
        assert torch.equal(g, want[e])
    with torch.no_grad():
        assert type(thin(x).out.grad_fn).__name__ == "NoneType"

    wide = StackedMLP(specs, 9, 10)
    calls.clear()
    fwd = wide(x, acts=True, last_grad=lambda e, g: calls.append((e, g.clone())))
    (want,) = torch.autograd.grad(fwd.out.sum(), fwd.acts[-1])
    assert [e for e, _ in calls] == [0, 1]
    for e, g in calls:
        assert torch.equal(g, want[e])
