"""A method of the user's own (the README's MART, `--imports=my_methods`) past training: every
command that reads a run (export, evaluate, analyze) or trains some (compare, tune) takes it, and
a command that reads such a run without the module says in one line to pass --imports.

The module is the README's own code block, written into the test's folder, so the README's
example stays tested.
"""
import json
import sys

import pytest

from aalp_tf.methods import METHODS
from tests.helpers.commands import Subprocesses, assert_one_line_error, in_process
from tests.helpers.readme import python_blocks
from tests.helpers.tiny import tiny_arrays, tiny_config

TINY_RUN = ["--train_examples=192", "--val_examples=64", "--test_examples=64", "--batch_size=64",
            "--width=4", "--attack_steps=2", "--learning_rate=1e-3", "--epochs=1"]
BUILT_IN = "aalp, aalp_gd, aalp_sw, alp, madry, natural, trades"


def write_my_methods(folder) -> None:
    (code,) = python_blocks("### Your own method")
    (folder / "my_methods.py").write_text(code)


def unknown_method(where) -> str:
    return (f"error: {where} was trained with the method 'mart', which nothing imported has "
            "registered; accepted: the module that registers it, imported first "
            "(--imports=MODULE; in Python, import it), or one trained with a built-in method: "
            f"{BUILT_IN}")


