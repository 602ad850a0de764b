"""Read and write IDX files, the format MNIST-style data sets ship in (raw or gzip-compressed)."""

from __future__ import annotations

import gzip as gzip_module
import os
import zlib
from pathlib import Path

import numpy as np

from nodescope.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
"""First two bytes of every gzip stream; used to detect compression regardless of file name."""

_TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type code -> on-disk (big-endian) dtype."""

_HEADER_BYTES = 4
_DIM_BYTES = 4
_DEFAULT_FIX = "re-download it (for MNIST-style data: `nodescope fetch <name>`)"


def read_idx(path: str | os.PathLike[str], *, fix: str = _DEFAULT_FIX) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a native-endian numpy array.

    Compression is detected from the gzip magic bytes, not from the file name.
    ``fix`` is the remedy appended to error messages (e.g. "run `nodescope fetch mnist`").
    Raises UserError for a missing, non-IDX, corrupt or truncated file.
    """
    path = Path(path)
    content = _read_bytes(path, fix)
    dtype, shape, offset = _parse_header(path, content, fix)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(content) - offset
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise UserError(
            f"{path} is {problem}: its header needs {expected} data bytes "
            f"but it has {actual}; {fix}"
        )
    data = np.frombuffer(content, dtype=dtype, count=expected // dtype.itemsize, offset=offset)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, gzip: bool = False) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if ``gzip``) and return the path.

    Supported dtypes: uint8, int8, int16, int32, float32, float64; anything else is a ValueError.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _type_code(array.dtype)
    if array.ndim > 255:
        raise ValueError(f"IDX files hold at most 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim])
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=_TYPE_CODES[code]).tobytes()
    content = header + dims + body
    path.write_bytes(gzip_module.compress(content) if gzip else content)
    return path


def _read_bytes(path: Path, fix: str) -> bytes:
    """Return the file's (decompressed) bytes, turning I/O and gzip failures into UserError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; {fix}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}); {fix}") from None
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip_module.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path} is a damaged gzip file ({exc}); {fix}") from None


def _parse_header(path: Path, content: bytes, fix: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate the IDX header and return (on-disk dtype, shape, offset of the data)."""
    if len(content) < _HEADER_BYTES or content[0:2] != b"\x00\x00" or content[2] not in _TYPE_CODES:
        raise UserError(f"{path} is not an IDX file (bad magic bytes); {fix}")
    ndim = content[3]
    offset = _HEADER_BYTES + ndim * _DIM_BYTES
    if len(content) < offset:
        raise UserError(
            f"{path} is truncated: its header declares {ndim} dimensions "
            f"but the file ends after {len(content)} bytes; {fix}"
        )
    shape = tuple(
        int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=_HEADER_BYTES)
    )
    return _TYPE_CODES[content[2]], shape, offset


def _type_code(dtype: np.dtype) -> int:
    """Return the IDX type code for a numpy dtype, or raise ValueError if IDX cannot hold it."""
    for code, disk_dtype in _TYPE_CODES.items():
        if dtype.kind == disk_dtype.kind and dtype.itemsize == disk_dtype.itemsize:
            return code
    raise ValueError(
        f"IDX cannot store dtype {dtype}; use uint8, int8, int16, int32, float32 or float64"
    )
