"""SavedModel export as TF Serving loads it: TF1 loader, tf.saved_model.load and saved_model_cli,
bad inputs, the absent training path, warm-up records, versions and interrupted exports."""
import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from aalp_tf import signatures
from aalp_tf.analysis import model_sources
from aalp_tf.serving import request_protos, saved_model
from aalp_tf.serving.config import ExportConfig
from aalp_tf.errors import UsageError
from aalp_tf.serving.run_export import export_run
from aalp_tf.data.datasets import DATASETS
from aalp_tf.trainer import build_model
from aalp_tf.experiment.training import train
from tests.helpers.commands import REPO, Subprocesses, in_process
from tests.helpers.tiny import tiny_arrays, tiny_config

ARRAYS = tiny_arrays(160, 32)
X_UINT8 = ARRAYS.x_test[:8]
X = (X_UINT8 / 255.0).astype(np.float32)
INPUTS = {"serving_default": X, "predict_uint8": X_UINT8}


class LogitsAfterEachEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logits = {}

    def on_epoch_end(self, epoch, logs=None):
        self.logits[epoch + 1] = self.model(X, training=False).numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An aalp run of 2 epochs (Guided Dropout in training) with its final export, its config,
    and the model's logits on X after each epoch."""
    cfg = tiny_config(tmp_path_factory.mktemp("export") / "run", "aalp", epochs=2)
    logits = LogitsAfterEachEpoch()
    result = train(cfg, arrays=ARRAYS, verbose=0, callbacks=[logits])
    return result, cfg, logits.logits


@pytest.fixture(scope="module")
def commands(trained, tmp_path_factory):
    """saved_model_cli on each signature and the bad-input probe, started at once on the
    trained run."""
    result, _, _ = trained
    folder = tmp_path_factory.mktemp("commands")
    started = Subprocesses()
    for signature, images in INPUTS.items():
        np.save(folder / f"{signature}.npy", images)
        started.start(signature, [
            "-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir",
            str(result.export_path), "--tag_set", "serve", "--signature_def", signature,
            "--inputs", f"images={folder / signature}.npy", "--outdir", str(folder / signature)])
    started.start("bad_inputs", ["-m", "tests.helpers.serving_bad_inputs",
                                 str(result.export_path)])
    yield started, folder
    started.close()


def tf1_outputs(path, signature, images):
    """TF Serving's way: the TF1 loader, then the SignatureDef's tensors by name."""
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(path))
        sig = meta.signature_def[signature]
        fetches = {key: info.name for key, info in sig.outputs.items()}
        return sess.run(fetches, {sig.inputs["images"].name: images})


def tf2_outputs(path, signature, images):
    outputs = tf.saved_model.load(str(path)).signatures[signature](images=tf.constant(images))
    return {key: value.numpy() for key, value in outputs.items()}


@pytest.mark.usefixtures("commands")  # start them first: they run beside the tests below
def test_each_signature_equals_the_keras_model_through_both_loaders(trained):
    result, _, _ = trained
    logits = result.model(X, training=False).numpy()
    for signature, images in INPUTS.items():
        for outputs in (tf2_outputs(result.export_path, signature, images),
                        tf1_outputs(result.export_path, signature, images)):
            assert set(outputs) == {"logits", "probabilities", "classes"}
            np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5)
            np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(logits),
                                       atol=1e-6)
            np.testing.assert_array_equal(outputs["classes"], logits.argmax(-1))


def test_the_tf1_python_session_refuses_a_wrong_rank_before_running(trained):
    result, _, _ = trained
    with pytest.raises(ValueError, match=r"Cannot feed value of shape \(28, 28, 1\)"):
        tf1_outputs(result.export_path, "serving_default", X[0])


def graph_names_and_ops(graph_def):
    names = [node.name for node in graph_def.node]
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        names.append(function.signature.name)
        names += [node.name for node in function.node_def]
        ops |= {node.op for node in function.node_def}
    return names, ops


