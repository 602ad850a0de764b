"""xarray's first Variable asks whether its data is a dask array, and answers by importing
dask.array: 0.3-0.45 s of every nodescope command on a 2-core machine (scipy's FFT comes
with it), though `nodescope run` and small reports hold no dask array. No dask array can
exist before dask.array is imported, so until then "no" is the true answer without the
import; once dask.array is imported, xarray's own record of it takes over. Its first
index asks the same of dask.base (is_dask_collection), which imports the dask package
(0.06 s): no dask collection can exist before dask is imported either.

This leans on xarray's private cache of duck-array modules (xarray.namedarray.pycompat)
and on its helper xarray.namedarray.utils.is_dask_collection; where either is not there,
that part is left alone and xarray imports dask as before.
"""

from __future__ import annotations

import sys


class _DaskOnceImported:
    """Stands in for xarray's DuckArrayModule("dask") until dask.array is imported."""

    def __init__(self, pycompat) -> None:
        self._pycompat = pycompat

    def __getattr__(self, name: str):
        if name == "type" and "dask.array" not in sys.modules:
            return ()
        real = self._pycompat.DuckArrayModule("dask")
        self._pycompat._cached_duck_array_modules["dask"] = real
        return getattr(real, name)


def defer_dask_import() -> bool:
    """Let xarray build Variables without importing dask.array until something else does.
    True when installed (or already in place)."""
    try:
        from xarray.namedarray import pycompat

        cache = pycompat._cached_duck_array_modules
        pycompat.DuckArrayModule  # noqa: B018 - the class the stand-in hands over to
    except (ImportError, AttributeError):
        return False
    if "dask" not in cache and "dask.array" not in sys.modules:
        cache["dask"] = _DaskOnceImported(pycompat)
    _defer_collection_check()
    return True


def _defer_collection_check() -> None:
    try:
        from xarray.namedarray import utils
    except ImportError:
        return
    xarray_check = getattr(utils, "is_dask_collection", None)
    if xarray_check is None or getattr(xarray_check, "defers_dask_import", False):
        return

    def is_dask_collection(x: object) -> bool:
        return "dask" in sys.modules and xarray_check(x)

    is_dask_collection.defers_dask_import = True
    utils.is_dask_collection = is_dask_collection
