"""KerasTuner search over the one training path: scoring, reload, resume, failures, distribution."""
import contextlib
import csv
import dataclasses
import io
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from aalp_tf.tuning import report, tuners
from aalp_tf.config import AttackConfig
from aalp_tf.tuning.config import TuneConfig
from aalp_tf.errors import UsageError
from aalp_tf.evaluation.loading import load_serving_logits
from aalp_tf.experiment.training import train
from aalp_tf.tuning.search_space import trial_config
from tests.helpers.dataset_files import write_mnist_files
from tests.helpers.tiny import tiny_arrays, tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
ARRAYS = tiny_arrays(160, 32)  # 128 train (4 steps of 32) + 32 validation


def tiny_search(folder, **search_args) -> TuneConfig:
    """Two trials of a width-4 LeNet, one epoch each, 2-step PGD with a small ε.

    (lr 1e-2 and ε 0.05: one epoch on 128 tiny examples then leaves clean and robust
    accuracy strictly between 0 and 1, so the metrics compared below are not trivially 0.)
    """
    run = tiny_config(folder, "aalp")
    run = run.replace(attack=AttackConfig(epsilon=0.05, step_size=0.025, steps=2),
                      train=dataclasses.replace(run.train, learning_rate=1e-2))
    return TuneConfig(run=run, max_trials=2, **search_args)


def history(run_dir) -> list:
    return json.loads((pathlib.Path(run_dir) / "history.json").read_text())


class InterruptSecondTraining(keras.callbacks.Callback):
    """Ctrl-C in the first batch of the second trial (KerasTuner deep-copies callbacks, hence
    the count on the class)."""

    trainings = 0

    def on_train_begin(self, logs=None):
        type(self).trainings += 1

    def on_train_batch_end(self, batch, logs=None):
        if type(self).trainings == 2:
            raise KeyboardInterrupt


