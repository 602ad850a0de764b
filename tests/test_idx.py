"""Tests for nodescope.data.idx: IDX reading/writing, gzip detection and error messages."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from nodescope.data.idx import read_idx, write_idx
from nodescope.errors import UserError


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_uint8_round_trip_exact(tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write_idx(tmp_path / "images", images, gzip=compress)
    loaded = read_idx(path)
    assert loaded.dtype == np.uint8
    assert loaded.shape == (2, 3, 4)
    np.testing.assert_array_equal(loaded, images)
    assert loaded[1, 2, 3] == 230


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_float32_round_trip_exact(tmp_path: Path, compress: bool) -> None:
    values = np.array([[0.0, -1.5, 3.25], [1e-7, 65504.0, -0.0]], dtype=np.float32)
    path = write_idx(tmp_path / "floats", values, gzip=compress)
    loaded = read_idx(path)
    assert loaded.dtype == np.float32
    assert loaded.dtype.isnative
    assert loaded.shape == (2, 3)
    assert loaded.tobytes() == values.tobytes()


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "float64"])
def test_other_dtypes_round_trip(tmp_path: Path, dtype: str) -> None:
    values = np.array([-3, -1, 0, 1, 2, 100], dtype=dtype)
    loaded = read_idx(write_idx(tmp_path / "values", values))
    assert loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded, values)


def test_header_layout_is_big_endian(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", np.array([1, 258], dtype=np.int16))
    assert path.read_bytes() == bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0, 1, 1, 2])


def test_gzip_detected_by_magic_not_by_name(tmp_path: Path) -> None:
    values = np.array([[7, 8], [9, 10]], dtype=np.uint8)
    compressed_without_suffix = write_idx(tmp_path / "plain-name", values, gzip=True)
    raw_with_gz_suffix = write_idx(tmp_path / "misleading.gz", values, gzip=False)
    assert compressed_without_suffix.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(compressed_without_suffix), values)
    np.testing.assert_array_equal(read_idx(raw_with_gz_suffix), values)


def test_bad_magic_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "not-idx.bin"
    path.write_bytes(b"PK\x03\x04 this is a zip, not IDX")
    with pytest.raises(UserError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "bad magic" in message
    assert "\n" not in message


def test_unknown_type_code_is_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "odd-type"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(UserError, match="bad magic"):
        read_idx(path)


def test_truncated_data_reports_expected_and_actual_bytes(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", np.zeros((4, 5), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(UserError) as info:
        read_idx(path, fix="run `nodescope fetch mnist`")
    message = str(info.value)
    assert str(path) in message
    assert "truncated" in message
    assert "20" in message and "17" in message
    assert "nodescope fetch mnist" in message
    assert "\n" not in message


def test_truncated_gzip_file_is_a_user_error(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images.gz", np.arange(1000, dtype=np.int32), gzip=True)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(UserError, match="images.gz"):
        read_idx(path)


def test_truncated_dims_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "short-header"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 2]))
    with pytest.raises(UserError, match="truncated"):
        read_idx(path)


def test_trailing_bytes_are_reported(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", np.arange(3, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(UserError, match="longer than its header"):
        read_idx(path)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_idx(tmp_path / "absent")


def test_result_is_writable_copy(tmp_path: Path) -> None:
    loaded = read_idx(write_idx(tmp_path / "values", np.arange(4, dtype=np.uint8)))
    loaded[0] = 99
    assert loaded[0] == 99


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.arange(3, dtype=np.int64))


def test_write_gzip_is_valid_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.array([1, 2, 3], dtype=np.uint8), gzip=True)
    assert gzip.decompress(path.read_bytes()) == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])


def test_float_rows_equal_numpys_gather_cast_and_division_bit_for_bit():
    from nodescope.data.prepare import _float_rows

    rng = np.random.default_rng(5)
    images = np.concatenate(
        [
            np.arange(256, dtype=np.uint8)[None].repeat(3, 0),
            rng.integers(0, 256, (40, 256), dtype=np.uint8),
        ]
    )
    index = rng.permutation(len(images))[:29]
    unit = images[index].astype(np.float32)
    unit /= 255.0
    assert np.array_equal(_float_rows(images, index, True), unit)
    assert np.array_equal(_float_rows(images, index, False), images[index].astype(np.float32))
    assert _float_rows(images, index, True).dtype == np.float32
