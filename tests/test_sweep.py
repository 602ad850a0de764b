from __future__ import annotations

import pytest

from nodescope.errors import UserError
from nodescope.spec import checkpoint_steps, expand, plan
from nodescope.spec.load import validate_dict
from nodescope.spec.size import training_bytes_per_member


def spec_of(d):
    return validate_dict(d, "test")


def test_grid_product_in_spec_order(tiny):
    tiny["sweep"] = {"seed": [0, 1], "model.width": [8, 16, 32]}
    members = expand(spec_of(tiny))
    assert [(m.coords["seed"], m.coords["width"]) for m in members] == [
        (0, 8),
        (0, 16),
        (0, 32),
        (1, 8),
        (1, 16),
        (1, 32),
    ]
    assert [m.spec.model.width for m in members] == [8, 16, 32] * 2
    assert [m.spec.training.seed for m in members] == [0, 0, 0, 1, 1, 1]


def test_seed_dimension_always_present(tiny):
    tiny["training"]["seed"] = 7
    members = expand(spec_of(tiny))
    assert [m.coords for m in members] == [{"seed": 7}]


def test_zip_pairs_axes(tiny):
    tiny["sweep"] = {
        "model.depth": [1, 2],
        "model.width": [8, 16],
        "seed": [0, 1],
        "zip": [["model.depth", "model.width"]],
    }
    members = expand(spec_of(tiny))
    assert [(m.spec.model.depth, m.spec.model.width, m.spec.training.seed) for m in members] == [
        (1, 8, 0),
        (1, 8, 1),
        (2, 16, 0),
        (2, 16, 1),
    ]


def test_zip_of_unequal_lengths_is_a_user_error(tiny):
    tiny["sweep"] = {
        "model.depth": [1, 2],
        "model.width": [8],
        "zip": [["model.depth", "model.width"]],
    }
    with pytest.raises(UserError, match="different lengths"):
        expand(spec_of(tiny))


def test_misspelt_sweep_path_suggests_fix(tiny):
    tiny["sweep"] = {"model.widht": [8, 16]}
    with pytest.raises(UserError, match="did you mean 'width'"):
        expand(spec_of(tiny))


def test_invalid_sweep_value_names_the_member(tiny):
    tiny["sweep"] = {"model.width": [8, -1]}
    with pytest.raises(UserError, match=r"sweep member \(width=-1, seed=0\): model.width"):
        expand(spec_of(tiny))


def test_grouping_by_shapes(tiny):
    tiny["sweep"] = {
        "seed": [0, 1],
        "optimiser.lr": [0.1, 0.01],
        "model.width": [8, 16],
        "data.sigma": [0.2, 0.4],
    }
    groups = plan(spec_of(tiny))
    assert len(groups) == 2  # width changes shapes; seed, lr and sigma do not
    assert all(len(g.members) == 8 for g in groups)
    assert {g.spec.model.width for g in groups} == {8, 16}
    assert len({g.hash for g in groups}) == 2


def test_batch_size_and_depth_split_groups(tiny):
    tiny["sweep"] = {"training.batch_size": [16, 32], "model.depth": [1, 2]}
    assert len(plan(spec_of(tiny))) == 4


def test_max_group_size_splits_groups(tiny):
    tiny["sweep"] = {"seed": [0, 1, 2, 3, 4]}
    tiny["device"] = {"max_group_size": 2}
    assert [len(g.members) for g in plan(spec_of(tiny))] == [2, 2, 1]


def test_training_memory_estimate_by_hand(tiny):
    spec = validate_dict(tiny, "t")
    # 690 parameters (40*16 + 16 first-layer biases + 16*2 + 2) x 4 copies under Adam,
    # 32 x (16 + 2) x 3 batch activations, 360 x 18 x 2 eval activations (all splits fit
    # one chunk), float32; probes: (8 finals + 30 curves + 160 fractions) float64 values
    expected = (690 * 4 + 32 * 18 * 3 + 360 * 18 * 2) * 4 + (8 + 30 + 160) * 8
    assert training_bytes_per_member(spec) == expected == 71376
    tiny["training"]["dtype"] = "float64"
    tiny["training"]["early_stopping"] = {"patience": 2}
    assert training_bytes_per_member(validate_dict(tiny, "t")) == (
        (690 * 5 + 32 * 18 * 3 + 360 * 18 * 2) * 8 + (8 + 30 + 160 + 2) * 8
    )


