"""Turning a TOML file (plus `--set` overrides) into a validated Spec, with one-line errors."""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import UserError
from .model import Spec
from .toml_io import dump_toml, parse_value, read_toml


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field path `loc` (None if not a model)."""
    model: Any = Spec
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap_model(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _field_path(loc: tuple) -> tuple:
    """Drop pydantic's union-branch tags (e.g. 'constrained-int') from an error location."""
    return tuple(p for p in loc if isinstance(p, int) or not any(c in p for c in "[-("))


def format_errors(exc: ValidationError, where: str) -> list[str]:
    """One line per problem: TOML path, what is wrong, and how to fix it."""
    lines, seen = [], set()
    for err in exc.errors():
        loc = _field_path(err["loc"])
        if err["type"] == "extra_forbidden" and err["loc"]:
            loc = (*_field_path(err["loc"][:-1]), err["loc"][-1])  # the user's key as typed
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            valid = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
            msg = f"unknown key; {hint}"
        elif err["type"] == "missing":
            msg = "required but missing; add it to the spec"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        if path in seen:
            continue
        seen.add(path)
        lines.append(f"{where}: {path}: {msg}")
    return lines


def key_parts(key: str) -> list[str]:
    """A `--set` key as TOML reads a dotted key: `sweep."model.width"` is two parts."""
    from .toml_io import tomllib

    try:
        node = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise UserError(
            f"--set {key}: not a valid key; quote parts that contain dots, e.g. "
            "--set 'sweep.\"model.width\"=[80]'"
        ) from None
    parts = []
    while isinstance(node, dict):
        ((part, node),) = node.items()
        parts.append(part)
    return parts


def apply_override(data: dict, dotted: str | list[str], value: Any) -> None:
    """Set `a.b.c = value` inside nested dicts, creating tables on the way."""
    *parents, leaf = dotted.split(".") if isinstance(dotted, str) else dotted
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {dotted}: '{part}' is a value, not a table; check the path")
        node = child
    node[leaf] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`["model.width=80", ...]` -> `[("model.width", 80), ...]`."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.width=80")
        out.append((key.strip(), parse_value(value.strip())))
    return out


def validate_dict(data: dict, where: str) -> Spec:
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise UserError("\n".join(format_errors(exc, where))) from None


def load_spec(path: str | Path, overrides: list[str] = ()) -> tuple[Spec, str]:
    """Read, override and validate one spec file. Returns the spec and the text as given."""
    data, text = read_toml(Path(path))
    for key, value in parse_overrides(list(overrides)):
        parts = key_parts(key)
        if parts == ["seed"]:
            parts = ["training", "seed"]
        if parts[0] == "sweep" and len(parts) > 2:
            axis = ".".join(parts[1:])
            raise UserError(
                f"--set {key}: quote the sweep axis, e.g. --set 'sweep.\"{axis}\"=[...]'"
            )
        _narrow_swept(data, ".".join(parts), value)
        apply_override(data, parts, value)
    return validate_dict(data, str(path)), text


def _narrow_swept(data: dict, path: str, value: Any) -> None:
    """`--set` on a key the sweep also sets narrows that sweep axis to the value, so the
    override is never silently replaced by the sweep."""
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        return
    aliases = {"seed": "training.seed"}
    for axis in list(sweep):
        if axis == "zip" or aliases.get(axis, axis) != aliases.get(path, path):
            continue
        zips = sweep.get("zip", [])
        if any(isinstance(z, list) and axis in z for z in zips):
            raise UserError(
                f"--set {path}: the sweep zips '{axis}' with other axes; set the zipped "
                f"lists instead, e.g. --set 'sweep.\"{axis}\"=[...]'"
            )
        sweep[axis] = [value]


def resolved_toml(spec: Spec) -> str:
    return dump_toml(spec.model_dump(mode="json"))


# Keys that cannot change what a run stores: where and how fast it runs, and free text.
NOT_RESULTS = (
    ("experiment", "description"),
    ("training", "eval_chunk"),
    ("device", None),
    ("resume", None),
)


def result_identity(spec: Spec) -> dict:
    """The resolved spec without the keys that cannot change results (NOT_RESULTS)."""
    data = spec.model_dump(mode="json")
    for table, key in NOT_RESULTS:
        if key is None:
            data.pop(table, None)
        else:
            data.get(table, {}).pop(key, None)
    return data


def spec_hash(spec: Spec) -> str:
    """Short SHA-256 of what decides a spec's results (defaults filled in, key order
    fixed; description, eval_chunk and device settings left out)."""
    canonical = json.dumps(result_identity(spec), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def spec_differences(old: Spec, new: Spec) -> list[str]:
    """Dotted paths whose values differ between two specs' result identities."""
    out: list[str] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            out.append(path)

    walk(result_identity(old), result_identity(new), "")
    return out
