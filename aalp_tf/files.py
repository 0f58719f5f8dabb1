"""The one way aalp_tf writes files: whole or not at all, whatever kills the writer.

No TensorFlow here: the study's cell files (`comparison.cells`) are written by code that runs
before TensorFlow is imported.

- `write_atomically`: a file goes to `.NAME.tmp-HOST-PID` beside it, then one rename puts it in
  place, so readers see the old file or the new one, never half of one.
- `write_once`: the same for a file that, once written, must not change (the first writer
  of a study's settings wins).
- `atomic_folder`: the same for a folder (a SavedModel version): written under the hidden
  temporary name, renamed into place when it is complete. TF Serving, which watches a model
  folder for integer versions, never sees half an export.
- `remove_abandoned`: what a killed writer leaves. The temporary's name says which process
  wrote it, so one left by a dead writer can be told apart from one still being written, also
  when several hosts share a folder. TensorFlow's checkpoint temporaries (`ckpt-N_temp/`,
  `checkpoint.tmp*`) carry no writer: a finished save never leaves them behind.
- `check_writable`: a folder refused in one line before any work, rather than after it;
  `full_disk_refused`: a write that ran out of space, reported in one line naming the flag.
- `write_checksums` / `checksum_mismatch`: a sha256 manifest of files (a checkpoint's), and
  the check that they still hold what was written.
"""
import contextlib
import errno
import hashlib
import os
import pathlib
import shutil
import socket
from typing import Callable, Iterable, Iterator, List, Optional, Union

from aalp_tf.errors import UsageError

_TEMPORARY = ".tmp-"  # .NAME.tmp-HOST-PID


def temporary_path(path: pathlib.Path) -> pathlib.Path:
    """`.NAME.tmp-HOST-PID` beside `path`: hidden, and not an integer (TF Serving skips it)."""
    return path.with_name(f".{path.name}{_TEMPORARY}{socket.gethostname()}-{os.getpid()}")


class NoSpace(OSError):
    """A file that did not fit on its disk (ENOSPC): `filename` is the file, `needed` its size,
    so the one line of `full_disk_refused` can say which file and how much."""

    def __init__(self, path, needed: int):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.needed = needed


def _write_temporary(path: pathlib.Path, content: Union[str, bytes]) -> pathlib.Path:
    """Writes `content` to the temporary of `path` (its folder made first); a failure leaves
    no temporary, and a full disk says which file needed how much (NoSpace)."""
    data = content.encode() if isinstance(content, str) else content
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if disk_full(err):
            raise NoSpace(path, len(data)) from err
        raise
    return tmp


def write_atomically(path, content: Union[str, bytes]) -> None:
    """Writes through a temporary file in the same folder and a rename, so readers never see
    half a file. The file gets the usual permissions (those of open() under the umask)."""
    path = pathlib.Path(path)
    tmp = _write_temporary(path, content)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_once(path, content: Union[str, bytes]) -> bool:
    """Creates the file whole unless it exists, even against a writer racing this one: a hard
    link of the temporary cannot replace a file. Returns whether this call created it."""
    path = pathlib.Path(path)
    tmp = _write_temporary(path, content)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


