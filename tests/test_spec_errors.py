from __future__ import annotations

import pytest

from nodescope.errors import UserError
from nodescope.spec import load_spec
from nodescope.spec.load import parse_overrides, validate_dict


def write(tmp_path, text: str):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_toml_syntax_error_names_line_and_column(tmp_path):
    path = write(tmp_path, '[experiment]\nname = "x"\n[data]\nname = \n')
    with pytest.raises(UserError) as exc:
        load_spec(path)
    msg = str(exc.value)
    assert "TOML syntax error" in msg and "line 4" in msg and "column" in msg
    assert len(msg.splitlines()) == 1


def test_unknown_key_suggests_closest_name(tiny):
    tiny["model"]["widht"] = 80
    with pytest.raises(UserError) as exc:
        validate_dict(tiny, "s.toml")
    assert str(exc.value) == "s.toml: model.widht: unknown key; did you mean 'width'?"


def test_unknown_table_suggests_closest_table(tiny):
    tiny["optimizer"] = {"lr": 0.1}
    with pytest.raises(UserError, match="optimizer: unknown key; did you mean 'optimiser'"):
        validate_dict(tiny, "s.toml")


def test_out_of_range_value_names_path_range_and_value(tiny):
    tiny["training"]["epochs"] = -3
    with pytest.raises(UserError) as exc:
        validate_dict(tiny, "s.toml")
    assert str(exc.value) == "s.toml: training.epochs: Input should be greater than 0 (got -3)"


def test_wrong_choice_lists_allowed_values(tiny):
    tiny["model"]["activation"] = "tanh"
    with pytest.raises(UserError) as exc:
        validate_dict(tiny, "s.toml")
    assert "model.activation" in str(exc.value)
    assert "'relu', 'sigmoid' or 'linear'" in str(exc.value)


def test_union_field_reports_once(tiny):
    tiny["model"]["width"] = "wide"
    with pytest.raises(UserError) as exc:
        validate_dict(tiny, "s.toml")
    assert len(str(exc.value).splitlines()) == 1
    assert str(exc.value).startswith("s.toml: model.width:")


def test_every_error_gets_its_own_line(tiny):
    tiny["model"]["widht"] = 1
    tiny["training"]["epochs"] = 0
    with pytest.raises(UserError) as exc:
        validate_dict(tiny, "s.toml")
    assert len(str(exc.value).splitlines()) == 2


def test_missing_required_table(tiny):
    del tiny["data"]
    with pytest.raises(UserError, match="data: required but missing"):
        validate_dict(tiny, "s.toml")


def test_cross_field_rule_is_one_clear_line(tiny):
    tiny["training"]["loss"] = "bce"
    tiny["data"]["n_classes"] = 4
    with pytest.raises(UserError) as exc:
        validate_dict(tiny, "s.toml")
    assert "loss 'bce' needs 2 classes" in str(exc.value)
    assert "Value error" not in str(exc.value)


def test_overrides_parse_toml_values():
    assert parse_overrides(
        [
            "model.width=80",
            "optimiser.lr=1e-3",
            "model.activation=relu",
            "model.width=[20, 80]",
            "training.batch_size=full",
        ]
    ) == [
        ("model.width", 80),
        ("optimiser.lr", 1e-3),
        ("model.activation", "relu"),
        ("model.width", [20, 80]),
        ("training.batch_size", "full"),
    ]


def test_override_without_equals_is_a_user_error():
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        parse_overrides(["model.width"])


def test_set_override_applies_before_validation(tmp_path):
    path = write(tmp_path, '[experiment]\nname = "x"\n[data]\nname = "mnist"\n')
    spec, _ = load_spec(path, ["model.width=80", "data.val_size=0"])
    assert spec.model.width == 80 and spec.data.sizes() == (60000, 0, 10000)


def test_idx_sizes_are_checked_against_the_data_set(tiny):
    tiny["data"] = {"name": "mnist", "train_size": 50000, "val_size": 12000}
    with pytest.raises(UserError, match="exceeds the 60000 training samples"):
        validate_dict(tiny, "s.toml")