# Guided Dropout's mask (top-k of the contributions), PGD's random start, any gradient.
TRAINING_OPS = {"TopKV2", "StatelessRandomUniformV2", "RandomUniform", "BroadcastGradientArgs"}


def training_traces(graph_def):
    names, ops = graph_names_and_ops(graph_def)
    return sorted({n for n in names if "guided_dropout" in n.lower()} | (ops & TRAINING_OPS)
                  | {op for op in ops if op.endswith("Grad")})


def test_guided_dropout_and_training_paths_are_absent_from_the_export(trained):
    result, _, _ = trained
    saved = saved_model_pb2.SavedModel.FromString(
        (result.export_path / "saved_model.pb").read_bytes())
    assert training_traces(saved.meta_graphs[0].graph_def) == []
    # The check sees them when they are there: the training-mode Guided Dropout of this model.
    model = result.model
    features = tf.ones([2, model.classifier.kernel.shape[0]])
    traced = tf.function(lambda f: model.logits_from_features(
        f, training=True, contribution=tf.range(f.shape[1], dtype=tf.float32)))
    assert "TopKV2" in training_traces(traced.get_concrete_function(features).graph.as_graph_def())


def signature_shapes(path):
    meta = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    spec = lambda infos: {k: (v.dtype, [d.size for d in v.tensor_shape.dim])  # noqa: E731
                          for k, v in infos.items()}
    return {name: (spec(sig.inputs), spec(sig.outputs))
            for name, sig in meta.meta_graphs[0].signature_def.items()}


def test_model_export_writes_the_savedmodel_training_wrote(trained, tmp_path):
    result, cfg, _ = trained
    path = result.model.export(tmp_path / "mnist_aalp" / "1")
    cli = result.export_path
    assert signature_shapes(path) == signature_shapes(cli)
    assert set(signature_shapes(path)) == {"serving_default", "predict_uint8",
                                           "__saved_model_init_op"}

    def extra(folder):
        return {f.name: f.read_bytes() for f in (folder / "assets.extra").iterdir()}

    def names(folder):
        return [n for n, _ in tf.train.list_variables(str(folder / "variables/variables"))]

    # The run's config; training's export (TF Serving's layout) also records the run and epoch
    # it came from (so a rerun finds it) and TF Serving's warm-up requests, which belong to a
    # served version, not to the SavedModel the core writes.
    from_run = extra(cli)
    source = json.loads(from_run.pop(saved_model.SOURCE_ASSET))
    assert source["epochs"] == 2 and source["epoch"] in (1, 2) and source["run"].endswith("run")
    assert from_run.pop(saved_model.WARMUP_ASSET)  # records: test_warmup_records_... below
    assert extra(path) == from_run == {signatures.CONFIG_ASSET: cfg.to_json().encode()}
    assert names(path) == names(cli)
    assert not [n for n in names(cli) if "optimizer" in n]  # a SavedModel is for inference
    np.testing.assert_allclose(tf2_outputs(path, "serving_default", X)["logits"],
                               tf2_outputs(cli, "serving_default", X)["logits"], atol=1e-6)


def test_warmup_records_are_prediction_logs_that_match_the_signatures(trained):
    result, _, _ = trained
    path = result.export_path / "assets.extra" / saved_model.WARMUP_ASSET
    records = request_protos.read_warmup(path)
    meta = saved_model_pb2.SavedModel.FromString(
        (result.export_path / "saved_model.pb").read_bytes()).meta_graphs[0]
    assert sorted(r.predict_log.request.model_spec.signature_name for r in records) == [
        "predict_uint8", "serving_default"]
    loaded = tf.saved_model.load(str(result.export_path))
    for record in records:
        request = record.predict_log.request
        assert request.model_spec.name == "mnist_aalp"
        sig = meta.signature_def[request.model_spec.signature_name]
        assert set(request.inputs) == set(sig.inputs) == {"images"}
        assert request.inputs["images"].dtype == sig.inputs["images"].dtype
        assert [d.size for d in request.inputs["images"].tensor_shape.dim] == [1, 28, 28, 1]
        # Replaying it, as TF Serving does while loading, answers.
        images = tf.make_ndarray(request.inputs["images"])
        outputs = loaded.signatures[request.model_spec.signature_name](images=images)
        assert outputs["logits"].shape == (1, 10)


