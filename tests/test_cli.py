"""The commands as a user runs them: subprocesses, exit codes, one-line errors, kill -9 + resume."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.commands import (InOneProcess, Subprocesses, assert_one_line_error, command,
                                    in_process, without_root_powers)
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


def assert_refused_together(cases, *, cwd, prefix=(), env=None, own_processes=False):
    """Runs every case, name -> (command and flags, the one line it must print on stderr; `cwd`
    may be a callable of the name): in turn in one process (TensorFlow's start-up dominates
    each), or with `own_processes` each in a process of its own, started at once."""
    started = Subprocesses() if own_processes else InOneProcess()
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
                             "error: --val_attack_steps must be an integer >= 0 (0: --attack_steps); "
                             "received: -1"),
    }
    for name in cases:
        (tmp_path / name).mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    assert_refused_together(cases, cwd=lambda name: tmp_path / name, env=env, own_processes=True)
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
        "folder": ([*evaluate, "--output_file=a_folder"], "error: --output_file a_folder is a folder; "
                                                     "accepted: a file path, e.g. "
                                                     "a_folder/evaluation.json"),
        "locked": ([*evaluate, f"--output={folder}/e.json"],
                   f"error: --output_file's folder {folder} is not writable {denied(folder)}"),
    }, cwd=tmp_path, prefix=prefix)
    assert list((tmp_path / "a_folder").iterdir()) == []


def test_tune_and_analyze_refuse_unwritable_folders_first(tmp_path, mnist_dir, locked):
    folder, prefix = locked
    assert_refused_together({
        "tune": (["tune", "--dataset=mnist", f"--source_dir={mnist_dir}", "--epochs=1",
                  "--max_trials=1", *TINY_RUN, f"--model_dir={folder}/search"],
                 f"error: --model_dir {folder}/search is not writable {denied(folder)}"),
        "analyze": (["analyze", "--dataset=mnist", "--models=m:no_run",
                     f"--output_dir={folder}/a"],
                    f"error: --output_dir {folder}/a is not writable {denied(folder)}"),
    }, cwd=tmp_path, prefix=prefix)
    assert [p.name for p in tmp_path.iterdir()] == ["locked"]


KEY_FLAGS = {
    "train": ["--dataset", "--method", "--epsilon", "--epochs", "--model_dir", "--export_dir"],
    "evaluate": ["--model", "--dataset", "--attacks", "--restarts", "--checks", "--output_file",
                 "--imports"],
    "tune": ["--dataset", "--method", "--tuner", "--max_trials", "--alpha_range", "--objective"],
    "analyze": ["--models", "--dataset", "--what", "--output_dir", "--cam_layer", "--imports"],
    "export": ["--model_dir", "--epoch", "--export_dir", "--version", "--imports"],
    "serving": ["--server", "--model_name", "--images", "--rest", "--base_path"],
    "compare": ["--methods", "--seeds", "--baseline", "--attacks", "--output_dir", "--cell",
                "--epochs"],
}


def command_help(name: str) -> str:
    import importlib

    from aalp_tf.cli import runner
    module = importlib.import_module("aalp_tf.serving.__main__" if name == "serving"
                                     else f"aalp_tf.{name}")
    return runner.help_text(name, module.__doc__)


@pytest.mark.parametrize("name", sorted(KEY_FLAGS))
def test_help_lists_the_commands_own_flags_by_group(name):
    out = command_help(name)
    for flag in KEY_FLAGS[name]:
        assert f"\n  {flag}=" in out or f"\n  --[no]{flag[2:]} " in out, (flag, out)
    assert "(default: " in out and "--helpfull" in out
    groups = [line[:-1] for line in out.splitlines() if line.endswith(":") and " " not in line]
    assert groups and set(groups) <= {"data", "model", "method", "attack", "training",
                                      "distribution", "evaluation", "analysis", "tuning",
                                      "comparison", "serving", "output"}, groups
    assert "cli.py" not in out and "flags/<dataset>.cfg" not in out


def test_help_says_what_each_flag_means_for_that_command():
    """The texts issue 20 found wrong: a flag shared by commands shows this command's meaning."""
    export, compare, evaluate = (command_help(n) for n in ("export", "compare", "evaluate"))
    assert "  --export_dir=TEXT (default: the run's own)" in export
    assert "  --output_dir=TEXT (default: none: required; alias --out)" in compare
    assert "  --output_dir=TEXT (default: analysis; alias --out)" in command_help("analyze")
    assert "Seed of the attacks' random starts." in evaluate and "data order" not in evaluate
    assert "  --batch_size=N (default: the paper's for --dataset, else 128)" in evaluate
    words = " ".join(evaluate.split())  # as read, whatever the wrapping
    assert "The paper's: cifar10 128, mnist 50, svhn 128." in words
    assert "The paper's: cifar10 8/255, mnist 0.3, svhn 12/255." in words
    assert "serving predict" not in evaluate and "export:" not in evaluate
    assert "The version folder to write." in export and "ask the server" not in export
    assert "Accepted: bayesian, hyperband, random." in " ".join(command_help("tune").split())


