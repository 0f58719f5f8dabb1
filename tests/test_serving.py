"""TF Serving around the exports: models.config, batching.config, the client's requests, and
the client against local gRPC and REST endpoints that answer from a SavedModel."""
import os
import shutil
import socket

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.config import model_server_config_pb2

from tests.helpers import commands, fake_serving
from aalp_tf.serving import client, request_protos, saved_model, server_config
from aalp_tf.serving.config import PredictConfig
from aalp_tf.data.datasets import DATASETS
from aalp_tf.errors import UsageError
from aalp_tf.trainer import build_model
from tests.helpers.tiny import tiny_arrays, tiny_config

X_UINT8 = tiny_arrays(8, 4).x_test
X = (X_UINT8 / 255.0).astype(np.float32)
DTYPES = {"serving_default": np.float32, "predict_uint8": np.uint8}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """saved_models/ holding `digits` (version 1) and `other` (version 3), a model folder with no
    SavedModel in its version, and a stray file."""
    folder = tmp_path_factory.mktemp("saved_models")
    keras.utils.set_random_seed(0)
    model = build_model(tiny_config(folder.parent / "run", "natural"), DATASETS.get("mnist"))
    path = saved_model.export_model(model, image_shape=(28, 28, 1), export_dir=str(folder),
                               name="digits", warmup_batch_sizes=())
    shutil.copytree(path, folder / "other" / "3")
    (folder / "unfinished" / "1").mkdir(parents=True)
    (folder / "notes.txt").write_text("not a model")
    for name, images in (("uint8", X_UINT8), ("float", X), ("scaled", X * 255), ("rank3", X[0]),
                         ("nan", np.where(X > 0.5, np.nan, X))):
        np.save(folder.parent / f"{name}.npy", images)
    return folder, path


@pytest.fixture(scope="module")
def servers(exports):
    """(gRPC address, REST address) of local endpoints serving `digits`."""
    _, path = exports
    with fake_serving.grpc_server({"digits": path}) as grpc_address, \
            fake_serving.rest_server({"digits": path}, DTYPES) as rest_address:
        yield grpc_address, rest_address


def free_address():
    """127.0.0.1:<a port nobody listens on>."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def run_command(argv, monkeypatch, capsys):
    """`python -m aalp_tf.serving ARGV` in this process (the local endpoints live here):
    (exit status, stdout, stderr)."""
    from aalp_tf.serving import __main__ as serving_command
    done = commands.in_process(serving_command.main, "serving", argv, monkeypatch, capsys)
    return done.returncode, done.stdout, done.stderr


def config(server="127.0.0.1:1", images="x.npy", **fields):
    return PredictConfig(server=server, model=fields.pop("model", "digits"), images=images,
                         **fields)


def saved_model_outputs(path, signature, images):
    outputs = tf.saved_model.load(str(path)).signatures[signature](images=tf.constant(images))
    return {key: value.numpy() for key, value in outputs.items()}


# ---- configuration files --------------------------------------------------------------------


def test_models_config_names_every_model_folder_and_parses(exports):
    folder, _ = exports
    parsed = text_format.Parse(server_config.models_config(folder, base_path="/models/"),
                               model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path, c.model_platform) for c in parsed.model_config_list.config] == [
        ("digits", "/models/digits", "tensorflow"), ("other", "/models/other", "tensorflow")]
    parsed = text_format.Parse(server_config.models_config(folder),
                               model_server_config_pb2.ModelServerConfig())
    assert parsed.model_config_list.config[0].base_path == str(folder.resolve() / "digits")


def test_models_config_refuses_a_folder_without_models(tmp_path):
    with pytest.raises(UsageError) as err:
        server_config.models_config(tmp_path)
    assert str(err.value) == (f"{tmp_path} holds no exported model; accepted: a folder of "
                              "<name>/<version>/saved_model.pb, e.g. saved_models/ after training")


def batching_parameters():
    """TF Serving's BatchingParameters message (session_bundle_config.proto), which
    tensorflow-serving-api does not ship: built from its field names and types."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="session_bundle_config_test.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name in enumerate(["max_batch_size", "batch_timeout_micros",
                                   "max_enqueued_batches", "num_batch_threads"], 1):
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE,
                          label=field.LABEL_OPTIONAL, type_name=".google.protobuf.Int64Value")
    message.field.add(name="thread_pool_name", number=5, type=field.TYPE_MESSAGE,
                      label=field.LABEL_OPTIONAL, type_name=".google.protobuf.StringValue")
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64,
                      label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL,
                      label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(proto.SerializeToString())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def test_batching_config_parses_as_batching_parameters():
    parsed = text_format.Parse(server_config.batching_config(threads=3), batching_parameters()())
    assert (parsed.max_batch_size.value, parsed.batch_timeout_micros.value,
            parsed.max_enqueued_batches.value, parsed.num_batch_threads.value) == (64, 1000, 100, 3)
    default = text_format.Parse(server_config.batching_config(), batching_parameters()())
    assert default.num_batch_threads.value == os.cpu_count()


