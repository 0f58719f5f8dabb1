"""aalp_tf.files: files and folders a kill or an error leaves whole, the clean-up of what killed
writers leave, and the writable-folder check."""
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