def run_quietly(cfg, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return tuners.search(cfg, arrays=ARRAYS, progress=0, **kwargs), out.getvalue()
        except KeyboardInterrupt:
            return None, out.getvalue()


@pytest.fixture(scope="module")
def resumed_search(tmp_path_factory):
    """A 2-trial search interrupted in its second trial, then run again to the end."""
    cfg = tiny_search(tmp_path_factory.mktemp("tune") / "search")
    folder = tuners.SearchFolder(cfg.run.train.model_dir)
    interrupted, first_out = run_quietly(cfg, callbacks=[InterruptSecondTraining()])
    first_checkpoint = folder.trial_run("0") / "checkpoints" / "ckpt-1.index"
    stamp = first_checkpoint.stat().st_mtime_ns
    result, second_out = run_quietly(cfg)
    return dict(cfg=cfg, folder=folder, interrupted=interrupted, first_out=first_out,
                second_out=second_out, result=result, first_checkpoint=first_checkpoint,
                stamp=stamp)


@pytest.mark.parametrize("clean,robust,expected", [
    (0.9, 0.5, 2 * 0.9 * 0.5 / 1.4), (0.8, 0.8, 0.8), (0.9, 0.0, 0.0), (0.0, 0.0, 0.0)])
def test_the_tradeoff_objective_is_the_harmonic_mean(clean, robust, expected):
    """2·c·r / (c + r): high only when both accuracies are, 0 when either is."""
    from aalp_tf.tuning.search_space import OBJECTIVES
    tradeoff = OBJECTIVES.get("tradeoff")
    value = tradeoff.value({"val_clean_accuracy": clean, "val_robust_accuracy": robust})
    assert (tradeoff.metric, type(value)) == ("val_tradeoff", float)
    assert value == pytest.approx(expected, abs=1e-12)


def test_an_interrupted_search_resumes_without_repeating_finished_trials(resumed_search):
    s = resumed_search
    assert s["interrupted"] is None  # Ctrl-C went through KerasTuner, not swallowed
    assert re.findall(r"trial (\d) started", s["first_out"]) == ["0", "1"]
    assert re.findall(r"trial (\d) COMPLETED", s["first_out"]) == ["0"]
    assert re.findall(r"trial (\d) started", s["second_out"]) == ["1"]
    assert [(r["trial"], r["status"]) for r in s["result"].rows] == [("0", "COMPLETED"),
                                                                     ("1", "COMPLETED")]
    assert s["first_checkpoint"].stat().st_mtime_ns == s["stamp"]
    assert [h["epoch"] for h in history(s["folder"].trial_run("0"))] == [1]


def test_trials_are_scored_by_our_validation_metric_and_tabulated(resumed_search):
    rows, folder = resumed_search["result"].rows, resumed_search["folder"]
    alphas = [row["alpha"] for row in rows]
    assert len(set(alphas)) == 2 and all(0.1 <= a <= 10 for a in alphas)
    for row in rows:
        last = history(folder.trial_run(row["trial"]))[-1]
        assert row["objective"] == pytest.approx(last["val_robust_accuracy"], abs=1e-6)
        assert row["val_clean_accuracy"] == pytest.approx(last["val_clean_accuracy"], abs=1e-6)
        # The trial's run folder holds the very config `trial_config` makes of its values.
        run_cfg = json.loads((folder.trial_run(row["trial"]) / "config.json").read_text())
        assert run_cfg["method"]["alpha"] == row["alpha"]
    assert 0 < max(row["val_robust_accuracy"] for row in rows) < 1
    with open(folder.trials_csv) as f:
        written = list(csv.DictReader(f))
    assert tuple(written[0]) == report.COLUMNS
    assert [(w["trial"], w["status"], float(w["alpha"])) for w in written] == [
        (r["trial"], r["status"], r["alpha"]) for r in rows]
    assert folder.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_trial_trains_as_the_trainer_does(resumed_search, tmp_path):
    """The interrupted, re-run trial computes exactly what `train` computes with its values."""
    cfg, folder = resumed_search["cfg"], resumed_search["folder"]
    row = resumed_search["result"].rows[1]
    direct = train(trial_config(cfg, {"alpha": row["alpha"]}, model_dir=str(tmp_path / "run")),
                   arrays=ARRAYS, verbose=0, export_model=False)
    assert direct.history == history(folder.trial_run("1"))


def test_the_best_trial_reloads_into_the_exported_model(resumed_search):
    result, folder = resumed_search["result"], resumed_search["folder"]
    best = report.best_row(result.rows)
    assert result.best["trial"] == best["trial"]
    assert json.loads(folder.best.read_text()) == result.best
    model = result.tuner.get_best_models(1)[0]
    logits_fn, _ = load_serving_logits(result.best["export"])
    x = tf.constant(ARRAYS.x_test / 255.0, tf.float32)
    np.testing.assert_allclose(logits_fn(x), model(x), atol=1e-5)
    assert model.method_config.alpha == best["alpha"]
    assert result.tuner.get_best_hyperparameters()[0].values["alpha"] == best["alpha"]


def test_a_failing_trial_is_reported_not_swallowed(tmp_path, capsys):
    # The config refuses such a range when built; set it behind the check, so that every trial
    # fails inside (keep must be <= 1) as any trial-time error would.
    cfg = tiny_search(tmp_path / "search", keep_fraction_range=(0.25, 0.75))
    object.__setattr__(cfg, "keep_fraction_range", (1.5, 2.0))
    result = tuners.search(cfg, arrays=ARRAYS, progress=0)
    err = capsys.readouterr().err
    assert [row["status"] for row in result.rows] == ["FAILED", "FAILED"]
    for row in result.rows:
        expected = ("aalp_tf.rules.SettingError: --keep_fraction must be in (0, 1]; received: "
                    f"{row['keep_fraction']}")
        assert 1.5 <= row["keep_fraction"] <= 2.0
        assert row["message"] == expected
        assert f"trial {row['trial']} FAILED in " in err and expected in err
    with open(tuners.SearchFolder(cfg.run.train.model_dir).trials_csv) as f:
        assert [w["status"] for w in csv.DictReader(f)] == ["FAILED", "FAILED"]
    assert result.best is None


def test_a_missing_tensorboard_fails_before_any_trial(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams.api", None)
    cfg = tiny_search(tmp_path / "search")
    with pytest.raises(UsageError, match=r"^KerasTuner needs tensorboard in every trial, and it "
                                         r"does not import \(.*\); accepted: pip install "
                                         r"tensorboard$"):
        tuners.search(cfg, arrays=ARRAYS, progress=0)
    assert not (tmp_path / "search").exists()


@pytest.mark.parametrize("change,expected", [
    (dict(alpha_range=(0.0, 1.0)), "--alpha_range must be LOW,HIGH with 0 < LOW < HIGH; "
                                    "received: (0.0, 1.0)"),
    (dict(keep_fraction_range=(0.5, 1.5)), "--keep_fraction_range must be LOW,HIGH with "
                                           "0 < LOW < HIGH <= 1.0; received: (0.5, 1.5)"),
    (dict(max_trials=0), "--max_trials must be an integer >= 1; received: 0"),
])
def test_bad_search_settings_are_refused_in_one_line(tmp_path, change, expected):
    with pytest.raises(UsageError) as err:
        dataclasses.replace(tiny_search(tmp_path), **change)
    assert str(err.value) == expected


def test_a_search_without_alpha_or_with_other_settings_is_refused(tmp_path):
    madry = tiny_search(tmp_path / "m")
    madry = dataclasses.replace(madry, run=madry.run.replace(
        method=dataclasses.replace(madry.run.method, name="madry")))
    with pytest.raises(UsageError) as err:
        tuners.search(madry, arrays=ARRAYS)
    assert str(err.value) == ("--method=madry has no α to tune; accepted: aalp, aalp_gd, "
                              "aalp_sw, alp")
    cfg = tiny_search(tmp_path / "search")
    tuners.SearchFolder(cfg.run.train.model_dir).write_config(cfg)
    with pytest.raises(UsageError) as err:
        tuners.search(dataclasses.replace(cfg, alpha_range=(0.5, 2.0)), arrays=ARRAYS)
    assert str(err.value) == (f"--model_dir {tmp_path / 'search'} holds a search with other "
                              "settings (alpha_range: [0.1, 10.0] -> [0.5, 2.0]); accepted: the "
                              "same settings to resume it (--max_trials may grow), or a new "
                              "--model_dir")


# ---- the command, alone and distributed ---------------------------------------------------

TINY_RUN = ["--dataset=mnist", "--method=aalp", "--epochs=1", "--train_examples=128",
            "--val_examples=64", "--batch_size=64", "--width=4", "--attack_steps=2",
            "--epsilon=0.05", "--step_size=0.025", "--learning_rate=1e-2"]


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    write_mnist_files(folder, splits=tiny_arrays(256, 64))
    return folder


def start(args, *, cwd, log, env=()):
    full_env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **dict(env))
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "aalp_tf.tune", *args], cwd=cwd,
                                env=full_env, stdout=out, stderr=subprocess.STDOUT, text=True)