# ---- requests -------------------------------------------------------------------------------


def test_predict_request_and_rest_body():
    request = request_protos.predict_request({"images": X_UINT8}, model="digits",
                                               signature="predict_uint8", version=3)
    assert (request.model_spec.name, request.model_spec.signature_name,
            request.model_spec.version.value) == ("digits", "predict_uint8", 3)
    assert list(request.inputs) == ["images"]
    assert request.inputs["images"].dtype == types_pb2.DT_UINT8
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["images"]), X_UINT8)
    assert not request_protos.predict_request(
        {"images": X}, model="digits", signature="serving_default").model_spec.HasField("version")

    body = client.rest_body(X[:1], signature="serving_default")
    assert body == {"signature_name": "serving_default", "inputs": {"images": X[:1].tolist()}}
    assert client.rest_url(config("h:8501", version=3)) == (
        "http://h:8501/v1/models/digits/versions/3:predict")
    assert client.rest_url(config("h:8501")) == "http://h:8501/v1/models/digits:predict"


def test_images_pick_their_signature(exports):
    folder = exports[0].parent
    images, signature = client.load_images(config(images=str(folder / "uint8.npy")))
    assert signature == "predict_uint8" and images.dtype == np.uint8
    images, signature = client.load_images(config(images=str(folder / "float.npy")))
    assert signature == "serving_default" and images.dtype == np.float32


@pytest.mark.parametrize("name,signature,message", [
    ("scaled", "auto", "holds values in [0, 230]; accepted for serving_default: float32 images "
                       "in [0, 1] (uint8 pixels go to predict_uint8 as they are)"),
    ("nan", "auto", "holds NaN or inf values; accepted for serving_default: float32 images in "
                    "[0, 1]"),
    ("uint8", "serving_default", "holds uint8 values; accepted for serving_default: float32 "
                                 "images in [0, 1]"),
    ("float", "predict_uint8", "holds float32 values; accepted for predict_uint8: uint8 pixels "
                               "0-255"),
    ("rank3", "auto", "holds shape [28, 28, 1]; accepted: a batch [N, H, W, C] (one image: "
                      "x[None]; no channel axis: x[..., None])"),
])
def test_images_that_no_signature_takes_are_refused(exports, name, signature, message):
    path = exports[0].parent / f"{name}.npy"
    with pytest.raises(UsageError) as err:
        client.load_images(config(images=str(path), signature=signature))
    assert str(err.value) == f"--images {path} {message}"


# ---- the client against local endpoints -----------------------------------------------------


@pytest.mark.parametrize("rest", [False, True])
def test_the_client_gets_the_saved_models_answers(exports, servers, rest):
    folder, path = exports
    server = servers[1] if rest else servers[0]
    for name, signature in (("uint8", "predict_uint8"), ("float", "serving_default")):
        cfg = config(server, str(folder.parent / f"{name}.npy"), rest=rest)
        used, outputs = client.predict(cfg)
        assert used == signature
        expected = saved_model_outputs(path, signature, X_UINT8 if name == "uint8" else X)
        assert set(outputs) == {"logits", "probabilities", "classes"}
        for key, value in expected.items():
            np.testing.assert_allclose(outputs[key], value, atol=1e-6)