def test_memory_budget_splits_groups_into_member_chunks(tiny):
    tiny["sweep"] = {"seed": list(range(7))}
    tiny["device"] = {"memory_budget_gb": 3.5 * 71376 / 1e9}
    assert [len(g.members) for g in plan(validate_dict(tiny, "t"))] == [3, 3, 1]
    tiny["device"]["max_group_size"] = 2
    assert [len(g.members) for g in plan(validate_dict(tiny, "t"))] == [2, 2, 2, 1]
    tiny["device"] = {"memory_budget_gb": 1e-9}  # one member alone needs more: groups of 1
    assert [len(g.members) for g in plan(validate_dict(tiny, "t"))] == [1] * 7


def test_plans_beyond_the_size_limits_are_refused_in_one_line(tiny):
    tiny["sweep"] = {"seed": list(range(4))}
    tiny["device"] = {"max_memory_gb": 3.5 * 71376 / 1e9}  # 4 members need 4 x 71376 B
    with pytest.raises(UserError, match=r"group 0 would need about 0.000286 GB to train"):
        plan(validate_dict(tiny, "t"))
    tiny["device"]["memory_budget_gb"] = 2 * 71376 / 1e9  # split into pairs: fits
    assert [len(g.members) for g in plan(validate_dict(tiny, "t"))] == [2, 2]
    tiny["device"] = {"max_result_gb": 1e-6}
    with pytest.raises(UserError, match=r"more than device.max_result_gb = 1e-06; raise it"):
        plan(validate_dict(tiny, "t"))


def test_group_hash_changes_with_any_member_value(tiny):
    tiny["sweep"] = {"seed": [0, 1]}
    h1 = plan(spec_of(tiny))[0].hash
    tiny["sweep"] = {"seed": [0, 2]}
    assert plan(spec_of(tiny))[0].hash != h1


def test_log_spaced_checkpoints_are_deduplicated_steps(tiny):
    # 200 samples / batch 32 -> 7 steps per epoch, 3 epochs -> 21 steps
    tiny["checkpoints"] = {"log": {"start": 0.001, "stop": 3, "num": 10}}
    steps = checkpoint_steps(spec_of(tiny))
    assert steps == sorted(set(steps))
    assert steps[0] == 0 and steps[-1] == 21
    # epochs 10^(-3 + 3.477 i/9): 0.001 0.0024 0.0059 0.014 0.035 0.085 0.21 0.51 1.23 3
    # times 7 steps: 0.007 ... 0.6 1.46 3.54 8.63 21; positive epochs take at least step 1
    assert steps == [0, 1, 4, 9, 21]


def test_every_k_explicit_list_and_first_epoch_steps(tiny):
    tiny["checkpoints"] = {
        "every": 1,
        "at": [0.5, 2.5],
        "first_epoch_every_step": True,
        "initial": False,
    }
    assert checkpoint_steps(spec_of(tiny)) == [1, 2, 3, 4, 5, 6, 7, 14, 18, 21]


def test_full_batch(tiny):
    tiny["training"]["batch_size"] = "full"
    spec = spec_of(tiny)
    assert spec.batch_size() == 200 and spec.steps_per_epoch() == 1


def test_axis_names_never_clash_with_result_names(tiny):
    tiny["sweep"] = {"training.loss": ["mse", "ce"], "data.seed": [0, 1], "seed": [3]}
    members = expand(spec_of(tiny))
    assert list(members[0].coords) == ["training_loss", "data_seed", "seed"]
    assert members[-1].coords == {"training_loss": "ce", "data_seed": 1, "seed": 3}
