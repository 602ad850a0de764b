"""Property-based: every spec either validates (and plans) or fails with lines naming the
problem — no traceback, no hang — for mutants of the repo's specs and random documents."""

from __future__ import annotations

import copy
import glob
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodescope.errors import UserError
from nodescope.reports.plan import plan_tree
from nodescope.spec import load_spec, plan
from nodescope.spec.toml_io import dump_toml, read_toml

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(glob.glob(str(ROOT / "specs" / "**" / "*.toml"), recursive=True))
BASES = [read_toml(Path(p))[0] for p in SPECS]

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2, 10**9, 2**63, -(2**63), 2**64]),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),  # FTZ may be on
    st.sampled_from([1e-300, 1e300, 0.5, -0.5]),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["", "..", "a/b", "relu", "mse", "full", "final", "auto", "x" * 300]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(node, prefix=()):
    """Every (table path, key) in a nested dict."""
    out = []
    for key, value in node.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += paths(value, (*prefix, key))
    return out


@st.composite
def mutants(draw):
    spec = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(spec)))
        parent = spec
        for part in where[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["set", "set", "delete", "add"]))
        if action == "set":
            parent[where[-1]] = draw(values)
        elif action == "delete":
            del parent[where[-1]]
        else:
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
    return spec


documents = st.dictionaries(
    st.sampled_from(["experiment", "data", "model", "training", "sweep", "probes", "x-y", "1"]),
    st.one_of(values, st.dictionaries(st.text(max_size=10), values, max_size=4)),
    max_size=5,
)


def check(spec: dict, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.toml"
    try:
        path.write_text(dump_toml(spec))
    except (TypeError, ValueError, UnicodeEncodeError):
        return  # not expressible in TOML: nothing a user could write
    try:
        loaded, _ = load_spec(path)
        groups = plan(loaded)
        plan_tree(str(path), loaded, groups)
    except UserError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.strip() for line in lines)


FUZZ = settings(
    max_examples=600,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@pytest.mark.skipif(not BASES, reason="no specs")
@FUZZ
@given(spec=mutants())
def test_mutated_repo_specs_validate_or_fail_in_lines(spec, tmp_path):
    check(spec, tmp_path)


@settings(FUZZ, max_examples=400)
@given(spec=documents)
def test_random_documents_validate_or_fail_in_lines(spec, tmp_path):
    check(spec, tmp_path)


def test_fuzzing_reaches_accepted_specs(tmp_path):
    """The mutants are not all rejected: a mutation of a value that stays valid passes."""
    spec = copy.deepcopy(BASES[0])
    spec.setdefault("training", {})["epochs"] = 3
    check(spec, tmp_path)
    assert not math.isnan(len(plan(load_spec(tmp_path / "fuzz.toml")[0])))