@pytest.fixture
def my_methods(tmp_path, monkeypatch):
    """my_methods.py importable from tmp_path; returns forget(), which unregisters MART and
    unimports the module, as a fresh process that has not imported it is. Both are undone
    after the test, so later tests see the built-in methods only."""
    write_my_methods(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    monkeypatch.delitem(sys.modules, "my_methods", raising=False)

    def forget():
        METHODS._items.pop("mart", None)
        sys.modules.pop("my_methods", None)

    return forget


def test_export_and_analyze_read_a_run_of_your_own_method_with_imports(
        tmp_path, my_methods, write_mnist, monkeypatch, capsys):
    """In this process: a subprocess would spend most of its time importing TensorFlow (the
    same commands as subprocesses, with train, evaluate, compare and tune: the slow test below).
    """
    from aalp_tf import analyze, export
    from aalp_tf.experiment.training import train

    import my_methods as _  # noqa: F401  registers mart, as train --imports=my_methods does
    run = tmp_path / "runs/mnist_mart"
    train(tiny_config(run, "mart"), arrays=tiny_arrays(64, 32), verbose=0)
    write_mnist(tmp_path / "mnist", splits=tiny_arrays(32, 32))
    monkeypatch.chdir(tmp_path)
    exporting = ["--model_dir=runs/mnist_mart", "--export_dir=exported"]
    analyzing = ["--dataset=mnist", "--source_dir=mnist", "--test_examples=32",
                 "--attack_steps=2", "--what=contributions,sets"]

    my_methods()  # a new process: nothing has registered mart
    assert_one_line_error(in_process(export.main, "export", exporting, monkeypatch, capsys),
                          unknown_method("runs/mnist_mart"))
    assert_one_line_error(in_process(analyze.main, "analyze", [
        *analyzing, "--models=mart:runs/mnist_mart", "--output_dir=refused"], monkeypatch,
        capsys), unknown_method("runs/mnist_mart"))
    assert not (tmp_path / "exported").exists()

    exported = in_process(export.main, "export", [*exporting, "--imports=my_methods"],
                          monkeypatch, capsys)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == "exported epoch 1 of runs/mnist_mart: exported/mnist_mart/1\n"
    assert (tmp_path / "exported/mnist_mart/1/saved_model.pb").is_file()

    my_methods()
    analyzed = in_process(analyze.main, "analyze", [
        *analyzing, "--imports=my_methods", "--output_dir=analysis",
        "--models=run:runs/mnist_mart,export:exported/mnist_mart/1"], monkeypatch, capsys)
    assert analyzed.returncode == 0, analyzed.stderr
    # Both rebuilt as MART models: the inner activations the contributions need are there.
    assert "run: run folder runs/mnist_mart (logits and inner activations)" in analyzed.stdout
    assert ("export: SavedModel exported/mnist_mart/1 (logits and inner activations)"
            in analyzed.stdout)
    assert "skipped" not in analyzed.stdout
    sets = json.loads((tmp_path / "analysis/sets.json").read_text())
    assert set(sets["sets"]) == {"run", "export"}
    assert (tmp_path / "analysis/contributions.png").is_file()

    # The export without the module: its logits still serve; the analyses needing the
    # rebuilt model skip it, saying why.
    my_methods()
    logits_only = in_process(analyze.main, "analyze", [
        *analyzing, "--output_dir=logits_only", "--models=export:exported/mnist_mart/1"],
        monkeypatch, capsys)
    assert logits_only.returncode == 0, logits_only.stderr
    assert (f"skipped contributions for export: {unknown_method('exported/mnist_mart/1')[7:]}"
            in logits_only.stdout)
    assert (tmp_path / "logits_only/sets.json").is_file()


@pytest.mark.slow  # about a minute of CPU: six commands, each importing TensorFlow
def test_your_own_method_in_every_command_as_a_user_runs_them(tmp_path, write_mnist):
    """train, then export, evaluate and analyze of its run; compare and tune train their own.
    Subprocesses in tmp_path, which `python -m` puts first on sys.path: my_methods imports
    from there, as from a user's project folder. Commands that do not read each other's files
    run at once: TensorFlow's start-up dominates each."""
    write_my_methods(tmp_path)
    write_mnist(tmp_path / "mnist", splits=tiny_arrays(256, 64))
    data = ["--dataset=mnist", "--source_dir=mnist"]
    mine = ["--imports=my_methods"]
    procs = Subprocesses()
    try:
        procs.start("train", ["-m", "aalp_tf.train", *data, *mine, "--method=mart", "--alpha=6",
                              *TINY_RUN], cwd=tmp_path)
        procs.start("compare", ["-m", "aalp_tf.compare", *data, *mine, "--methods=mart,alp",
                                "--seeds=0", *TINY_RUN, "--attacks=clean,pgd2", "--nochecks",
                                "--output_dir=study"], cwd=tmp_path)
        procs.start("tune", ["-m", "aalp_tf.tune", *data, *mine, "--method=mart",
                             "--max_trials=1", *TINY_RUN, "--model_dir=search",
                             "--export_dir=tuned"], cwd=tmp_path)
        code, out, err = procs.result("train")
        assert code == 0, err
        assert "exported SavedModel: saved_models/mnist_mart/1 " in out
        config = json.loads((tmp_path / "runs/mnist_mart/config.json").read_text())
        assert config["method"] == {"name": "mart", "alpha": 6.0, "trades_beta": 6.0,
                                    "guided_dropout": False}
        history = json.loads((tmp_path / "runs/mnist_mart/history.json").read_text())
        assert {"bce", "kl", "val_robust_accuracy"} <= set(history[0])

        procs.start("export", ["-m", "aalp_tf.export", "--model_dir=runs/mnist_mart", *mine,
                               "--export_dir=exported"], cwd=tmp_path)
        procs.start("evaluate", ["-m", "aalp_tf.evaluate", "--model=saved_models/mnist_mart/1",
                                 *data, "--test_examples=64", "--attacks=clean,pgd2",
                                 "--nochecks", "--output_file=evaluation.json"], cwd=tmp_path)
        procs.start("analyze", ["-m", "aalp_tf.analyze", *data, *mine,
                                "--models=mart:runs/mnist_mart", "--test_examples=32",
                                "--attack_steps=2", "--what=contributions,sets",
                                "--output_dir=analysis"], cwd=tmp_path)
        results = {name: procs.result(name) for name in ("compare", "tune", "export",
                                                         "evaluate", "analyze")}
    finally:
        procs.close()
    for name, (code, _, err) in results.items():
        assert code == 0, (name, err)
    assert results["export"][1] == ("exported epoch 1 of runs/mnist_mart: "
                                    "exported/mnist_mart/1\n")
    assert (tmp_path / "exported/mnist_mart/1/saved_model.pb").is_file()
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(evaluation["accuracy"]) == {"clean", "pgd2"} and evaluation["examples"] == 64
    assert "mart: run folder runs/mnist_mart (logits and inner activations)" in \
        results["analyze"][1]
    assert (tmp_path / "analysis/contributions.json").is_file()
    studied = [json.loads(line) for line in (tmp_path / "study/results.jsonl").read_text()
               .splitlines()]
    assert sorted(row["method"] for row in studied) == ["alp", "mart"]
    assert "2 of 2 cells finished" in results["compare"][1]
    trials = (tmp_path / "search/trials.csv").read_text().splitlines()
    assert len(trials) == 2 and trials[1].startswith("0,COMPLETED,"), trials
    assert "exported tuned/mnist_mart/1" in results["tune"][1]
    assert json.loads((tmp_path / "search/tuner/trial_0/run/config.json").read_text()
                      )["method"]["name"] == "mart"


def test_a_keras_file_of_your_own_method_without_imports_says_to_pass_them(
        tmp_path, my_methods, write_mnist, monkeypatch, capsys):
    from aalp_tf import evaluate
    from aalp_tf.data.datasets import DATASETS
    from aalp_tf.trainer import build_model

    import my_methods as _  # noqa: F401
    model = build_model(tiny_config(tmp_path / "run", "mart"), DATASETS.get("mnist"))
    model.save(tmp_path / "mart.keras")
    write_mnist(tmp_path / "mnist", splits=tiny_arrays(32, 32))
    monkeypatch.chdir(tmp_path)
    evaluating = ["--model=mart.keras", "--dataset=mnist", "--source_dir=mnist",
                  "--test_examples=32", "--attacks=clean"]

    my_methods()
    refused = in_process(evaluate.main, "evaluate", evaluating, monkeypatch, capsys)
    assert_one_line_error(refused, unknown_method("--model mart.keras"))
    assert not (tmp_path / "evaluation").exists()

    evaluated = in_process(evaluate.main, "evaluate", [*evaluating, "--imports=my_methods"],
                           monkeypatch, capsys)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "evaluation/mart.json").read_text())["accuracy"]["clean"] >= 0
