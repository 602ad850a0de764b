"""Reading TOML with one-line errors, and writing the small subset specs use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import UserError


def read_toml(path: Path) -> tuple[dict, str]:
    """Parse a TOML file; syntax errors become one line with the file, line and column."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such spec file; check the path") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: TOML syntax error: {exc}; fix the spec file") from None


def parse_value(text: str) -> Any:
    """A `--set` value: any TOML value (80, 1e-3, [20, 80], true, "adam"), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not (isinstance(value, float) and value != value) else "nan"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_scalar(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'


def dump_toml(data: dict, prefix: str = "") -> str:
    """Write nested dicts as TOML tables (empty ones too); None values are left out."""
    lines, tables = [], []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_scalar(value)}")
    out = "\n".join(lines)
    for key, value in tables:
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        body = dump_toml(value, name)
        out += ("\n\n" if out else "") + f"[{name}]" + ("\n" + body if body else "")
    return out
