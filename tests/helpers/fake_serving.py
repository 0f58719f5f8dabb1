"""Stand-ins for TF Serving's two ports, answering from SavedModels, for the client's tests.

Each listens on 127.0.0.1 at a port the OS picks, answers Predict from `tf.saved_model.load`
and says NOT_FOUND (gRPC) / 404 (REST) with TF Serving's own wording for a model it lacks.
Both are context managers that stop their server within a bounded wait.
"""
import concurrent.futures
import contextlib
import http.server
import json
import re
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

STOP_SECONDS = 5


def _missing(name):
    return f"Servable not found for request: Latest({name})"


class Models:
    """name -> loaded SavedModel; `predict` runs one signature on NumPy inputs."""

    def __init__(self, paths):
        self.loaded = {name: tf.saved_model.load(str(path)) for name, path in paths.items()}

    def predict(self, name, signature, inputs):
        fn = self.loaded[name].signatures[signature or "serving_default"]
        outputs = fn(**{key: tf.constant(value) for key, value in inputs.items()})
        return {key: value.numpy() for key, value in outputs.items()}


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models):
        self.models = models

    def Predict(self, request, context):
        name = request.model_spec.name
        if name not in self.models.loaded:
            context.abort(grpc.StatusCode.NOT_FOUND, _missing(name))
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        try:
            outputs = self.models.predict(name, request.model_spec.signature_name, inputs)
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err).splitlines()[0])
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


@contextlib.contextmanager
def grpc_server(paths):
    """Yields "127.0.0.1:<port>" of a PredictionService answering from `paths` (name -> dir)."""
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _Servicer(Models(paths)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        assert server.stop(grace=None).wait(STOP_SECONDS), "gRPC server did not stop"


def _handler(models, dtypes):
    pattern = re.compile(r"^/v1/models/([^/:]+)(?:/versions/\d+)?:predict$")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest's output clean
            pass

        def _reply(self, status, body):
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self):
            match = pattern.match(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not match or match[1] not in models.loaded:
                return self._reply(404, {"error": _missing(match[1] if match else self.path)})
            signature = body.get("signature_name", "serving_default")
            inputs = {key: np.asarray(value, dtypes[signature])
                      for key, value in body["inputs"].items()}
            try:
                outputs = models.predict(match[1], signature, inputs)
            except tf.errors.InvalidArgumentError as err:
                return self._reply(400, {"error": str(err).splitlines()[0]})
            self._reply(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})

    return Handler


@contextlib.contextmanager
def rest_server(paths, dtypes):
    """Yields "127.0.0.1:<port>" of a REST predict endpoint; dtypes: signature -> NumPy dtype
    (JSON carries no dtype: TF Serving takes it from the signature, as this does)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             _handler(Models(paths), dtypes))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(STOP_SECONDS)
        assert not thread.is_alive(), "REST server did not stop"
