"""Writing a file so that a kill at any moment leaves either the old file or the new one whole.

No TensorFlow here: the study's cell files (`comparison.cells`) are written by code that runs
before TensorFlow is imported, and run folders (`runs`) are written by the trainer.

A write goes to `.NAME.tmp-HOST-PID` beside the file, then one rename puts it in place. The
name says which process wrote it, so a temporary left by a killed writer can be told apart from
one still being written (`writer_gone`), also when several hosts share one folder.
"""
import os
import pathlib
import socket
from typing import Union


def temporary_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def write_atomically(path, content: Union[str, bytes]) -> None:
    """Writes through a temporary file in the same folder and a rename, so readers never see
    half a file. The file gets the usual permissions (those of open() under the umask)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def writer_gone(name: str) -> bool:
    """Whether a `.NAME.tmp-HOST-PID` temporary was left by a process of this host that is gone
    (a temporary of another host, or of a live process, is not ours to remove)."""
    host_pid = name.rsplit(".tmp-", 1)[-1]
    host, _, pid = host_pid.rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
