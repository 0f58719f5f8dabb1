"""A disk that fills up at one file, by injection rather than by filling a real disk."""
import collections
import contextlib
import errno
import pathlib
import shutil

import pytest

FREE = 3 * 1024  # what the full disk reports free: 3.0 KB

_Usage = collections.namedtuple("_Usage", "total used free")


@contextlib.contextmanager
def full_at(name: str):
    """While the block runs, writing the file `name` (through files.write_atomically or
    write_once, which write a temporary `.NAME.tmp-HOST-PID` first) writes half of it and then
    fails with ENOSPC, as a full disk does; the disk reports FREE bytes free."""
    write_bytes = pathlib.Path.write_bytes

    def half_then_full(path, data):
        if path.name.startswith(f".{name}.tmp-"):
            write_bytes(path, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_bytes(path, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pathlib.Path, "write_bytes", half_then_full)
        patch.setattr(shutil, "disk_usage", lambda path: _Usage(10 * FREE, 9 * FREE, FREE))
        yield


def temporaries(folder: pathlib.Path) -> list:
    """What a write leaves when it fails midway: our temporaries, anywhere under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp-*"))
