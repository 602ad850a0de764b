"""Where every stored number came from: software, code version, machine, command, data.

Each group file carries these as global attributes (strings; JSON where structured).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ..spec import Spec

SHA_CACHE = ".sha256-cache.json"


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def invocation(overrides: list[str], command: list[str] | None = None) -> dict[str, str]:
    """What the user ran: recorded once in the client, handed to every group task."""
    command = command or [Path(sys.argv[0]).name, *sys.argv[1:]]
    return {
        "command": shlex.join(command),
        "overrides": json.dumps(list(overrides)),
        "run_started": timestamp(),
    }


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict[str, str]:
    """The nodescope source the group ran with: git commit and whether the tree was dirty
    ("unknown" when nodescope is not installed from a git checkout)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    dirty = _git("status", "--porcelain", "--untracked-files=no", ".")
    return {"git_commit": commit, "git_dirty": "unknown" if dirty is None else str(bool(dirty))}


def software_versions() -> dict[str, str]:
    import netCDF4
    import numpy
    import torch
    import xarray

    import nodescope

    return {
        "nodescope_version": nodescope.__version__,
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "xarray_version": xarray.__version__,
        "netcdf4_version": netCDF4.__version__,
        "python_version": platform.python_version(),
    }


def machine(device) -> dict[str, str]:
    import torch

    count = torch.cuda.device_count() if device.type == "cuda" else 0
    return {"host": socket.gethostname(), "cuda_device_count": str(count)}


def data_checksums(spec: Spec) -> dict[str, str]:
    """SHA-256 of every data file the spec reads (none for generated data)."""
    if spec.data.name == "synthetic_patterns":
        return {}
    from ..data.fetch import REGISTRY, dataset_folder

    info = REGISTRY["fashion_mnist" if spec.data.name == "fashion_mnist" else "mnist"]
    folder = dataset_folder(info)
    return {name: cached_sha256(folder / name) for name in info.files if (folder / name).is_file()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: Path, known: str | None = None) -> str:
    """SHA-256 of a file, cached beside it against its inode, size and modification time;
    `known`, the file's digest already computed, is cached without reading the file."""
    cache_path = path.parent / SHA_CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    stat = path.stat()
    key = f"{path.name}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"
    if key in cache and known is None:
        return cache[key]
    digest = known or sha256_of(path)
    # earlier versions of the file (rewritten group files) leave the cache
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path.name}:")}
    cache[key] = digest
    tmp = cache_path.with_name(f"{SHA_CACHE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_path)
    except OSError:  # a read-only or full data folder: hash again next time
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return cache[key]


def group_provenance(spec: Spec, device, started: str, context: dict[str, str]) -> dict[str, str]:
    """Every provenance attribute of one group file."""
    return {
        **context,
        "group_started": started,
        "group_finished": timestamp(),
        **software_versions(),
        **code_version(),
        **machine(device),
        "data_sha256": json.dumps(data_checksums(spec)),
    }