def test_help_of_train_leaves_other_commands_flags_out(tmp_path, monkeypatch, capsys):
    # `python -m aalp_tf.train --help` run in this process: a subprocess spends its seconds
    # importing TensorFlow, and prints the same help (what only a real process shows is
    # test_a_bad_value_is_the_one_line_on_stderr_and_nothing_is_written's).
    from aalp_tf.train import main

    monkeypatch.chdir(tmp_path)
    result = in_process(main, "train", ["--help"], monkeypatch, capsys)
    out = result.stdout
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "--max_trials" not in out and "--attacks=" not in out and "--cam_layer" not in out
    assert out.index("\ndata:") < out.index("\nmodel:") < out.index("\nmethod:") < \
        out.index("\nattack:") < out.index("\ntraining:") < out.index("\noutput:")
    assert "  --epochs=N (default: the paper's for --dataset, else none)" in out
    assert "  --[no]deterministic (default: true)" in out


def parsed(command_name: str, *args: str):
    """The flags of `python -m aalp_tf.COMMAND ARGS` parsed as the command parses them, in this
    process; FLAGS are reset afterwards by the caller (fixture `flags_reset`)."""
    from aalp_tf.cli import runner
    return runner.parse_flags([command_name, *args], command=command_name)


@pytest.fixture
def flags_reset():
    from aalp_tf.cli import FLAGS
    yield FLAGS
    FLAGS.unparse_flags()


def test_the_papers_settings_fill_in_what_the_user_did_not_set(flags_reset):
    from aalp_tf.cli import configs
    parsed("train", "--dataset=cifar10", "--method=aalp", "--epochs=3")
    cfg = configs.config_from_flags()
    assert (cfg.attack.epsilon, cfg.attack.step_size, cfg.attack.steps) == (8 / 255, 2 / 255, 7)
    assert (cfg.train.learning_rate, cfg.data.batch_size, cfg.model.name) == (1e-5, 128,
                                                                              "resnet32")
    assert cfg.train.epochs == 3  # the command line wins
    assert not flags_reset["learning_rate"].present  # filled in, not given


def test_evaluate_and_analyze_measure_with_the_papers_attack(flags_reset):
    from aalp_tf.cli import configs
    parsed("evaluate", "--dataset=mnist", "--model=m")
    cfg = configs.eval_config_from_flags()
    assert (cfg.attack.epsilon, cfg.attack.step_size, cfg.data.batch_size) == (0.3, 0.01, 50)
    flags_reset.unparse_flags()
    parsed("analyze", "--dataset=svhn", "--models=a:run", "--step_size=1/255")
    cfg = configs.analysis_config_from_flags()
    assert (cfg.attack.epsilon, cfg.attack.step_size, cfg.attack.steps) == (12 / 255, 1 / 255, 10)


