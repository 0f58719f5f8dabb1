"""aalp_tf.files: files and folders a kill or an error leaves whole, the clean-up of what killed
writers leave, the writable-folder check, the one line of a full disk, and checksums."""
import errno
import hashlib
import os
import socket
import subprocess
import sys

import pytest

from aalp_tf import files
from tests.helpers.full_disk import full_at, temporaries


def test_write_atomically_writes_text_and_bytes_with_the_usual_permissions(tmp_path):
    path = tmp_path / "new" / "record.json"
    files.write_atomically(path, "{}\n")
    assert path.read_text() == "{}\n"
    files.write_atomically(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]


def test_a_write_that_fails_before_its_rename_keeps_the_old_file_and_no_temporary(
        tmp_path, monkeypatch):
    path = tmp_path / "history.json"
    path.write_text("old")

    def killed(*_):
        raise KeyboardInterrupt  # what an interrupt between the write and the rename looks like
    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_writer_gone_only_for_a_dead_process_of_this_host():
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert files.writer_gone(f".history.json.tmp-{host}-{dead}")
    assert not files.writer_gone(f".history.json.tmp-{host}-{os.getpid()}")  # still writing
    assert not files.writer_gone(f".history.json.tmp-another-{host}-{dead}")  # another host's
    assert not files.writer_gone(".history.json.tmp-garbage")
    assert files.temporary_path(files.pathlib.Path("/a/b.json")).name == \
        f".b.json.tmp-{host}-{os.getpid()}"


def test_an_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "model" / "1"
    with files.atomic_folder(final) as tmp:
        assert tmp.name == f".1.tmp-{socket.gethostname()}-{os.getpid()}" and tmp.is_dir()
        (tmp / "saved_model.pb").write_text("graph")
        assert not final.exists()  # TF Serving, watching model/, sees nothing yet
    assert sorted(p.name for p in final.parent.iterdir()) == ["1"]
    assert (final / "saved_model.pb").read_text() == "graph"

    with pytest.raises(OSError, match="disk full"):
        with files.atomic_folder(final.parent / "2") as tmp:
            (tmp / "half").write_text("")
            raise OSError("disk full")
    assert sorted(p.name for p in final.parent.iterdir()) == ["1"]
    with pytest.raises(FileExistsError):
        with files.atomic_folder(final):
            pass


def test_an_atomic_folder_refuses_one_another_writer_took_meanwhile(tmp_path):
    final = tmp_path / "1"
    with pytest.raises(FileExistsError):
        with files.atomic_folder(final) as tmp:
            (tmp / "mine").write_text("")
            (final / "theirs").parent.mkdir()
            (final / "theirs").write_text("")  # landed first
    assert sorted(p.name for p in final.iterdir()) == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def test_remove_abandoned_takes_dead_writers_and_tensorflows_temporaries_only(tmp_path):
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    abandoned = [tmp_path / f".history.json.tmp-{host}-{dead}", tmp_path / "checkpoint.tmp0a1b"]
    for path in abandoned + [tmp_path / f".history.json.tmp-{host}-{os.getpid()}",
                             tmp_path / ".history.json.tmp-elsewhere-123",
                             tmp_path / "history.json"]:
        path.write_text("")
    for folder in (tmp_path / f".1.tmp-{host}-{dead}", tmp_path / "ckpt-2_temp"):
        (folder / "part").mkdir(parents=True)
        abandoned.append(folder)
    assert files.remove_abandoned(tmp_path) == sorted(abandoned)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f".history.json.tmp-{host}-{os.getpid()}", ".history.json.tmp-elsewhere-123",
        "history.json"])
    assert files.remove_abandoned(tmp_path / "absent") == []


