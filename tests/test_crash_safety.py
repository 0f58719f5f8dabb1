"""A run killed at any write resumes to what an uninterrupted run gives.

strace kills the training process at its Nth rename (every file the run writes lands by a
rename: our own atomic writes, TensorFlow's checkpoint and SavedModel writers), for every N of a
short run; the same command then runs again to the end. After each, the run must hold every
epoch exactly once in its history, exactly one export, no temporary file, and weights equal bit
for bit to the uninterrupted run's. No timing is involved: the kill lands on a system call.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.dataset_files import write_mnist_files
from tests.helpers.tiny import tiny_arrays

REPO = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 2
RENAMES = ("rename", "renameat", "renameat2")
TEMPORARY = re.compile(r"(\.tmp|_temp|tempstate|^\.)")

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def train_args(folder: pathlib.Path, source: pathlib.Path) -> list:
    return ["-m", "aalp_tf.train", "--dataset=mnist", "--method=aalp", f"--source_dir={source}",
            "--train_examples=128", "--val_examples=32", "--test_examples=32", "--batch_size=64",
            f"--epochs={EPOCHS}", "--width=4", "--attack_steps=2", "--val_attack_steps=2",
            "--learning_rate=1e-3", f"--model_dir={folder / 'run'}",
            f"--export_dir={folder / 'exports'}"]


def run(args: list, *, strace: list = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([*strace, sys.executable, *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=600)


def count_renames(folder: pathlib.Path, source: pathlib.Path) -> int:
    folder.mkdir(parents=True)
    trace = folder / "trace.txt"
    done = run(train_args(folder, source), strace=["strace", "-f", "-qq", "-o", str(trace),
                                                   "-e", f"trace={','.join(RENAMES)}"])
    assert done.returncode == 0, done.stderr[-2000:]
    return sum(1 for line in trace.read_text().splitlines() if "rename" in line)


def final_state(folder: pathlib.Path) -> dict:
    """What a finished run leaves: history epochs, exports, temporaries, weights."""
    run_dir, exports = folder / "run", folder / "exports" / "mnist_aalp"
    history = json.loads((run_dir / "history.json").read_text())
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    weights = {name: tf.train.load_variable(latest, name)
               for name, _ in tf.train.list_variables(latest) if name.startswith("model/")}
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if TEMPORARY.search(p.name) and p.name != ".ATTRIBUTES")
    return {"epochs": [h["epoch"] for h in history],
            "versions": sorted(p.name for p in exports.iterdir()),
            "export_record": json.loads((run_dir / "export.json").read_text())["path"],
            "temporaries": left, "weights": weights}


@pytest.mark.slow
def test_a_kill_at_every_rename_resumes_to_the_uninterrupted_run(tmp_path):
    source = tmp_path / "mnist"
    write_mnist_files(source, splits=tiny_arrays(192, 32))
    reference = tmp_path / "reference"
    renames = count_renames(reference, source)
    assert renames >= 4 * EPOCHS
    expected = final_state(reference)
    assert expected["epochs"] == list(range(1, EPOCHS + 1)) and expected["versions"] == ["1"]
    for n in range(1, renames + 1):
        folder = tmp_path / f"kill{n}"
        killed = run(train_args(folder, source), strace=[
            "strace", "-f", "-qq", "-o", os.devnull, "-e", f"trace={','.join(RENAMES)}",
            "-e", f"inject={','.join(RENAMES)}:signal=KILL:when={n}"])
        assert killed.returncode in (-9, 137), (n, killed.returncode, killed.stderr[-1500:])
        resumed = run(train_args(folder, source))
        assert resumed.returncode == 0, (n, resumed.stderr[-2000:])
        state = final_state(folder)
        where = f"killed at rename {n} of {renames}"
        assert state["epochs"] == expected["epochs"], where
        assert state["versions"] == ["1"], where
        assert state["export_record"].endswith("mnist_aalp/1"), where
        assert state["temporaries"] == [], where
        assert state["weights"].keys() == expected["weights"].keys(), where
        for name, value in expected["weights"].items():
            np.testing.assert_array_equal(state["weights"][name], value, err_msg=where)