def test_a_second_export_of_the_run_gets_the_next_version_and_any_checkpoint(trained,
                                                                              tmp_path):
    result, cfg, after_epoch = trained
    run = cfg.train.model_dir
    # Into the run's own export folder, where training's final export is version 1.
    latest, epoch = export_run(ExportConfig(model_dir=run, epoch=2))
    assert (latest, epoch) == (result.export_path.parent / "2", 2)
    first, epoch = export_run(ExportConfig(model_dir=run, epoch=1, export_dir=str(tmp_path)))
    assert (first, epoch) == (tmp_path / "mnist_aalp" / "1", 1)
    np.testing.assert_allclose(tf2_outputs(first, "serving_default", X)["logits"],
                               after_epoch[1], atol=1e-5)
    np.testing.assert_allclose(tf2_outputs(latest, "serving_default", X)["logits"],
                               after_epoch[2], atol=1e-5)
    assert json.loads((latest / "assets.extra" / signatures.CONFIG_ASSET).read_text()) == json.loads(
        cfg.to_json())

    with pytest.raises(UsageError) as err:
        export_run(ExportConfig(model_dir=run, version=2))
    assert str(err.value) == (f"export {latest} already exists; accepted: a new --version "
                              "(next free: 3)")
    with pytest.raises(UsageError) as err:
        export_run(ExportConfig(model_dir=run, epoch=5))
    assert str(err.value) == (f"--epoch=5: {run}/checkpoints keeps no checkpoint of that "
                              "epoch; accepted: one of [1, 2]")
    with pytest.raises(UsageError) as err:
        export_run(ExportConfig(model_dir=str(tmp_path / "nothing")))
    assert str(err.value) == (f"--model_dir {tmp_path}/nothing holds no run (no config.json); "
                              "accepted: a run folder written by python -m aalp_tf.train")


def test_without_checkpoint_export_and_analysis_take_the_epoch_export_epoch_picks(trained, tmp_path):
    result, cfg, after_epoch = trained
    run = tmp_path / "run"
    shutil.copytree(cfg.train.model_dir, run)
    history = json.loads((run / "history.json").read_text())
    for best in (1, 2):  # --export_epoch=best: the epoch of the highest val_robust_accuracy
        for entry in history:
            entry["val_robust_accuracy"] = 0.9 if entry["epoch"] == best else 0.1
        (run / "history.json").write_text(json.dumps(history))
        path, epoch = export_run(ExportConfig(model_dir=str(run), export_dir=str(tmp_path)))
        assert epoch == best
        np.testing.assert_allclose(tf2_outputs(path, "serving_default", X)["logits"],
                                   after_epoch[best], atol=1e-5)
        # An analysis of the run folder looks at that same model.
        source = model_sources.load("run", str(run), DATASETS.get("mnist"), check_images=None)
        np.testing.assert_allclose(source.logits_fn(tf.constant(X)).numpy(), after_epoch[best],
                                   atol=1e-5)
    config = json.loads((run / "config.json").read_text())
    config["train"]["export_epoch"] = "last"
    (run / "config.json").write_text(json.dumps(config))
    assert export_run(ExportConfig(model_dir=str(run), export_dir=str(tmp_path)))[1] == 2