def test_a_flagfile_the_user_gives_wins_over_the_papers_settings(flags_reset):
    from aalp_tf.cli import configs
    parsed("train", "--dataset=mnist", f"--flagfile={REPO / 'flags/smoke.cfg'}")
    cfg = configs.config_from_flags()
    assert (cfg.train.epochs, cfg.train.learning_rate, cfg.data.batch_size) == (2, 1e-3, 64)
    assert (cfg.attack.epsilon, cfg.attack.step_size, cfg.attack.steps) == (0.3, 0.01, 3)


def test_compare_evaluates_with_the_papers_step_and_trains_with_the_flagfiles(flags_reset,
                                                                             tmp_path):
    from aalp_tf.cli import configs
    parsed("compare", "--dataset=mnist", f"--flagfile={REPO / 'flags/mnist_seeds.cfg'}",
           "--methods=alp,aalp", f"--out={tmp_path / 'study'}", f"--work_dir={tmp_path / 'w'}")
    cfg = configs.compare_config_from_flags()
    assert (cfg.eval_step_size, cfg.run.attack.step_size, cfg.run.attack.epsilon) == (
        0.01, 0.04, 0.3)
    assert (cfg.out, cfg.work_dir) == (str(tmp_path / "study"), str(tmp_path / "w"))  # aliases


@pytest.mark.parametrize("args,expected", [
    (["--epsilon=8/255", "--step_size=2/255"], (8 / 255, 2 / 255)),
    (["--epsilon=0.25", "--step_size=1e-2"], (0.25, 0.01)),
])
def test_epsilon_and_step_take_a_fraction(flags_reset, args, expected):
    parsed("evaluate", "--dataset=mnist", *args)
    assert (flags_reset.epsilon, flags_reset.step_size) == expected


