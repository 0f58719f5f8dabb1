"""aalp_tf.files: a write that a kill or an error leaves whole, and telling dead writers apart."""
import os
import socket
import subprocess
import sys

import pytest

from aalp_tf import files


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