def test_an_interrupted_export_leaves_nothing_behind(trained, tmp_path, monkeypatch):
    result, _, _ = trained
    save = tf.saved_model.save

    def save_then_fail(*args, **kwargs):
        save(*args, **kwargs)  # the temporary folder is full when the failure comes
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    existing = tmp_path / "kept"
    (existing / "1").mkdir(parents=True)
    for name in ("fresh", "kept"):
        with pytest.raises(OSError, match="disk full"):
            saved_model.export_model(result.model, image_shape=(28, 28, 1), export_dir=str(tmp_path),
                                name=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # no empty "fresh" either
    assert sorted(p.name for p in existing.iterdir()) == ["1"]  # no version 2, no .tmp-*


def test_a_model_with_a_non_finite_weight_is_not_exported(tmp_path):
    """What --learning_rate=inf or --alpha=inf trained: every answer of it would be NaN."""
    model = build_model(tiny_config(tmp_path / "run", "natural"), DATASETS.get("mnist"))
    kernel = model.classifier.kernel
    kernel.assign(tf.tensor_scatter_nd_update(kernel, [[3, 1]], [float("nan")]))
    with pytest.raises(UsageError) as err:
        saved_model.export_model(model, image_shape=(28, 28, 1), export_dir=str(tmp_path / "out"),
                                 name="m")
    assert str(err.value) == (
        f"the model's weights are not finite: nothing was exported; received: NaN or inf in 1 of "
        f"{len(model.weights)} variables ({kernel.path}); accepted: finite weights (export an "
        "earlier --epoch, or train again with a lower --learning_rate or --alpha)")
    assert not (tmp_path / "out").exists()


def test_a_killed_exports_leftover_is_removed_by_the_next_export(trained, tmp_path):
    """kill -9 mid-write leaves .<version>.tmp-HOST-PID; the next export removes it when that
    process is gone, and leaves a live writer's folder alone."""
    result, _, _ = trained
    root = tmp_path / "m"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    host = socket.gethostname()
    (root / f".1.tmp-{host}-{dead.pid}" / "variables").mkdir(parents=True)
    (root / f".1.tmp-{host}-{os.getppid()}").mkdir()  # a live writer's
    path = saved_model.export_model(result.model, image_shape=(28, 28, 1),
                                    export_dir=str(tmp_path), name="m", warmup_batch_sizes=())
    assert path == root / "1"
    assert sorted(p.name for p in root.iterdir()) == [f".1.tmp-{host}-{os.getppid()}", "1"]


def test_without_the_serving_extra_the_export_skips_warmup(trained, tmp_path, monkeypatch,
                                                           capsys):
    result, _, _ = trained
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis.prediction_log_pb2", None)
    path = saved_model.export_model(result.model, image_shape=(28, 28, 1), export_dir=str(tmp_path),
                               name="m")
    assert not (path / "assets.extra" / saved_model.WARMUP_ASSET).exists()
    assert capsys.readouterr().err == (
        "note: no warm-up requests in the export: the serving extra is not installed (no module "
        "tensorflow_serving.apis.prediction_log_pb2); install it with "
        "pip install -e \".[serving]\"\n")


def test_no_module_imports_tensorflow_serving_when_imported():
    """The [serving] extra is optional: aalp_tf imports it only inside functions."""
    top_level = []
    for path in sorted((REPO / "aalp_tf").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            top_level += [f"{path.relative_to(REPO)}: {n}" for n in names
                          if n.split(".")[0] in ("tensorflow_serving", "grpc")]
    assert top_level == []


# ---- the commands started at the top, collected last ---------------------------------


def test_saved_model_cli_gives_the_same_outputs(trained, commands):
    result, _, _ = trained
    started, folder = commands
    for signature, images in INPUTS.items():
        code, _, err = started.result(signature)
        assert code == 0, err
        expected = tf2_outputs(result.export_path, signature, images)
        assert sorted(p.name for p in (folder / signature).iterdir()) == [
            "classes.npy", "logits.npy", "probabilities.npy"]
        for key, value in expected.items():
            np.testing.assert_allclose(np.load(folder / signature / f"{key}.npy"), value,
                                       atol=1e-6)


def bad_input_outcomes(commands, cases):
    """{(loader, signature, case): [error type, message]} of the bad-input probe, for `cases`."""
    code, out, err = commands[0].result("bad_inputs")
    assert code == 0, f"exit {code} ({signal.Signals(-code).name if code < 0 else ''}): {err}"
    outcomes = json.loads(out.strip().splitlines()[-1])
    return {tuple(key.split()): value for key, value in outcomes.items()
            if key.split()[2] in cases}


def test_wrong_rank_shape_and_dtype_are_clean_errors_and_the_process_survives(commands):
    outcomes = bad_input_outcomes(commands, ("rank", "shape", "dtype"))
    assert len(outcomes) == 12
    for (loader, signature, case), (kind, message) in outcomes.items():
        key = (loader, signature, case)
        assert kind == "InvalidArgumentError", (key, kind, message)
        if case == "dtype":
            wanted = "float" if signature == "serving_default" else "uint8"
            assert (f"Type mismatch: actual int32 vs. expect {wanted}" in message
                    or f"expected to be a {wanted} tensor but is a int32 tensor" in message), key
        else:  # the signature's own check, not a kernel deep inside the model
            assert "is not compatible with expected shape [?,28,28,1]" in message, (key, message)


ACCEPTED = ("accepted: float32 pixels in [0, 1] (0-255 pixels: divide by 255, or send uint8 to "
            "predict_uint8)")


def test_serving_default_refuses_non_finite_and_out_of_range_pixels(commands):
    """Through TF Serving's own path (TF1 loader, C++ Session) and tf.saved_model.load: one NaN
    or inf pixel, a pixel outside [0, 1] or 0-255 floats are an InvalidArgument naming them."""
    outcomes = bad_input_outcomes(commands, ("in_range", "nan", "inf", "above", "below",
                                             "scaled"))
    expected = {"nan": "serving_default images must be finite; received: NaN or inf pixels; ",
                "inf": "serving_default images must be finite; received: NaN or inf pixels; ",
                "above": "serving_default images must be in [0, 1]; received: pixels in "
                         "[0, 1.5]; ",
                "below": "serving_default images must be in [0, 1]; received: pixels in "
                         "[-0.25, 1]; ",
                "scaled": "serving_default images must be in [0, 1]; received: pixels in "
                          "[0, 255]; "}
    assert len(outcomes) == 12
    for (loader, signature, case), (kind, message) in outcomes.items():
        if case == "in_range":  # 0 and 1 themselves are pixels
            assert [kind, message] == ["answered", {"classes": [2], "logits": [2, 10],
                                                    "probabilities": [2, 10]}], (loader, message)
            continue
        assert kind == "InvalidArgumentError", (loader, case, kind, message)
        assert f"assertion failed: [{expected[case]}{ACCEPTED}]" in message, (loader, message)


def test_an_empty_batch_gets_empty_outputs_from_both_signatures(commands):
    outcomes = bad_input_outcomes(commands, ("empty",))
    assert outcomes == {
        (loader, signature, "empty"): ["answered", {"classes": [0], "logits": [0, 10],
                                                    "probabilities": [0, 10]}]
        for loader in ("tf1_cpp", "tf2") for signature in ("serving_default", "predict_uint8")}


def test_export_command_writes_the_version_asked_for(trained, tmp_path, monkeypatch, capsys):
    # `python -m aalp_tf.export` in this process: a subprocess would spend its seconds importing
    # TensorFlow (a command's exit status in a real process: tests/test_cli.py).
    from aalp_tf import export
    _, cfg, _ = trained
    folder = tmp_path
    done = in_process(export.main, "export", [
        f"--model_dir={cfg.train.model_dir}", "--name=served", "--version=7",
        f"--export_dir={folder}", "--warmup_batch_sizes=1,4"], monkeypatch, capsys)
    code, out, err = done.returncode, done.stdout, done.stderr
    assert code == 0, err
    assert out.strip().endswith(f"exported epoch 2 of {cfg.train.model_dir}: "
                                f"{folder}/served/7")
    records = request_protos.read_warmup(folder / "served/7/assets.extra" /
                                           saved_model.WARMUP_ASSET)
    assert sorted(r.predict_log.request.inputs["images"].tensor_shape.dim[0].size
                  for r in records) == [1, 1, 4, 4]
