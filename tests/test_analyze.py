"""The training probe's records, and `analyze` over run folders and SavedModels end to end."""
import json
import shutil

import numpy as np
import pytest

from aalp_tf.analysis import model_sources, probes, quantities, training_probe
from aalp_tf.analysis.runner import run_all
from aalp_tf.analysis.config import AnalysisConfig
from aalp_tf.config import AttackConfig, DataConfig
from aalp_tf.data.datasets import DATASETS
from aalp_tf.errors import UsageError
from aalp_tf.experiment.training import train
from tests.helpers.dataset_files import write_mnist_files
from tests.helpers.commands import assert_one_line_error, in_process
from tests.helpers.images import assert_sensible_png
from tests.helpers.tiny import tiny_arrays, tiny_config

ARRAYS = tiny_arrays(160, 32)  # 128 train + 32 validation; 32 test
PROBE = 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch natural run with --analysis_probe=16, and its SavedModel."""
    root = tmp_path_factory.mktemp("analyze")
    cfg = tiny_config(root / "run", "natural", epochs=2, train_args={"analysis_probe": PROBE})
    return cfg, train(cfg, arrays=ARRAYS, verbose=0)


def test_the_probe_writes_one_record_per_epoch_of_what_the_model_computes(trained):
    cfg, result = trained
    records = training_probe.read_records(result.run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert sorted(p.name for p in (result.run_dir / "analysis").iterdir()) == [
        "epoch_0001.json", "epoch_0002.json"]
    last = records[-1]
    assert (last["source"], last["examples"]) == ("validation", PROBE)
    assert len(last["contribution"]) == 128  # width-4 LeNet: 32·4 features
    # The probe is the first 16 validation examples (the tail of the training split), attacked
    # with the validation PGD seeded by seed + 2: recomputing it on the final model agrees.
    x = ARRAYS.x_train[128:128 + PROBE] / 255.0
    y = ARRAYS.y_train[128:128 + PROBE]
    adv = probes.adversarial_examples(result.model.inference_logits, x, y, attack=cfg.attack,
                                      seed=cfg.train.seed + 2)
    again = probes.measures(result.model.inference_logits, x, adv, y)
    for name in ("p_clean", "p_adv", "alp", "clean_correct", "adv_correct"):
        np.testing.assert_allclose(last["measures"][name], again[name], atol=1e-5)
    c = quantities.contribution(feature_gradients=probes.feature_gradients(result.model, adv, y))
    np.testing.assert_allclose(last["contribution"], c, rtol=1e-4, atol=1e-8)


def test_a_run_with_the_probe_trains_exactly_as_one_without(trained, tmp_path):
    _, with_probe = trained
    plain = train(tiny_config(tmp_path / "plain", "natural", epochs=2), arrays=ARRAYS,
                  verbose=0, export_model=False)
    assert plain.history == with_probe.history
    assert not (tmp_path / "plain" / "analysis").exists()


def test_analyze_writes_every_figure_and_table(trained, tmp_path, capsys):
    cfg, result = trained
    mnist = tmp_path / "mnist"
    write_mnist_files(mnist, splits=ARRAYS)
    bare = tmp_path / "bare_run"  # the same run without analysis/: from its checkpoints
    shutil.copytree(result.run_dir, bare, ignore=shutil.ignore_patterns("analysis"))
    out = tmp_path / "out"
    written = run_all(AnalysisConfig(
        models=(("probed", str(result.run_dir)), ("bare", str(bare)),
                ("export", str(result.export_path))),
        out=str(out), data=DataConfig(dataset="mnist", source_dir=str(mnist), batch_size=32),
        attack=AttackConfig(epsilon=0.3, step_size=0.1, steps=2), cam_images=3))
    printed = capsys.readouterr().out
    figures = ["contributions.png", "gradcam.png", "scatter.png", "training_contributions.png",
               "training_curves.png", "training_set_alp.png"]
    data = ["contributions.json", "gradcam.json", "sets.json", "sets.md", "training.json"]
    assert sorted(p.name for p in written) == sorted(figures + data)
    for name in figures + data:
        assert f"wrote {out / name}" in printed
    for name in figures:
        assert_sensible_png(out / name, min_size=(400, 300))
    assert (f"skipped training for export: {result.export_path} is a SavedModel; training "
            "curves live in a run folder (history.json, checkpoints/): pass that instead"
            ) in printed
    assert ("training analyses of bare: no analysis/ records (train with --analysis_probe=N); "
            "computed from the 2 kept checkpoints on 32 test images") in printed

    training = json.loads((out / "training.json").read_text())
    expected = quantities.set_means_over_time(records=training_probe.read_records(
        result.run_dir))
    assert training["set_alp"]["probed"]["fixed"] == expected
    assert training["set_alp"]["bare"]["fixed"]["epoch"] == [1, 2]
    assert training["histories"]["probed"] == result.history

    sets = json.loads((out / "sets.json").read_text())["sets"]
    # The SavedModel rebuilt from its config is the run's model: identical statistics.
    assert sets["export"] == sets["probed"]
    share = sets["probed"]["consistent"]["share"]
    assert f"| probed | {100 * share:.2f}% |" in (out / "sets.md").read_text()


def test_a_path_that_is_no_model_is_one_clear_error(tmp_path):
    with pytest.raises(UsageError) as err:
        model_sources.load("x", str(tmp_path), DATASETS.get("mnist"), check_images=None)
    assert str(err.value) == (f"--models x:{tmp_path} is neither a run folder (config.json, "
                              "checkpoints/) nor a SavedModel (saved_model.pb)")


def test_the_command_rejects_an_unknown_analysis_in_one_line(tmp_path, monkeypatch, capsys):
    # In this process: a subprocess would spend its seconds importing TensorFlow (a command's
    # exit status in a real process: tests/test_cli.py).
    from aalp_tf import analyze
    monkeypatch.chdir(tmp_path)
    result = in_process(analyze.main, "analyze", ["--dataset=mnist", "--models=a:nowhere",
                                                  "--what=sets,cams"], monkeypatch, capsys)
    assert_one_line_error(result, "error: unknown analysis: received 'cams'; accepted: "
                                  "contributions, gradcam, scatter, sets, training")
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_keras_export_among_the_models_is_analysed_by_its_logits(trained, tmp_path,
                                                                         capsys):
    import keras

    _, result = trained
    mnist = tmp_path / "mnist"
    write_mnist_files(mnist, splits=ARRAYS)
    keras.utils.set_random_seed(0)
    foreign = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(10)])
    foreign.export(str(tmp_path / "foreign"))  # serving_default: keras_tensor -> output_0
    out = tmp_path / "out"
    written = run_all(AnalysisConfig(
        models=(("run", str(result.run_dir)), ("foreign", str(tmp_path / "foreign"))),
        out=str(out), data=DataConfig(dataset="mnist", source_dir=str(mnist), batch_size=32),
        attack=AttackConfig(epsilon=0.3, step_size=0.1, steps=2), what=("contributions", "sets")))
    printed = capsys.readouterr().out
    assert "model foreign: SavedModel" in printed and "(logits only)" in printed
    assert any(line.startswith("skipped contributions for foreign: ") for line in
               printed.splitlines()), printed
    sets = json.loads((out / "sets.json").read_text())["sets"]
    assert set(sets) == {"run", "foreign"}  # the foreign model's logits still serve
    assert out / "contributions.json" in written
