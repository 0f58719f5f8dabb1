"""The commands as a user runs them: subprocesses, exit codes, one-line errors, kill -9 + resume."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.commands import (Subprocesses, assert_one_line_error, command, in_process,
                                    without_root_powers)
from tests.helpers.dataset_files import write_mnist_files
from tests.helpers.tiny import tiny_arrays

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_RUN = ["--train_examples=192", "--val_examples=64", "--test_examples=64", "--batch_size=64",
            "--width=4", "--attack_steps=2", "--learning_rate=1e-3"]


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    write_mnist_files(folder, splits=tiny_arrays(256, 64))
    return folder


@pytest.mark.parametrize("args,expected", [
    (["--dataset=imagenet"], "error: unknown dataset: received 'imagenet'; accepted: cifar10, "
                             "mnist, svhn"),
    (["--dataset=mnist", "--method=alpp"], "error: unknown method: received 'alpp'; accepted: "
                                           "aalp, aalp_gd, aalp_sw, alp, madry, natural, trades"),
    (["--dataset=mnist", "--architecture=vgg"], "error: unknown model: received 'vgg'; accepted:"),
    (["--dataset=mnist", "--imports=no_such_module_here"], "error: --imports: module "
                                                          "'no_such_module_here' could not be "
                                                          "imported (ModuleNotFoundError"),
    (["--dataset=mnist", "--epsilon=3"], "error: --epsilon must be in (0, 1] (pixel units, e.g. "
                                         "0.3 or 8/255); received: 3.0"),
    (["--dataset=mnist", "--source_dir=/nonexistent"], "error: --source_dir /nonexistent"),
    (["--method=aalp"], "error: --dataset is not set; accepted: cifar10, mnist, svhn"),
    (["--dataset=mnist", "stray"], "error: unexpected arguments: stray"),
    (["--dataset=mnist", "--val_examples=0"], "error: --export_epoch=best picks the epoch by "
                                              "val_robust_accuracy, which needs a validation "
                                              "slice; received: --val_examples=0; accepted: "
                                              "--val_examples > 0, or --export_epoch=last"),
    (["--dataset=mnist", "--depth=34"], "error: depth applies to wide_resnet, not to lenet; "
                                        "received: depth=34"),
])
def test_train_rejects_bad_input_in_one_line(tmp_path, args, expected, monkeypatch, capsys):
    # In this process: a subprocess would spend its 7 s importing TensorFlow. What only a real
    # process shows (exit status, nothing of TensorFlow's on stderr first) is tested below.
    from aalp_tf.train import main

    monkeypatch.chdir(tmp_path)
    assert_one_line_error(in_process(main, "train", args, monkeypatch, capsys), expected)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("ckpt*"))


def assert_refused_together(cases, *, cwd, prefix=(), env=None):
    """Starts every case at once (TensorFlow's start-up dominates each): name -> (command and
    flags, the one line it must print on stderr; `cwd` may be a callable of the name)."""
    started = Subprocesses()
    try:
        for name, (argv, _) in cases.items():
            started.start(name, ["-m", f"aalp_tf.{argv[0]}", *argv[1:]], prefix=prefix, env=env,
                          cwd=cwd(name) if callable(cwd) else cwd)
        for name, (_, line) in cases.items():
            code, _, err = started.result(name)
            assert (code, err) == (2, line + "\n"), name
    finally:
        started.close()


def test_a_bad_value_is_the_one_line_on_stderr_and_nothing_is_written(tmp_path):
    """Each in its own empty folder, with TF_CPP_MIN_LOG_LEVEL unset as a user has it:
    TensorFlow's start-up notices do not come before the error either. (Every value of every
    command: tests/test_config.py.)"""
    cases = {
        "learning_rate": (["train", "--dataset=mnist", "--learning_rate=inf"],
                          "error: --learning_rate must be in (0, 1]; received: inf"),
        # It used to fail in the first validation, after config.json was written.
        "val_attack_steps": (["train", "--dataset=mnist", "--val_attack_steps=-1"],
                             "error: --val_attack_steps must be >= 0 (0: --attack_steps); "
                             "received: -1"),
    }
    for name in cases:
        (tmp_path / name).mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    assert_refused_together(cases, cwd=lambda name: tmp_path / name, env=env)
    assert [list((tmp_path / name).iterdir()) for name in cases] == [[], []]


@pytest.fixture
def locked(tmp_path):
    """A read-only folder, and the prefix that runs a command bound by it (root is not)."""
    prefix = without_root_powers()
    if prefix is None:
        pytest.skip("running as root without setpriv: root writes into read-only folders")
    folder = tmp_path / "locked"
    folder.mkdir()
    os.chmod(folder, 0o555)
    yield folder, prefix
    os.chmod(folder, 0o755)
    assert list(folder.iterdir()) == []


def denied(folder) -> str:
    return f"({folder}: permission denied); accepted: a folder this user may write into"


def test_train_refuses_unwritable_folders_before_training(tmp_path, mnist_dir, locked):
    folder, prefix = locked
    train = ["train", "--dataset=mnist", f"--source_dir={mnist_dir}", "--epochs=1", *TINY_RUN]
    assert_refused_together({
        "model_dir": ([*train, f"--model_dir={folder}/run"],
                      f"error: --model_dir {folder}/run is not writable {denied(folder)}"),
        # It was a PermissionError after the whole run had trained.
        "export_dir": ([*train, "--model_dir=run", f"--export_dir={folder}"],
                       f"error: --export_dir {folder}/mnist_aalp is not writable "
                       f"{denied(folder)}"),
    }, cwd=tmp_path, prefix=prefix)
    assert [p.name for p in tmp_path.iterdir()] == ["locked"]


def test_evaluate_refuses_an_output_it_could_not_write_before_evaluating(tmp_path, locked):
    folder, prefix = locked
    (tmp_path / "a_folder").mkdir()
    evaluate = ["evaluate", "--dataset=mnist", "--model=m"]  # checked before the model is read
    assert_refused_together({
        # It was an IsADirectoryError after the whole evaluation had run.
        "folder": ([*evaluate, "--output=a_folder"], "error: --output a_folder is a folder; "
                                                     "accepted: a file path, e.g. "
                                                     "a_folder/evaluation.json"),
        "locked": ([*evaluate, f"--output={folder}/e.json"],
                   f"error: --output's folder {folder} is not writable {denied(folder)}"),
    }, cwd=tmp_path, prefix=prefix)
    assert list((tmp_path / "a_folder").iterdir()) == []


def test_tune_and_analyze_refuse_unwritable_folders_first(tmp_path, mnist_dir, locked):
    folder, prefix = locked
    assert_refused_together({
        "tune": (["tune", "--dataset=mnist", f"--source_dir={mnist_dir}", "--epochs=1",
                  "--max_trials=1", *TINY_RUN, f"--model_dir={folder}/search"],
                 f"error: --model_dir {folder}/search is not writable {denied(folder)}"),
        "analyze": (["analyze", "--dataset=mnist", "--models=m:no_run", f"--out={folder}/a"],
                    f"error: --out {folder}/a is not writable {denied(folder)}"),
    }, cwd=tmp_path, prefix=prefix)
    assert [p.name for p in tmp_path.iterdir()] == ["locked"]


def test_only_tensorflows_load_notices_are_held_back(capfd):
    """What the commands drop from stderr while TensorFlow loads; a real error still prints."""
    from aalp_tf import cli

    notices = [b"WARNING: All log messages before absl::InitializeLog() is called are written to "
               b"STDERR\n",
               b"I0000 00:00:17.5 27660 port.cc:153] oneDNN custom operations are on. You may see "
               b"slightly different numerical results\n",
               b"I0000 00:00:17.6 27660 cudart_stub.cc:31] Could not find cuda drivers on your "
               b"machine, GPU will not be used.\n"]
    cuinit = (b"E0000 00:00:17.8 27660 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
              b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
    genuine = b"E0000 00:00:17.9 27660 kernel.cc:10] Resource exhausted: OOM\n"
    with cli.stderr_without(cli.load_notice_filter()):
        # cuInit's failure is a real error while no notice has said there is no driver
        for line in [cuinit, *notices, cuinit, genuine, b"no newline at the end"]:
            os.write(2, line)
    assert capfd.readouterr().err == (cuinit + genuine + b"no newline at the end").decode()


KEY_FLAGS = {
    "train": ["--dataset", "--method", "--epsilon", "--epochs", "--model_dir", "--export_dir"],
    "evaluate": ["--model", "--dataset", "--attacks", "--restarts", "--checks", "--output"],
    "tune": ["--dataset", "--method", "--tuner", "--max_trials", "--alpha_range", "--objective"],
    "analyze": ["--models", "--dataset", "--what", "--out", "--cam_layer"],
    "export": ["--model_dir", "--checkpoint", "--export_dir", "--version"],
    "serving": ["--server", "--model", "--images", "--rest", "--base_path"],
    "compare": ["--methods", "--seeds", "--baseline", "--attacks", "--out", "--cell", "--epochs"],
}


@pytest.mark.parametrize("name", sorted(KEY_FLAGS))
def test_help_lists_the_commands_own_flags_by_group_without_tensorflow(tmp_path, name):
    module = "serving" if name == "serving" else name
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", f"aalp_tf.{module}",
                             "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for flag in KEY_FLAGS[name]:
        assert f"\n  {flag}=" in out or f"\n  --[no]{flag[2:]} " in out, (flag, out)
    assert "(default: " in out and "--helpfull" in out
    groups = [line[:-1] for line in out.splitlines() if line.endswith(":") and " " not in line]
    assert groups and set(groups) <= {"data", "model", "method", "attack", "training",
                                      "distribution", "evaluation", "analysis", "tuning",
                                      "comparison", "serving", "output"}, groups
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")]
    assert imported and not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")]


def test_help_of_train_leaves_other_commands_flags_out(tmp_path):
    out = command("train", "--help", cwd=tmp_path).stdout
    assert "--max_trials" not in out and "--attacks=" not in out and "--cam_layer" not in out
    assert out.index("\ndata:") < out.index("\nmodel:") < out.index("\nmethod:") < \
        out.index("\nattack:") < out.index("\ntraining:") < out.index("\noutput:")
    assert "  --epochs=N (default: none)" in out
    assert "  --[no]deterministic (default: true)" in out


def test_the_help_lists_of_names_are_the_registries(tmp_path):
    from aalp_tf import cli
    from aalp_tf.data.datasets import DATASETS
    from aalp_tf.methods import METHODS
    from aalp_tf.models import BACKBONES
    from aalp_tf.serving.saved_model import SIGNATURES
    from aalp_tf.tuning.search_space import OBJECTIVES
    from aalp_tf.tuning.tuners import TUNERS
    registries = {"dataset": DATASETS, "method": METHODS, "architecture": BACKBONES,
                  "tuner": TUNERS, "objective": OBJECTIVES, "signature": SIGNATURES}
    assert {k: tuple(r.names()) for k, r in registries.items()} == cli.BUILTIN_NAMES


def test_train_then_evaluate_end_to_end(tmp_path, mnist_dir):
    trained = command("train", "--dataset=mnist", "--method=aalp", f"--source_dir={mnist_dir}",
                      "--epochs=1", *TINY_RUN, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "exported SavedModel: saved_models/mnist_aalp/1" in trained.stdout
    # stdout is a pipe here: plain lines, one per epoch, no progress bar's control characters
    assert not any(c in trained.stdout for c in "\r\b\x1b"), repr(trained.stdout[:300])
    epoch_lines = [line for line in trained.stdout.splitlines() if " - val_robust_accuracy: " in line]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("3/3 - "), trained.stdout
    config = json.loads((tmp_path / "runs/mnist_aalp/config.json").read_text())
    assert config["attack"] == {"epsilon": 0.3, "step_size": 0.01, "steps": 2,
                                "random_start": True, "warmup_epochs": 0.0}  # flagfile, then CLI
    assert config["model"]["name"] == "lenet"

    evaluated = command("evaluate", "--model=saved_models/mnist_aalp/1", "--dataset=mnist",
                        f"--source_dir={mnist_dir}", "--attacks=clean,fgsm,pgd3,cw3",
                        "--batch_size=32", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "| model | clean | fgsm | pgd3 | cw3 |" in evaluated.stdout
    assert not any(c in evaluated.stdout for c in "\r\b\x1b")
    progress = [line for line in evaluated.stdout.splitlines() if line.startswith("batch ")]
    assert [line.split(" (")[0] for line in progress] == ["batch 1/2", "batch 2/2"], progress
    assert progress[1].startswith("batch 2/2 (64 examples, ") and "pgd3 " in progress[1]
    record = json.loads((tmp_path / "evaluation/mnist_aalp-1.json").read_text())
    assert record["examples"] == 64 and record["epsilon"] == 0.3
    assert set(record["accuracy"]) == {"clean", "fgsm", "pgd3", "cw3"}
    assert all(0.0 <= v <= 1.0 for v in record["accuracy"].values())
    assert record["accuracy"]["pgd3"] <= record["accuracy"]["clean"]
    assert "sanity checks on the first 64 test images:" in evaluated.stdout  # --checks is on
    assert record["checks"]["examples"] == 64 and len(record["checks"]["results"]) == 7

    prefix = without_root_powers()
    if prefix is not None:  # the finished run, read-only: refused before anything, not a trace
        run = tmp_path / "runs/mnist_aalp"
        folders = [run, *(p for p in run.rglob("*") if p.is_dir())]
        for folder in folders:
            os.chmod(folder, 0o555)
        try:
            again = command("train", "--dataset=mnist", "--method=aalp",
                            f"--source_dir={mnist_dir}", "--epochs=1", *TINY_RUN, cwd=tmp_path,
                            prefix=prefix)
        finally:
            for folder in folders:
                os.chmod(folder, 0o755)
        assert (again.returncode, again.stderr) == (2, (
            "error: --model_dir runs/mnist_aalp is not writable (runs/mnist_aalp: permission "
            "denied); accepted: a folder this user may write into\n"))

    # The library's evaluation is the command's: same numbers and checks on the same images,
    # from the SavedModel and from the Keras model of the run.
    import aalp_tf
    from aalp_tf import runs
    from aalp_tf.data.datasets import DATASETS
    data = tiny_arrays(256, 64)
    images = (data.x_test.astype("float32") / 255, data.y_test)
    same = dict(attacks=["clean", "fgsm", "pgd3", "cw3"], epsilon=0.3, step_size=0.01,
                batch_size=32)
    from_path = aalp_tf.evaluate(str(tmp_path / "saved_models/mnist_aalp/1"), images, **same)
    assert from_path == {k: v for k, v in record.items() if k not in ("model", "dataset")}
    model = runs.model_from_run(str(tmp_path / "runs/mnist_aalp"), datasets=DATASETS).model
    assert aalp_tf.evaluate(model, images, **same)["accuracy"] == record["accuracy"]

    bad = command("evaluate", "--model=saved_models/mnist_aalp", "--dataset=mnist",
                  f"--source_dir={mnist_dir}", cwd=tmp_path)
    assert_one_line_error(bad, "error: --model saved_models/mnist_aalp is not a SavedModel "
                               "folder (it holds versions [1]: pass saved_models/mnist_aalp/1)")
    bad = command("evaluate", "--model=saved_models/mnist_aalp/1", "--dataset=mnist",
                  "--attacks=clean,pgd", cwd=tmp_path)
    assert_one_line_error(bad, "error: unknown attack: received 'pgd'; accepted: apgd-ce[<k>], "
                               "apgd-t[<k>], autoattack[<k>], clean, cw<k>, fgsm, pgd<k>, "
                               "square[<k>] (k = steps, e.g. pgd40; Square's queries for square "
                               "and autoattack)")


@pytest.mark.slow  # ~25 s; tests/test_crash_safety.py (slow too) kills at every write
def test_kill_9_mid_run_then_the_same_command_finishes_at_the_right_epoch(tmp_path, mnist_dir):
    args = ["-m", "aalp_tf.train", "--dataset=mnist", "--method=alp", f"--source_dir={mnist_dir}",
            "--epochs=3", *TINY_RUN]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    history = tmp_path / "runs/mnist_alp/history.json"
    proc = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not history.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert history.exists(), "no epoch finished in time"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    done = len(json.loads(history.read_text()))
    assert 1 <= done <= 3

    resumed = command("train", *args[2:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    if done < 3:
        assert f"resuming runs/mnist_alp after epoch {done} of 3" in resumed.stdout
    assert [h["epoch"] for h in json.loads(history.read_text())] == [1, 2, 3]


@pytest.mark.slow  # ~30 s on 2 shared cores; test_api covers the method in-process
def test_a_method_of_your_own_trains_from_the_command_line(tmp_path, mnist_dir):
    """The README's MART, imported with --imports: `import aalp_tf` inside a command."""
    from tests.helpers.readme import python_blocks
    (code,) = python_blocks("### Your own method")
    (tmp_path / "my_methods.py").write_text(code)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}", TF_CPP_MIN_LOG_LEVEL="3")
    trained = subprocess.run(
        [sys.executable, "-m", "aalp_tf.train", "--dataset=mnist", "--imports=my_methods",
         "--method=mart", "--alpha=6", f"--source_dir={mnist_dir}", "--epochs=1", *TINY_RUN],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert trained.returncode == 0, trained.stderr
    assert "exported SavedModel: saved_models/mnist_mart/1 " in trained.stdout
    config = json.loads((tmp_path / "runs/mnist_mart/config.json").read_text())
    assert config["method"] == {"name": "mart", "alpha": 6.0, "trades_beta": 6.0,
                                "guided_dropout": False}
    history = json.loads((tmp_path / "runs/mnist_mart/history.json").read_text())
    assert {"bce", "kl", "val_robust_accuracy"} <= set(history[0])
