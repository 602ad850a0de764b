"""`nodescope validate` plans and the summary table, rendered as text."""

from __future__ import annotations

from rich.console import Console

from nodescope.reports.plan import plan_tree
from nodescope.spec import plan
from nodescope.spec.load import validate_dict
from nodescope.spec.size import estimated_bytes, values_per_member


def render(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_plan_lists_members_groups_checkpoints_and_size(tiny):
    tiny["sweep"] = {"model.width": [4, 8], "seed": [0, 1, 2]}
    spec = validate_dict(tiny, "t")
    text = render(plan_tree("t.toml", spec, plan(spec)))
    assert "6 members in 2 stacked groups" in text
    assert "group 0: 3 members (width=4, seed∈[0, 1, 2])" in text
    assert "group 1: 3 members (width=8, seed∈[0, 1, 2])" in text
    # 200 samples / batch 32 = 7 steps per epoch; log epochs 0.1 .. 3 -> steps 1 2 7 21 + 0
    assert "checkpoints: 5 (steps 0 … 21)" in text
    assert "train 200 / val 60 / test 100, 40 features, 2 classes" in text
    assert "probes: curves, activation_fraction" in text


def test_size_estimate_counts_every_stored_value(tiny):
    spec = validate_dict(tiny, "t")
    sizes = values_per_member(spec)
    # 5 checkpoints; curves: 2 variables x 3 splits x 5; activation fraction: 5 x 1 x 16 x 2
    assert sizes == {"final": 8, "curves": 30, "activation_fraction": 160}
    assert estimated_bytes(spec, 3) == 3 * (8 + 30 + 160) * 8