def test_check_writable_refuses_a_file_in_the_way_in_one_line(tmp_path):
    (tmp_path / "exports").write_text("")
    with pytest.raises(files.UsageError) as err:
        files.check_writable(tmp_path / "exports" / "m", flag="--export_dir")
    assert str(err.value) == (f"--export_dir {tmp_path}/exports/m: {tmp_path}/exports is not a "
                              "folder; accepted: a folder")
    files.check_writable(tmp_path / "new" / "deeper", flag="--model_dir", within=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports"]  # nothing created


def test_write_once_keeps_the_first_writers_file(tmp_path):
    path = tmp_path / "study" / "settings.json"
    assert files.write_once(path, "first")
    assert not files.write_once(path, "second")
    assert path.read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.json"]


def test_a_write_meeting_a_full_disk_keeps_the_old_file_and_names_itself_and_its_size(tmp_path):
    path = tmp_path / "out" / "cells" / "alp-seed0.json"
    path.parent.mkdir(parents=True)
    path.write_text("old")
    with full_at("alp-seed0.json"):
        with pytest.raises(files.NoSpace) as err:
            files.write_atomically(path, "x" * 5000)
        assert (err.value.errno, err.value.filename, err.value.needed) == (
            errno.ENOSPC, str(path), 5000)
        assert files.disk_full(err.value)
        with pytest.raises(files.NoSpace):
            files.write_once(path.with_name("alp-seed0.json"), "new")
    assert path.read_text() == "old" and temporaries(tmp_path) == []


@pytest.mark.parametrize("where,what,expected", [
    ("out", {}, "the disk of --output_dir {out} is full: cells/alp-seed0.json needs about 4.9 KB "
                "and 3.0 KB are free; accepted: free space there (or copy the folder to a disk "
                "with room), then run the same command again to resume"),
    ("out/cells/alp-seed0.json", {},
     "the disk of --output_dir {out}/cells/alp-seed0.json is full: the file needs about 4.9 KB "
     "and 3.0 KB are free; accepted: free space there (or copy the folder to a disk with room), "
     "then run the same command again to resume"),
    ("out", {"what": "a checkpoint", "needed": lambda: 3 * 2 ** 20},  # asked after the failure
     "the disk of --output_dir {out} is full: a checkpoint needs about 3.0 MB and 3.0 KB are "
     "free; accepted: free space there (or copy the folder to a disk with room), then run the "
     "same command again to resume"),
])
def test_full_disk_refused_is_one_line_naming_the_flag_the_file_and_the_space(tmp_path, where,
                                                                             what, expected):
    path = tmp_path / "out" / "cells" / "alp-seed0.json"
    with full_at("alp-seed0.json"):
        with pytest.raises(files.DiskFull) as err:
            with files.full_disk_refused(tmp_path / where, flag="--output_dir",
                                         then="run the same command again to resume", **what):
                files.write_atomically(path, "x" * 5000)
    assert str(err.value) == expected.format(out=tmp_path / "out")
    assert not path.exists() and temporaries(tmp_path) == []


def test_a_full_disk_met_by_another_write_names_the_path_it_failed_on(tmp_path):
    """A folder or a lock file, say: the size it needed is unknown."""
    lock = tmp_path / "out" / "work" / "alp-seed0" / "lock"
    with full_at("nothing of the kind"):  # the disk's free space only
        with pytest.raises(files.DiskFull) as err:
            with files.full_disk_refused(tmp_path / "out", flag="--output_dir",
                                         then="run the same command again to resume"):
                raise OSError(errno.ENOSPC, "No space left on device", str(lock))
    assert str(err.value) == (
        f"the disk of --output_dir {tmp_path / 'out'} is full: work/alp-seed0/lock did not fit "
        "(3.0 KB free); accepted: free space there (or copy the folder to a disk with room), then "
        "run the same command again to resume")


def test_full_disk_refused_lets_other_errors_and_an_inner_blocks_line_through(tmp_path):
    with pytest.raises(PermissionError):
        with files.full_disk_refused(tmp_path, flag="--output_dir", then="rerun"):
            raise PermissionError(errno.EACCES, "Permission denied")
    with full_at("eval-32.json"):
        with pytest.raises(files.DiskFull, match=r"^the disk of --runs_dir .*: eval-32\.json "):
            with files.full_disk_refused(tmp_path, flag="--output_dir", then="rerun"):
                with files.full_disk_refused(tmp_path / "work", flag="--runs_dir", then="rerun"):
                    files.write_atomically(tmp_path / "work" / "eval-32.json", "{}")


def test_checksums_are_sha256sums_lines_and_any_changed_byte_is_named(tmp_path):
    index, data = tmp_path / "ckpt-2.index", tmp_path / "ckpt-2.data-00000-of-00001"
    index.write_bytes(b"index")
    data.write_bytes(bytes(range(256)) * 4)
    manifest = tmp_path / "ckpt-2.sha256"
    assert files.checksum_mismatch(manifest) is None  # none written (older code): unverified
    files.write_checksums(manifest, [index, data])
    assert manifest.read_text() == (f"{hashlib.sha256(data.read_bytes()).hexdigest()}  "
                                    f"{data.name}\n{hashlib.sha256(b'index').hexdigest()}  "
                                    f"{index.name}\n")
    assert files.checksum_mismatch(manifest) is None
    flipped = bytearray(data.read_bytes())
    flipped[512] ^= 0x01  # one bit, same size
    data.write_bytes(bytes(flipped))
    assert files.checksum_mismatch(manifest) == (
        "checksum mismatch: ckpt-2.data-00000-of-00001 differs from its sha256 in ckpt-2.sha256")
    data.unlink()
    assert files.checksum_mismatch(manifest) == (
        "checksum mismatch: ckpt-2.data-00000-of-00001, listed in ckpt-2.sha256, is missing")
    manifest.write_text("garbage\n")
    assert files.checksum_mismatch(manifest) == (
        "checksum mismatch: ckpt-2.sha256 is not a list of sha256 sums")