@pytest.mark.parametrize("command_name,args", [
    ("export", ["--model_dir=r"]), ("analyze", ["--dataset=mnist", "--models=a:r"]),
    ("evaluate", ["--dataset=mnist", "--model=m"]), ("compare", ["--dataset=mnist"]),
    ("tune", ["--dataset=mnist"]), ("train", ["--dataset=mnist"]),
])
def test_every_command_that_reads_a_run_imports_the_users_modules_first(
        flags_reset, tmp_path, monkeypatch, command_name, args):
    """It used to be accepted and ignored by export and analyze."""
    name = f"users_methods_for_{command_name}"
    (tmp_path / f"{name}.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    parsed(command_name, *args, f"--imports={name}")
    assert name in sys.modules


def test_the_old_spellings_still_work(flags_reset):
    parsed("export", "--model_dir=r", "--checkpoint=3", "--name=n")
    assert (flags_reset.epoch, flags_reset.export_name) == (3, "n")
    flags_reset.unparse_flags()
    parsed("train", "--dataset=mnist", "--architecture=resnet9")
    assert flags_reset.backbone == "resnet9"


@pytest.mark.parametrize("module,args,expected", [
    ("evaluate", ["--dataset=mnist", "--model=m", "--attack_steps=40", "--epochs=3",
                  "--tuner=bayesian"],
     "error: flags of other commands do not apply to evaluate; received: --attack_steps=40 "
     "(train, tune, compare, analyze), --epochs=3 (train, tune, compare), --tuner=bayesian "
     "(tune); accepted: the flags `python -m aalp_tf.evaluate --help` lists"),
    ("compare", ["--dataset=mnist", "--methods=alp", "--out=o", "--method=aalp"],
     "error: flags of other commands do not apply to compare (each cell sets its own method, "
     "seed and folders: --methods, --seeds, --runs_dir; the evaluation's seed is --eval_seed);"
     " received: --method=aalp (train, tune); accepted: the flags `python -m aalp_tf.compare "
     "--help` lists"),
    ("train", ["--dataset=mnist", "--nochecks"],
     "error: flags of other commands do not apply to train; received: --nochecks (compare, "
     "evaluate); accepted:"),
    ("export", ["--model_dir=r", "--imports=nosuchmod"],
     "error: --imports: module 'nosuchmod' could not be imported (ModuleNotFoundError: No "
     "module named 'nosuchmod'); accepted: importable module names, e.g. my_project.methods"),
    ("evaluate", ["--dataset=mnist", "--epsilon=8/0"], "error: flag --epsilon=8/0: expected a "
                                                       "number or a fraction A/B such as 8/255; "
                                                       "received: 8/0"),
    ("tune", ["--dataset=mnist", "--tuner=grid"], "error: unknown tuner: received 'grid'; "
                                                 "accepted: bayesian, hyperband, random"),
])
def test_every_command_refuses_what_is_not_its_own_in_one_line(module, args, expected,
                                                               monkeypatch, capsys, tmp_path):
    import importlib
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(f"aalp_tf.{module}").main
    assert_one_line_error(in_process(main, module, args, monkeypatch, capsys), expected)
    assert list(tmp_path.iterdir()) == []


def test_train_then_evaluate_end_to_end(tmp_path, mnist_dir, monkeypatch, capsys):
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
                                "random_start": True, "warmup_epochs": 0.0, "norm": "linf",
                                "adversary": "pgd"}  # paper, then CLI
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
    data = tiny_arrays(256, 64)
    images = (data.x_test.astype("float32") / 255, data.y_test)
    same = dict(attacks=["clean", "fgsm", "pgd3", "cw3"], epsilon=0.3, step_size=0.01,
                batch_size=32)
    from_path = aalp_tf.evaluate_model(str(tmp_path / "saved_models/mnist_aalp/1"), images, **same)
    # The library also returns the adversarial images, per-example results and labels.
    per_example = ("adversarial", "correct", "labels")
    assert {k: v for k, v in from_path.items() if k not in per_example} == {
        k: v for k, v in record.items() if k not in ("model", "dataset", "wrong")}
    assert record["wrong"] == {name: [int(i) for i in (~ok).nonzero()[0]]
                               for name, ok in from_path["correct"].items()}
    model = runs.model_from_run(str(tmp_path / "runs/mnist_aalp")).model
    assert aalp_tf.evaluate_model(model, images, **same)["accuracy"] == record["accuracy"]

    # The bad ones in this process (a subprocess would spend its seconds importing TensorFlow):
    # a real process's exit status and lone error line are
    # test_a_bad_value_is_the_one_line_on_stderr_and_nothing_is_written's.
    from aalp_tf import evaluate
    monkeypatch.chdir(tmp_path)
    bad = in_process(evaluate.main, "evaluate", ["--model=saved_models/mnist_aalp",
                                                 "--dataset=mnist", f"--source_dir={mnist_dir}"],
                     monkeypatch, capsys)
    assert_one_line_error(bad, "error: --model saved_models/mnist_aalp is not a SavedModel "
                               "folder or a .keras file (it holds versions [1]: pass "
                               "saved_models/mnist_aalp/1)")
    bad = in_process(evaluate.main, "evaluate", ["--model=saved_models/mnist_aalp/1",
                                                 "--dataset=mnist", "--attacks=clean,pgd"],
                     monkeypatch, capsys)
    assert_one_line_error(bad, "error: unknown attack: received 'pgd'; accepted: aa-lite[<k>], "
                               "apgd-ce[<k>], apgd-t[<k>], autoattack, clean, cw<k>, fab-t[<k>], "
                               "fgsm, pgd<k>, square[<k>] (k = steps, e.g. pgd40; Square's "
                               "queries for square and aa-lite; autoattack is the standard "
                               "version and takes no count)")


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