def finish(processes, seconds):
    """Waits for every process until one deadline; ends any still running by its PID."""
    deadline = time.monotonic() + seconds
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def test_the_command_exits_nonzero_when_every_trial_failed(tmp_path, mnist_dir, capsys):
    """In-process (a subprocess would spend most of its time importing TensorFlow)."""
    from aalp_tf import tune
    from aalp_tf.cli import FLAGS

    FLAGS(["tune", *TINY_RUN, f"--source_dir={mnist_dir}", "--max_trials=1",
           "--batch_size=1000", f"--model_dir={tmp_path / 'search'}"])
    try:
        with pytest.raises(SystemExit) as exit_status:
            tune.main(["tune"])
    finally:
        FLAGS.unparse_flags()
    assert exit_status.value.code == 1
    err = capsys.readouterr().err
    reason = "--batch_size=1000 exceeds the 128 training examples; accepted: 1..128"
    assert "trial 0 FAILED in " in err and reason in err
    assert "error: no trial completed (1 failed: 0)" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Slow: three processes of `python -m aalp_tf.tune` (~25 CPU-s, mostly TensorFlow's import in
# each); the search in one process (trials, resume, scoring, reload) is tested above.
@pytest.mark.slow
def test_a_chief_and_two_workers_share_a_search(tmp_path, mnist_dir):
    args = [*TINY_RUN, f"--source_dir={mnist_dir}", "--max_trials=2", "--noexport_best",
            f"--model_dir={tmp_path / 'search'}"]
    oracle = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    names = ["chief", "worker0", "worker1"]
    processes = [start(args, cwd=tmp_path, log=tmp_path / f"{name}.log",
                       env=dict(oracle, KERASTUNER_TUNER_ID=name)) for name in names]
    codes = finish(processes, 300)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in names}
    assert codes == [0, 0, 0], logs
    ran = {name: re.findall(r"trial (\d) started by " + name, logs[name]) for name in names[1:]}
    assert sorted(ran["worker0"] + ran["worker1"]) == ["0", "1"], ran  # each trial once ...
    assert all(ran.values()), ran  # ... and both workers ran one
    folder = tuners.SearchFolder(str(tmp_path / "search"))
    with open(folder.trials_csv) as f:
        assert [(w["trial"], w["status"]) for w in csv.DictReader(f)] == [
            (str(i), "COMPLETED") for i in range(2)]
    for i in range(2):
        assert [h["epoch"] for h in history(folder.trial_run(str(i)))] == [1]


def test_a_trial_is_scored_and_reloaded_at_the_epoch_it_exports(overfit_run):
    """The fixture's run is trial 0 of a search, finished, its best epoch not its last."""
    import types

    import keras_tuner
    from aalp_tf.tuning.search_space import OBJECTIVES
    search, cfg, result = overfit_run
    hypermodel = tuners.AdversarialHyperModel(search, ARRAYS)
    hp = keras_tuner.HyperParameters()  # declares alpha at its default, the run's 1.0
    logs = hypermodel.fit(hp, hypermodel.build(hp), run_dir=cfg.train.model_dir, progress=0)
    exported = result.export_logs
    assert result.export_epoch < 3
    assert logs["val_robust_accuracy"] == exported["val_robust_accuracy"] != \
        result.history[-1]["val_robust_accuracy"]
    assert logs[OBJECTIVES.get("robust").metric] == exported["val_robust_accuracy"]

    tuner = types.SimpleNamespace(project_dir=str(pathlib.Path(cfg.train.model_dir).parents[1]))
    model = tuners.TrialsInRunFolders.load_model(tuner, types.SimpleNamespace(trial_id="0"))
    x = tf.constant(ARRAYS.x_test / 255.0, tf.float32)
    np.testing.assert_allclose(model(x), result.model(x), atol=1e-6)
