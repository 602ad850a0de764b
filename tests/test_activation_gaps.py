"""Activation gaps: weight normalisation, gap quantities and conditions, the probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_specs import tiny_spec_dict
from torch import nn

import nodescope
from nodescope.cli import main
from nodescope.data.prepare import build_group_data
from nodescope.errors import UserError
from nodescope.metrics import PROBES, ProbeContext
from nodescope.metrics import activation_gaps as gaps
from nodescope.models.mlp import StackedMLP
from nodescope.reports.activation_gaps import (
    gap_condition_panel,
    selected_mask,
    selected_members,
    selection_panel,
)
from nodescope.reports.figures import FIGURES
from nodescope.spec import plan
from nodescope.spec.load import validate_dict
from nodescope.spec.toml_io import dump_toml

GAP_MODEL = {"depth": 1, "width": 16, "summary_width": 2, "output_bias": False, "init": "he"}


def stacked(tiny, n_features=6, n_outputs=4, members=3, **model) -> StackedMLP:
    """A random StackedMLP whose nodes have very different in-fan norms."""
    tiny["model"] = model
    tiny["sweep"] = {"seed": list(range(members))}
    specs = [m.spec for m in plan(validate_dict(tiny, "test"))[0].members]
    net = StackedMLP(specs, n_features, n_outputs).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            p.mul_(10 ** torch.empty(p.shape[-1], dtype=p.dtype).uniform_(-1, 1, generator=g))
        for p in net.biases:
            p.abs_()  # keeps most nodes on, so that the outputs are not all zero
    return net


@pytest.mark.parametrize(
    "model",
    [
        {"depth": 1, "width": 5, "bias": "first", "summary_width": 2, "output_bias": False},
        {"depth": 2, "width": [7, 3], "bias": "all", "summary_width": 2, "output_bias": False},
        {"depth": 3, "width": 5, "bias": "first"},
        {"depth": 2, "width": 4, "bias": "none", "summary_width": 2},
        {"depth": 4, "width": [8, 6, 5, 3], "bias": "all", "output_bias": True},
    ],
)
def test_stacked_normalisation_preserves_outputs_and_leaves_unit_norms(tiny, model):
    net = stacked(tiny, **model)
    before = [p.clone() for p in net.parameters()]
    x = torch.randn(50, 6, dtype=torch.float64) * 3
    out = net(x).out
    assert (out != 0).float().mean() > 0.3
    normalised = gaps.normalise_stacked(net)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    new_out = normalised(x).out
    assert ((new_out - out).abs().max() / out.abs().max()) < 1e-5
    for norms in gaps.in_fan_norms(normalised):
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-12)
    assert not all(torch.allclose(n, torch.ones_like(n)) for n in gaps.in_fan_norms(net))
    assert gaps.normalise_stacked(net, inplace=True) is net
    torch.testing.assert_close(net(x).out, new_out)


def sequential(bias_after_first: bool) -> nn.Sequential:
    g = torch.Generator().manual_seed(2)
    layers = [
        nn.Linear(6, 9),
        nn.ReLU(),
        nn.Sequential(nn.Linear(9, 5, bias=bias_after_first), nn.ReLU(), nn.Dropout(0.5)),
        nn.Linear(5, 2, bias=bias_after_first),
        nn.ReLU(),
        nn.Linear(2, 4, bias=False),
    ]
    net = nn.Sequential(*layers).double().eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            if name.endswith("bias"):
                p.abs_()  # keeps most nodes on, so that the outputs are not all zero
            scale = 10 ** torch.empty(p.shape[0], dtype=p.dtype).uniform_(-1, 1, generator=g)
            p.mul_(scale.view(-1, *[1] * (p.dim() - 1)))
    return net


@pytest.mark.parametrize("bias_after_first", [False, True])
def test_sequential_normalisation_preserves_outputs_and_leaves_unit_norms(bias_after_first):
    net = sequential(bias_after_first)
    x = torch.rand(40, 6, dtype=torch.float64) * 3
    out = net(x)
    assert (out != 0).float().mean() > 0.5
    normalised = gaps.normalise_sequential(net)
    assert ((normalised(x) - out).abs().max() / out.abs().max()) < 1e-5
    linears = [m for m in normalised.modules() if isinstance(m, nn.Linear)]
    for layer in linears[:-1]:
        squares = (layer.weight**2).sum(1)
        if layer.bias is not None:
            squares = squares + layer.bias**2
        torch.testing.assert_close(squares.sqrt(), torch.ones_like(squares), rtol=0, atol=1e-12)
    assert not torch.allclose((linears[-1].weight ** 2).sum(1), torch.ones(4, dtype=out.dtype))
    torch.testing.assert_close(net(x), out)  # the original is left alone


def test_sequential_and_stacked_normalisation_agree(tiny):
    net = stacked(tiny, members=1, depth=2, width=[5, 2], bias="first", output_bias=False)
    layers = []
    for i, w in enumerate(net.weights):
        linear = nn.Linear(*w.shape[1:], bias=i in net.bias_of).double()
        with torch.no_grad():
            linear.weight.copy_(w[0].T)
            if i in net.bias_of:
                linear.bias.copy_(net.biases[net.bias_of[i]][0, 0])
        layers += [linear, nn.ReLU()]
    seq = gaps.normalise_sequential(nn.Sequential(*layers[:-1]))
    ref = gaps.normalise_stacked(net)
    for linear, w in zip((m for m in seq if isinstance(m, nn.Linear)), ref.weights, strict=True):
        torch.testing.assert_close(linear.weight.T, w[0].detach())


def test_normalisation_refuses_batch_norm_and_non_homogeneous_maps(tiny):
    with pytest.raises(UserError, match="fold the batch norm"):
        gaps.normalise_stacked(stacked(tiny, depth=1, width=4, batch_norm=True))
    with pytest.raises(UserError, match="fold the batch norm"):
        gaps.normalise_sequential(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU()))
    with pytest.raises(UserError, match="not Sigmoid"):
        gaps.normalise_sequential(nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)))
    with pytest.raises(UserError, match="relu or linear"):
        gaps.normalise_stacked(stacked(tiny, depth=1, width=4, activation="sigmoid"))


# Summary activations (j, k) of six samples and output weights w (2 nodes x 3 classes).
# Outputs a·w: s0 (14, 3, 12) -> 0, s1 (0, 18, 16) -> 1, s2 (9, 9, 14) -> 2,
# s4 (18, 18, 28) -> 2; s5 (labelled 1) and s6 (labelled 1) are misclassified.
ACTS = torch.tensor([[5, 1], [2, 6], [4, 3], [9, 9], [8, 6], [5, 1], [4, 2]], dtype=torch.float64)
LABELS = torch.tensor([0, 1, 2, 2, 2, 1, 1])
W = torch.tensor([[3, 0, 2], [-1, 3, 2]], dtype=torch.float64)
# first, second, α (j, k), φ (j, k: φ_kcc′), pair_separated, eq15, eq16, ratio_form
HAND = [
    (0, 1, (3, -5), (3, -4), True, True, True, True),  # α_j α_k < 0: Eq. 17
    (0, 2, (1, -2), (1, -3), True, True, True, True),
    (1, 2, (-2, 3), (-2, 1), True, True, True, True),
    (0, 4, (-3, -5), (1, -3), True, True, True, True),  # Eq. 18, φ_j α_k < 0: ratio smaller
    (0, 5, (0, 0), (3, -4), False, True, False, False),  # s5 misclassified, zero gaps
    (0, 6, (1, -1), (3, -4), False, True, True, True),  # Eqs. 15-16 hold, s6 on the wrong side
    (5, 2, (1, -2), (-2, 1), False, True, False, False),  # s5 (class 1) vs s2 (class 2)
]


def test_hand_built_gaps_and_conditions():
    first = torch.tensor([h[0] for h in HAND])
    second = torch.tensor([h[1] for h in HAND])
    alpha = gaps.activation_gaps(ACTS, first, second)
    phi = gaps.weight_gaps(W, LABELS[first], LABELS[second])
    torch.testing.assert_close(alpha, torch.tensor([h[2] for h in HAND], dtype=torch.float64))
    torch.testing.assert_close(phi, torch.tensor([h[3] for h in HAND], dtype=torch.float64))
    separated = gaps.pair_separated(ACTS[first], ACTS[second], phi)
    conditions = gaps.gap_conditions(alpha, phi)
    assert separated.tolist() == [h[4] for h in HAND]
    for i, name in enumerate(("eq15", "eq16", "ratio_form"), start=5):
        assert conditions[name].tolist() == [h[i] for h in HAND], name
    # ratios of pair (s0, s4): |α_j/α_k| = 3/5 < |φ_kc′c/φ_jcc′| = 3/1
    assert gaps.activation_ratio(alpha)[3] == pytest.approx(0.6)
    assert gaps.weight_ratio(phi)[3] == pytest.approx(3.0)
    correct = gaps.strictly_correct(ACTS @ W, LABELS)
    assert correct.tolist() == [True, True, True, True, True, False, False]


def test_pair_separated_refuses_ties():
    # a·φ = 0: the sample scores c and c′ equally, so Eqs. 9-10 (strict) do not hold
    phi = torch.tensor([[3.0, -4.0], [3.0, -4.0], [1.0, -1.0]])
    first = torch.tensor([[5.0, 1.0], [4.0, 3.0], [5.0, 1.0]])  # 11, 0, 4
    second = torch.tensor([[2.0, 6.0], [2.0, 6.0], [1.0, 1.0]])  # -18, -18, 0
    assert gaps.pair_separated(first, second, phi).tolist() == [True, False, False]


def test_strictly_correct_refuses_ties():
    out = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, 2.0, 1.0]])
    assert gaps.strictly_correct(out, torch.tensor([0, 1, 1])).tolist() == [False, False, True]


def test_ratio_form_equals_eq15_and_eq16():
    g = torch.Generator().manual_seed(3)
    alpha = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    phi = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    alpha[:500, 0] = 0  # zero gaps: both samples off at a node
    alpha[400:900, 1] = 0
    c = gaps.gap_conditions(alpha, phi)
    assert torch.equal(c["ratio_form"], c["eq15"] & c["eq16"])
    assert 0.1 < c["ratio_form"].double().mean() < 0.9


def hand_network(tiny) -> StackedMLP:
    """2 inputs -> 2 ReLU (bias) -> 2 summary ReLU -> 3 outputs, with integer in-fan norms:
    functional nodes (3, 0 | 4) and (0, 6 | 8): norms 5 and 10; the summary nodes' in-fans
    after passing those norms on: j (0.6·5, 0.4·10) = (3, 4), norm 5; k (1.6·5, −0.6·10)
    = (8, −6), norm 10."""
    tiny["model"] = {"depth": 1, "width": 2, "bias": "first", "summary_width": 2}
    tiny["model"]["output_bias"] = False
    net = StackedMLP([validate_dict(tiny, "hand")], 2, 3).double()
    with torch.no_grad():
        net.weights[0].copy_(torch.tensor([[[3.0, 0.0], [0.0, 6.0]]]))
        net.biases[0].copy_(torch.tensor([[[4.0, 8.0]]]))
        net.weights[1].copy_(torch.tensor([[[0.6, 1.6], [0.4, -0.6]]]))
        net.weights[2].copy_(torch.tensor([[[3.0, 0.0, 2.0], [-1.0, 3.0, 2.0]]]))
    return net


def test_hand_built_network_gaps_before_and_after_normalisation(tiny):
    net = hand_network(tiny)
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    h = torch.tensor([[4.0, 8.0], [7.0, 8.0], [4.0, 14.0]], dtype=torch.float64)
    a = torch.stack([0.6 * h[:, 0] + 0.4 * h[:, 1], 1.6 * h[:, 0] - 0.6 * h[:, 1]], 1).relu()
    normalised = gaps.normalise_stacked(net)
    torch.testing.assert_close(net(x, keep=True).acts[-1][0], a)
    torch.testing.assert_close(normalised(x, keep=True).acts[-1][0], a / torch.tensor([5, 10]))
    w = normalised.weights[-1][0].detach()
    torch.testing.assert_close(w, net.weights[-1][0].detach() * torch.tensor([[5.0], [10.0]]))
    first, second = torch.tensor([0, 1]), torch.tensor([2, 2])
    label, other = torch.tensor([0, 1]), torch.tensor([2, 2])
    alpha = gaps.activation_gaps(a, first, second)
    alpha_norm = gaps.activation_gaps(normalised(x, keep=True).acts[-1][0], first, second)
    torch.testing.assert_close(alpha_norm, alpha / torch.tensor([5.0, 10.0]))
    torch.testing.assert_close(
        alpha_norm, torch.tensor([[-0.48, 0.16], [-0.12, 0.64]], dtype=torch.float64)
    )
    phi = gaps.weight_gaps(W, label, other)
    torch.testing.assert_close(
        gaps.weight_gaps(w, label, other), torch.tensor([[5.0, -30.0], [-10.0, 10.0]]).double()
    )
    # the products α·φ and so every condition survive the normalisation
    torch.testing.assert_close(alpha_norm * gaps.weight_gaps(w, label, other), alpha * phi)


def test_pair_sampling_is_bounded_ordered_and_deterministic():
    labels = torch.arange(40) % 4
    correct = torch.ones(40, dtype=torch.bool)
    correct[[3, 9, 22]] = False
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    samples = gaps.pick_samples(correct, order, 10, 2)
    assert len(samples) == 12 and correct[samples[:10]].all() and not correct[samples[10:]].any()
    assert torch.equal(samples, gaps.pick_samples(correct, order, 10, 2))
    first, second = gaps.cross_class_pairs(samples, labels, correct)
    assert len(first) <= gaps.max_pairs(10, 2) == 66
    assert (labels[first] < labels[second]).all()
    both = correct[first] & correct[second]
    n_correct = int(both.sum())
    assert both[:n_correct].all() and not both[n_correct:].any() and n_correct < len(first)
    same_class = sum(int((labels[samples] == c).sum()) ** 2 for c in range(4))
    assert len(first) == (12 * 12 - same_class) // 2
    assert len(gaps.pick_samples(correct, order, 100, 100)) == 40


# ----------------------------------------------------------------------------- the probe

THREE_CLASSES = {
    "data.n_classes": 3,
    "data.n_patterns": 6,
    "data.n_dim": 60,
    "data.train_size": 600,
    "data.val_size": 150,
    "data.test_size": 300,
    "data.sigma": 0.7,
}


def gap_spec(tiny, **probe):
    for path, value in THREE_CLASSES.items():
        table, key = path.split(".")
        tiny[table][key] = value
    tiny["model"] = dict(GAP_MODEL)
    tiny["training"].update(epochs=8, early_stopping={"patience": 3})
    tiny["probes"] = {"activation_gaps": {"n_samples": 60, "n_misclassified": 20, **probe}}
    return tiny


def test_probe_matches_direct_gaps_of_the_model(tiny, one_thread):
    spec = validate_dict(gap_spec(tiny, split="val"), "test")
    tiny["sweep"] = {"seed": [0, 1]}
    group = plan(validate_dict(tiny, "test"))[0]
    specs = [m.spec for m in group.members]
    data = build_group_data(specs, torch.device("cpu"))
    model = StackedMLP(specs, 60, 3).eval()
    ctx = ProbeContext(2, 1, model.widths, 3, "relu", "ce", data, specs)
    probe = PROBES["activation_gaps"](spec.probes.activation_gaps, ctx)
    probe.on_end(model)
    out = probe.results()
    x = data.splits["val"].x[0].double()
    double = StackedMLP(specs, 60, 3).double()
    double.load_state_dict(model.state_dict())
    for normalised, net in ((False, double), (True, gaps.normalise_stacked(double))):
        acts = net(x, keep=True).acts[-1].detach()
        for e in range(2):
            s = out["pair_sample"].values[e]
            s2 = out["pair_other_sample"].values[e]
            valid = s >= 0
            expected = acts[e, s[valid]] - acts[e, s2[valid]]
            got = out["activation_gap"].sel(normalised=normalised).values[e, valid]
            np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12)
            w = net.weights[-1][e].detach().numpy()
            c, c2 = out["pair_label"].values[e, valid], out["pair_other_label"].values[e, valid]
            phi = out["weight_gap"].sel(normalised=normalised).values[e, valid]
            np.testing.assert_allclose(phi, (w[:, c] - w[:, c2]).T, rtol=1e-12)
            assert np.isnan(out["activation_gap"].values[e, :, ~valid]).all()
    assert out["activation_gap"].sizes["pair"] == gaps.max_pairs(60, 20)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    spec = gap_spec(tiny_spec_dict())
    spec["sweep"] = {"seed": [0, 1], "optimiser.lr": [0.01, 0.003]}
    path = tmp_path_factory.mktemp("gaps") / "spec.toml"
    path.write_text(dump_toml(spec))
    out = path.parent / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    return nodescope.open(out)


def test_trained_network_meets_conditions_on_correct_pairs_only(trained):
    ds = trained
    both = (ds.pair_sample_correct == 1) & (ds.pair_other_correct == 1)
    with_miss = (ds.pair_sample >= 0) & ~both
    flags = ds.gap_condition
    assert int(both.sum()) > 1000 and int(with_miss.sum()) > 100
    assert (flags.where(both) == 1).sum() == both.sum() * 2 * 4  # every correct pair, always
    missed = flags.where(with_miss) == 0
    assert missed.sel(condition="pair_separated").any("pair").all()  # every member fails some
    assert missed.sel(condition="eq16").any()
    frac = ds.gap_condition_fraction
    assert (frac.sel(pair_kind="correct") == 1).all()
    assert (frac.sel(pair_kind="misclassified", condition="pair_separated") < 1).all()
    # the normalisation changes the gaps but not the conditions nor the products α·φ
    xr_equal = (frac.sel(normalised=True) == frac.sel(normalised=False)).all()
    assert xr_equal
    product = ds.activation_gap * ds.weight_gap
    np.testing.assert_allclose(
        product.sel(normalised=True), product.sel(normalised=False), rtol=1e-9, atol=1e-12
    )
    assert not np.allclose(
        ds.activation_gap.sel(normalised=True).fillna(0),
        ds.activation_gap.sel(normalised=False).fillna(0),
    )
    assert (ds.normalisation_output_change < 1e-12).all()
    counts = ds.gap_pair_count.sel(pair_kind="correct")
    assert (counts == both.sum("pair")).all()


def test_best_validation_error_is_stored(trained):
    ds = trained
    assert (ds.best_val_error >= 0).all() and (ds.best_val_error <= 1).all()
    assert ((ds.best_epoch >= 1) & (ds.best_epoch <= 8)).all()
    np.testing.assert_allclose(
        1 - ds.final_accuracy.sel(split="val"), ds.best_val_error, atol=1e-12
    )


def test_report_selects_the_lowest_validation_error_and_draws_figures(trained, tmp_path):
    ds = trained
    [(where, member)] = selected_members(ds)
    assert where == {} and set(member) == {"seed", "lr"}
    assert float(ds.best_val_error.sel(member)) == float(ds.best_val_error.min())
    mask = selected_mask(ds)
    assert int(mask.sum()) == 1 and bool(mask.sel(member))
    assert selection_panel(ds).row_count == 1
    assert gap_condition_panel(ds).row_count == 4  # 2 pair kinds x before/after
    for name in ("gap_weight_products", "gap_products", "gap_ratios"):
        make, available = FIGURES[name]
        assert available(ds)
        make(ds).savefig(tmp_path / f"{name}.png")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output_bias": True}, "output_bias = false: with an output bias"),
        ({"summary_width": None}, "needs model.summary_width = 2"),
        ({"summary_width": 3}, "needs model.summary_width = 2"),
        ({"activation": "sigmoid"}, "needs activation = 'relu'"),
        ({"batch_norm": True}, "needs batch_norm = false"),
    ],
)
def test_validate_refuses_gap_probe_on_other_models(tiny, change, message):
    spec = gap_spec(tiny)
    spec["model"].update(change)
    with pytest.raises(UserError, match=message) as exc:
        validate_dict(spec, "s.toml")
    assert len(str(exc.value).splitlines()) == 1


def test_validate_cli_prints_one_line_for_an_output_bias(tiny, tmp_path, capsys):
    spec = gap_spec(tiny)
    spec["model"]["output_bias"] = True
    path = tmp_path / "spec.toml"
    path.write_text(dump_toml(spec))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "output_bias = false" in err


def test_plan_shows_the_bounded_size(tiny, tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_text(dump_toml(gap_spec(tiny)))
    assert main(["validate", str(path)]) == 0
    assert f"at most {gaps.max_pairs(60, 20)} sample pairs per member" in capsys.readouterr().out
