"""aalp_tf.runs: a run folder is held by one process at a time (issue 21), by injection, not
timing: a second process holds the lock for as long as the test keeps its stdin open."""
import os
import socket
import subprocess
import sys
import threading

import pytest

from aalp_tf import runs
from aalp_tf.errors import UsageError
from aalp_tf.experiment.training import train
from tests.helpers.commands import REPO
from tests.helpers.tiny import tiny_arrays, tiny_config

ARRAYS = tiny_arrays(96, 32)
HOLD = ("import sys\nfrom aalp_tf.runs import RunFolder\nwith RunFolder(sys.argv[1]).held():\n"
        "    print('held', flush=True)\n    sys.stdin.read()\n")


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path/run until the test ends (or closes its stdin)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], cwd=REPO,
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"  # it holds the lock from here on
    yield process
    process.stdin.close()
    process.wait(timeout=60)


def test_a_second_process_is_refused_in_one_line_naming_the_holder(tmp_path, holder):
    cfg = tiny_config(tmp_path / "run", "natural")
    with pytest.raises(UsageError) as err:
        train(cfg, arrays=ARRAYS, verbose=0)
    assert str(err.value) == (
        f"--model_dir {tmp_path / 'run'} is held by {socket.gethostname()} PID {holder.pid}, "
        "which trains this run now; accepted: the same command once it ends (or with --wait "
        "to wait for it), or a new --model_dir")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["lock"]  # nothing written


def test_wait_waits_for_the_holder_then_trains(tmp_path, holder, monkeypatch, capsys):
    blocked = threading.Event()
    flock = runs.fcntl.flock

    def flock_noting_a_wait(handle, operation):
        if operation == runs.fcntl.LOCK_EX:  # the blocking call: the wait begins
            blocked.set()
        return flock(handle, operation)

    monkeypatch.setattr(runs.fcntl, "flock", flock_noting_a_wait)
    run = runs.RunFolder(str(tmp_path / "run"))
    order = []

    def wait_then_hold():
        with run.held(wait=True):
            order.append("held")

    waiter = threading.Thread(target=wait_then_hold)
    waiter.start()
    assert blocked.wait(timeout=120)
    order.append("released")
    holder.stdin.close()  # the holder ends: the kernel drops its lock
    waiter.join(timeout=120)
    assert order == ["released", "held"]
    assert capsys.readouterr().out == (
        f"waiting for {run.root}, held by {socket.gethostname()} PID {holder.pid}\n")
    assert (run.root / "lock").read_text() == ""  # released cleanly


def test_a_lock_left_by_a_killed_process_is_taken_over_saying_so(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "lock").write_text(f"{socket.gethostname()} PID {dead}\n")  # kill -9
    result = train(tiny_config(tmp_path / "run", "natural"), arrays=ARRAYS, verbose=0,
                   export_model=False)
    assert [h["epoch"] for h in result.history] == [1]
    out = capsys.readouterr().out
    assert f"taking over {tmp_path / 'run'} from {socket.gethostname()} PID {dead}, which is " \
           "gone\n" in out
    assert (tmp_path / "run" / "lock").read_text() == ""
    train(tiny_config(tmp_path / "run", "natural"), arrays=ARRAYS, verbose=0, export_model=False)
    assert "taking over" not in capsys.readouterr().out  # a clean release leaves nobody


@pytest.mark.parametrize("part,field,kind,known", [
    ("method", "mart", "method", "aalp, aalp_gd, aalp_sw, alp, madry, natural, trades"),
    ("model", "my_net", "backbone", "lenet, preact_resnet18, resnet32, resnet9, wide_resnet"),
])
def test_a_run_of_a_method_or_backbone_nothing_registered_names_it_and_imports(
        part, field, kind, known):
    """Read without the user's module (no --imports), the run is refused in one line, before
    the model's own argument check, which knows nothing of --imports."""
    import dataclasses

    cfg = tiny_config("unused", "alp")
    cfg = cfg.replace(**{part: dataclasses.replace(getattr(cfg, part), name=field)})
    with pytest.raises(UsageError) as err:
        runs.check_registered(cfg, "runs/mine")
    assert str(err.value) == (
        f"runs/mine was trained with the {kind} {field!r}, which nothing imported has "
        "registered; accepted: the module that registers it, imported first (--imports=MODULE;"
        f" in Python, import it), or one trained with a built-in {kind}: {known}")
    runs.check_registered(tiny_config("unused", "alp"), "runs/mine")  # the built-in ones pass