def test_evaluate_a_foreign_keras_export_on_the_users_arrays(tmp_path, monkeypatch, capsys):
    import keras
    import numpy as np

    from aalp_tf import evaluate

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.export(str(tmp_path / "exported"))  # serving_default: keras_tensor -> output_0
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(10, 6, 6, 1)).astype("float32"), rng.integers(0, 3, 10)
    np.save(tmp_path / "x.npy", x), np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "y10.npy", np.arange(10)), np.save(tmp_path / "x8.npy", (x * 255).astype("uint8"))
    np.savez(tmp_path / "data.npz", images=x, labels=y)
    common = [f"--model={tmp_path / 'exported'}", "--epsilon=0.1", "--attacks=clean,fgsm,pgd2",
              "--nochecks", f"--output_file={tmp_path / 'out.json'}"]
    result = in_process(evaluate.main, "evaluate", [*common, f"--images={tmp_path / 'x.npy'}",
                        f"--labels={tmp_path / 'y.npy'}",
                        f"--save_adversarial={tmp_path / 'adv.npz'}"], monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    assert "step=0.025" in result.stdout  # no --dataset, no --step_size: epsilon / 4
    assert "WARNING: pgd2: 2 steps x step 0.025 = 0.05 < epsilon 0.1" in result.stdout
    saved = np.load(tmp_path / "adv.npz")
    np.testing.assert_array_equal(saved["labels"], y)
    assert saved["adversarial_fgsm"].shape == x.shape
    np.testing.assert_array_equal(saved["correct_fgsm"],
                                  model(saved["adversarial_fgsm"]).numpy().argmax(-1) == y)
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["wrong"]["clean"] == np.flatnonzero(model(x).numpy().argmax(-1) != y).tolist()
    same = in_process(evaluate.main, "evaluate", [*common, f"--data={tmp_path / 'data.npz'}"],
                      monkeypatch, capsys)
    assert json.loads((tmp_path / "out.json").read_text())["accuracy"] == record["accuracy"], same
    images, labels = f"--images={tmp_path / 'x.npy'}", f"--labels={tmp_path / 'y.npy'}"
    for args, start in (([images, f"--labels={tmp_path / 'y10.npy'}"], "error: --images "),
                        ([f"--images={tmp_path / 'x8.npy'}", labels], "error: --images "),
                        ([labels], "error: --images and --labels go together")):
        bad = in_process(evaluate.main, "evaluate", [*common, *args], monkeypatch, capsys)
        assert_one_line_error(bad, start)
        assert "3 logits" in bad.stderr or "y10" not in args[-1]
        assert "uint8" in bad.stderr or "x8" not in args[0]


def test_evaluate_takes_the_signature_keys_it_cannot_infer(tmp_path, monkeypatch, capsys):
    """A signature with two outputs: --output_key names the logits (evaluation.loading infers
    the keys when there is one of each: tests/test_loading.py)."""
    import numpy as np
    import tensorflow as tf

    from aalp_tf import evaluate

    module = tf.Module()
    module.weights = tf.Variable(np.random.default_rng(0).normal(size=(36, 3)), dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 6, 1])])
    def serve(pixels):
        logits = tf.reshape(pixels, [-1, 36]) @ module.weights
        return {"scores": logits, "probabilities": tf.nn.softmax(logits)}

    tf.saved_model.save(module, str(tmp_path / "two_outputs"), signatures={"serving_default": serve})
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "data.npz", images=rng.uniform(size=(8, 6, 6, 1)).astype("float32"),
             labels=rng.integers(0, 3, 8))
    common = [f"--model={tmp_path / 'two_outputs'}", f"--data={tmp_path / 'data.npz'}",
              "--epsilon=0.1", "--attacks=clean,fgsm", "--nochecks",
              f"--output_file={tmp_path / 'out.json'}"]
    bad = in_process(evaluate.main, "evaluate", common, monkeypatch, capsys)
    assert_one_line_error(bad, f"error: --model {tmp_path / 'two_outputs'}: serving_default has "
                               "outputs ['probabilities', 'scores']")
    assert "accepted: --output_key one of" in bad.stderr
    keyed = in_process(evaluate.main, "evaluate", [*common, "--input_key=pixels",
                                                   "--output_key=scores"], monkeypatch, capsys)
    assert keyed.returncode == 0, keyed.stderr
    assert set(json.loads((tmp_path / "out.json").read_text())["accuracy"]) == {"clean", "fgsm"}
    wrong = in_process(evaluate.main, "evaluate", [*common, "--output_key=logits"], monkeypatch,
                       capsys)
    assert_one_line_error(wrong, f"error: --model {tmp_path / 'two_outputs'}: serving_default "
                                 "has no output 'logits'; accepted: --output_key one of")