@pytest.mark.parametrize("rest", [False, True])
def test_a_missing_model_a_refused_input_and_a_down_server_are_one_line(exports, servers,
                                                                          rest):
    folder, _ = exports
    server = servers[1] if rest else servers[0]
    with pytest.raises(UsageError) as err:
        client.predict(config(server, str(folder.parent / "uint8.npy"), model="mnist",
                                      rest=rest))
    assert str(err.value) == (f"TF Serving at {server} has no model 'mnist' (Servable not found "
                              "for request: Latest(mnist)); accepted: a model name from its "
                              "models.config")
    wrong = folder.parent / "wrong_shape.npy"
    np.save(wrong, X[:, :27])
    with pytest.raises(UsageError) as err:
        client.predict(config(server, str(wrong), rest=rest))
    assert str(err.value).startswith(f"TF Serving at {server} refused the request "
                                     "(INVALID_ARGUMENT): ")
    down = free_address()
    with pytest.raises(UsageError) as err:
        client.predict(config(down, str(folder.parent / "uint8.npy"), rest=rest,
                                      timeout=5.0))
    transport = "REST" if rest else "gRPC"
    assert str(err.value).startswith(f"no TF Serving answers {transport} at {down} (")
    assert str(err.value).endswith("); accepted: --server=HOST:PORT of a running model server "
                                   "(gRPC 8500, REST 8501 with --rest)")
    assert "\n" not in str(err.value)


def test_result_lines_show_class_and_probabilities():
    outputs = {"classes": np.array([1]), "probabilities": np.array([[0.25, 0.75]])}
    assert client.result_lines(outputs) == [
        "example  class  probability  probabilities", "0        1      0.7500       0.2500 0.7500"]


# ---- the command ------------------------------------------------------------------------


def test_predict_command_prints_classes_and_probabilities(exports, servers, monkeypatch,
                                                          capsys):
    code, out, err = run_command(["predict", f"--server={servers[0]}", "--model_name=digits",
                                  f"--images={exports[0].parent / 'uint8.npy'}"],
                                 monkeypatch, capsys)
    assert code == 0, err
    expected = client.result_lines(
        saved_model_outputs(exports[1], "predict_uint8", X_UINT8))
    assert len(expected) == 1 + len(X_UINT8)
    assert out.splitlines() == [f"digits at {servers[0]} (gRPC, predict_uint8):", *expected]


@pytest.mark.parametrize("argv,message", [
    (["predict", "--rest", "--model_name=digits"],
     "error: no TF Serving answers REST at {down} ("),
    (["predict", "--model_name=mnist"], "error: TF Serving at {grpc} has no model 'mnist' "),
    (["predict", "--model_name=digits", "--server=localhost"],
     "error: --server must be HOST:PORT; received: 'localhost'"),
    ([], "error: no command given; accepted: config, predict, e.g. python -m aalp_tf.serving "
         "config saved_models/"),
    (["serve"], "error: unknown serving command: received 'serve'; accepted: config, predict"),
    (["config"], "error: config takes one folder; received: none; accepted: python -m "
                 "aalp_tf.serving config saved_models/"),
])
def test_the_command_says_what_went_wrong_in_one_line_and_exits_2(exports, servers, argv,
                                                                  message, monkeypatch, capsys):
    down = free_address()
    if argv[:1] == ["predict"]:
        server = down if "--rest" in argv else servers[0]
        argv = [f"--server={server}", *argv, f"--images={exports[0].parent / 'uint8.npy'}"]
    code, out, err = run_command(argv, monkeypatch, capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(message.format(down=down, grpc=servers[0])), err


def test_config_command_writes_both_files_and_the_docker_command(exports, monkeypatch, capsys):
    folder, _ = exports
    code, out, err = run_command(["config", str(folder), "--base_path=/models"], monkeypatch,
                                 capsys)
    assert code == 0, err
    assert out.splitlines() == [
        f"wrote {folder}/models.config (digits, other) and {folder}/batching.config",
        "serve them with:",
        f'  docker run --rm -p 8500:8500 -p 8501:8501 -v "{folder.resolve()}:/models" '
        "tensorflow/serving --model_config_file=/models/models.config --enable_batching "
        "--batching_parameters_file=/models/batching.config"]
    assert (folder / "models.config").read_text() == server_config.models_config(
        folder, base_path="/models")
    assert text_format.Parse((folder / "batching.config").read_text(), batching_parameters()())
