"""Files that cannot be half-written, silently damaged, or written by two runs at once.

- Every stored file is written to a uniquely named temporary file and renamed into place,
  so a reader (or a second writer) never sees half a file.
- Every stored file gets a sidecar `<file>.sha256` with its SHA-256 and size; readers
  check it and name a damaged file instead of returning changed numbers. netCDF variables
  also carry HDF5 fletcher32 checksums.
- A results folder is owned by one run at a time through a lock file naming the owner.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ..errors import UserError
from ..interrupts import uninterrupted
from .provenance import cached_sha256, sha256_of

LOCK_NAME = ".nodescope.lock"
CHOOSE_OTHER_FOLDER = "choose a writable results folder with --out DIR"
# Threads of one run (Dask's threaded workers) writing the same file must not interleave
# sidecar, rename and digest cache; other processes are kept out by the folder's lock.
_RENAMING = threading.Lock()


def make_folder(folder: Path, fix: str) -> None:
    """Create `folder` (and its parents), or end in one line naming it, the cause and `fix`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder} ({exc.strerror or exc}); {fix}") from None


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_file_atomic(path: Path, write) -> None:
    """`write(tmp)` fills a temporary file beside `path`; its checksum goes into the
    sidecar (which keeps the old file's as `previous`), then it is renamed into place. A
    process killed between the two renames leaves the old, complete file, which its
    sidecar still vouches for. A failure (full disk, read-only folder) leaves the old file
    untouched, removes the temporary file and ends in one line. A Ctrl-C or SIGTERM
    waits until the file is in place (interrupts.py)."""
    tmp = temp_path(path)
    with uninterrupted():
        _write_and_rename(path, tmp, write)


def _write_and_rename(path: Path, tmp: Path, write) -> None:
    try:
        try:
            write(tmp)
        except RuntimeError as exc:
            refused = _system_write_error(tmp)
            if refused is None:
                raise
            raise refused from exc
        with _RENAMING:
            digest = record_checksum(tmp, path)
            os.replace(tmp, path)
            cached_sha256(path, known=digest)
    except OSError as exc:
        with contextlib.suppress(OSError):  # e.g. the folder itself could not be made
            tmp.unlink(missing_ok=True)
        raise UserError(
            f"cannot write {path} ({exc.strerror or exc}); {fix_for_write(exc)}, then run "
            "again: stored groups are kept"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _system_write_error(tmp: Path) -> OSError | None:
    """netCDF ("NetCDF: HDF error") and torch.save report a failed write (full disk,
    quota, file-size limit) as a RuntimeError that has lost the system's error. Writing
    1 MB more to the same temporary file meets it again, as an OSError; None where that
    write succeeds, so that the library's error is not about the disk and stays itself."""
    try:
        with open(tmp, "ab") as f:
            f.write(bytes(1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return exc
    return None


def fix_for_write(exc: OSError) -> str:
    """What a user does about a write the system refused."""
    if exc.errno == errno.EFBIG:
        return "raise the file-size limit (ulimit -f)"
    return "free disk space or fix the folder's permissions"


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def record_checksum(new: Path, path: Path) -> str:
    """Record `new`, about to replace `path`, in `path`'s sidecar; its SHA-256."""
    info = {"sha256": sha256_of(new), "size": new.stat().st_size}
    old = _recorded(path)
    if old is not None and path.exists():
        info["previous"] = {"sha256": old["sha256"], "size": old["size"]}
    tmp = temp_path(sidecar(path))
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, sidecar(path))
    return info["sha256"]


def _recorded(path: Path) -> dict | None:
    try:
        info = json.loads(sidecar(path).read_text())
        return {"sha256": str(info["sha256"]), "size": int(info["size"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def damage(path: Path) -> str | None:
    """Why `path` cannot be trusted (None: it matches its recorded checksum, or it has
    none because it was written before checksums were recorded)."""
    try:
        info = json.loads(sidecar(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"its checksum file {sidecar(path).name} is unreadable"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "it is missing"
    # a complete earlier version is intact too: the writer was killed before its rename
    written = [info, *([info["previous"]] if isinstance(info.get("previous"), dict) else [])]
    if all(size != w.get("size") for w in written):
        return f"its size is {size} bytes, {info.get('size')} were written"
    digest = cached_sha256(path)
    if all((size, digest) != (w.get("size"), w.get("sha256")) for w in written):
        return "its SHA-256 differs from the one recorded when it was written"
    return None


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temporary files left by a run that was killed (called while holding the lock)."""
    for pattern in (".*.tmp", "weights/.*.tmp", "state/.*.tmp"):
        for tmp in run_dir.glob(pattern):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """Exclusive ownership of a results folder: `with FolderLock(run_dir, log): ...`.

    The lock file names the owner's pid, host and start time. A lock left by a dead
    process on this host is taken over (and said so); any other lock refuses in one line.
    """

    def __init__(self, run_dir: Path, log=lambda _: None):
        self.path = Path(run_dir) / LOCK_NAME
        self.log = log
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}

    def __enter__(self) -> FolderLock:
        make_folder(self.path.parent, CHOOSE_OTHER_FOLDER)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            except OSError as exc:
                reason = exc.strerror or exc
                raise UserError(
                    f"cannot create {self.path} ({reason}); {CHOOSE_OTHER_FOLDER}"
                ) from None
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(self.owner, handle)
            except OSError as exc:  # a full disk still creates the empty file
                self.path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.path.parent.rmdir()  # only when empty, as on exit
                raise UserError(
                    f"cannot write {self.path} ({exc.strerror or exc}); {fix_for_write(exc)}, or "
                    f"{CHOOSE_OTHER_FOLDER}"
                ) from None
            return self
        raise UserError(f"{self.path.parent} is locked by another run; try again")

    def _handle_existing(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
            pid, host, since = int(owner["pid"]), str(owner["host"]), float(owner["since"])
        except (OSError, ValueError, KeyError, TypeError):
            owner, pid, host, since = None, -1, "", 0.0
        if owner is not None and (host != socket.gethostname() or _alive(pid)):
            started = time.strftime("%Y-%m-%d %H:%M", time.localtime(since))
            raise UserError(
                f"{self.path.parent} is in use by another nodescope run (pid {pid} on "
                f"{host}, since {started}); wait for it to finish or use --out DIR"
            )
        what = f"pid {pid} is gone" if owner else "it is unreadable"
        self.log(f"taking over the stale lock of {self.path.parent} ({what})")
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
            self.path.parent.rmdir()  # only when the run left nothing in it
        except (OSError, ValueError):
            pass