@contextlib.contextmanager
def atomic_folder(path) -> Iterator[pathlib.Path]:
    """Yields a temporary folder to fill; renames it to `path` when the block ends, or removes
    it when the block fails. Never replaces a folder: FileExistsError if `path` exists (also
    when another writer took it meanwhile: the rename itself refuses then)."""
    final = pathlib.Path(path)
    if final.exists():
        raise FileExistsError(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    shutil.rmtree(tmp, ignore_errors=True)  # named by our host and PID: ours to replace
    try:
        tmp.mkdir()
        yield tmp
        try:
            os.rename(tmp, final)  # atomic; refuses a non-empty folder in the way
        except OSError:
            if final.exists():
                raise FileExistsError(final) from None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def writer_gone(name: str) -> bool:
    """Whether a `.NAME.tmp-HOST-PID` temporary was left by a process of this host that is gone
    (a temporary of another host, or of a live process, is not ours to remove)."""
    host_pid = name.rsplit(_TEMPORARY, 1)[-1]
    host, _, pid = host_pid.rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not process_alive(int(pid))


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned(folder) -> List[pathlib.Path]:
    """Removes, in `folder` (not below it), the temporaries killed writers left: ours whose
    writer is gone, and TensorFlow's checkpoint temporaries. Returns what it removed."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for p in folder.glob(f".*{_TEMPORARY}*") if writer_gone(p.name)]
    removed += [p for p in folder.glob("*_temp") if p.is_dir()]
    removed += [p for p in folder.glob("checkpoint.tmp*") if p.is_file()]
    for path in removed:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return sorted(removed)


class DiskFull(UsageError):
    """A write failed for want of space: reported in one line (the folder, what was needed),
    like bad input, since the remedy is the user's; what was written stays resumable."""


def disk_full(err: BaseException) -> bool:
    """Whether a failed write failed for want of space: ENOSPC (or a quota), or TensorFlow's
    ResourceExhaustedError for it (the checkpoint and SavedModel writers)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return type(err).__name__ == "ResourceExhaustedError" and "space" in str(err).lower()


def _size(count: int) -> str:
    """Bytes in the unit that reads best: 2.1 KB, 35.0 MB, 1.2 GB."""
    for unit in ("KB", "MB", "GB"):
        count /= 1024
        if count < 1024 or unit == "GB":
            return f"{count:.1f} {unit}"


def refuse_full_disk(folder, *, flag: str, needed: int, what: str, then: str,
                     elsewhere: str = "copy the folder to a disk with room") -> DiskFull:
    """The one line of a full disk: the flag and its folder (or file), what the write needed,
    what is free, and how to go on."""
    folder = pathlib.Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = _size(shutil.disk_usage(existing).free)
    need = f"needs about {_size(needed)} and {free} are free" if needed else \
        f"did not fit ({free} free)"
    return DiskFull(f"the disk of {flag} {folder} is full: {what} {need}; accepted: free space "
                    f"there (or {elsewhere}), then {then}")


@contextlib.contextmanager
def full_disk_refused(folder, *, flag: str, then: str, what: str = "",
                      needed: Union[int, Callable[[], int]] = 0,
                      elsewhere: str = "copy the folder to a disk with room") -> Iterator[None]:
    """Turns a write in the block that runs out of space into the one line of a DiskFull.

    The line names `flag` and its `folder` (or file), and what did not fit: `what` and
    `needed` (bytes, or a function giving them, asked once the write failed), or else the file
    write_atomically / write_once could not write and its size. A DiskFull raised inside (a
    nested block's) passes through as it is.
    """
    try:
        yield
    except Exception as err:
        if not disk_full(err):
            raise
        if not what:  # the file that did not fit, as the write named it
            what = _named(getattr(err, "filename", None), folder)
            needed = getattr(err, "needed", 0)  # unknown unless write_atomically said (NoSpace)
        raise refuse_full_disk(folder, flag=flag, needed=needed() if callable(needed) else needed,
                               what=what, then=then, elsewhere=elsewhere) from None


def _named(path, folder) -> str:
    """`path` as the line names it: relative to the flag's folder when inside it."""
    if path is None:
        return "a write"
    path, folder = pathlib.Path(path), pathlib.Path(folder)
    if path == folder:
        return "the file"
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


def check_writable(path, *, flag: str, within: bool = False) -> None:
    """Refuses, in one line, a folder this process could not create or write into.

    Nothing is created: the folder, or else the nearest part of its path that exists, must be
    a folder this process may write into; `within` also checks every folder inside it.
    """
    path = existing = pathlib.Path(path)
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    folders = [existing]
    if within and existing == path:  # it exists, and so may folders inside it
        folders += [p for p in path.rglob("*") if p.is_dir()]
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"{flag} {path}: {folder} is not a folder; accepted: a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {path} is not writable ({folder}: permission denied); "
                             "accepted: a folder this user may write into")


def write_checksums(manifest, paths: Iterable) -> None:
    """Writes the sha256 of each file of `paths` (files beside the manifest) in sha256sum's
    format, so `sha256sum -c` in that folder checks them too. Atomically: a manifest is whole
    or absent, never a half list that would pass what it no longer lists."""
    lines = [f"{_sha256(path)}  {pathlib.Path(path).name}\n" for path in sorted(map(str, paths))]
    write_atomically(manifest, "".join(lines))


class ChecksumMismatch(ValueError):
    """A file differs from the sha256 sum written beside it (raised by readers that verify)."""


def checksum_mismatch(manifest) -> Optional[str]:
    """Why the files `manifest` lists no longer hold what was written (the first that differs
    or is missing), or None when every one matches. None without a manifest too: files written
    before manifests were (or by a writer killed before its manifest) are taken unverified."""
    manifest = pathlib.Path(manifest)
    if not manifest.is_file():
        return None
    entries = [line.partition("  ")[::2] for line in
               manifest.read_text(errors="replace").splitlines()]
    if not entries or any(len(digest) != 64 or not name or "/" in name
                          for digest, name in entries):
        return f"checksum mismatch: {manifest.name} is not a list of sha256 sums"
    for digest, name in entries:
        path = manifest.parent / name
        if not path.is_file():
            return f"checksum mismatch: {name}, listed in {manifest.name}, is missing"
        if _sha256(path) != digest:
            return f"checksum mismatch: {name} differs from its sha256 in {manifest.name}"
    return None


def _sha256(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
