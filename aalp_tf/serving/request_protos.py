"""TF Serving's request protos: the PredictRequest the client sends and the warm-up file replays.

`tensorflow-serving-api` is the optional `[serving]` extra, so it is imported only when a
function here runs: the rest of aalp_tf imports and trains without it.
"""
import importlib
import pathlib
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from aalp_tf.errors import UsageError

INSTALL = 'pip install -e ".[serving]"'


class MissingServingApi(UsageError):
    """The `[serving]` extra (tensorflow-serving-api, grpcio) is not installed."""


def serving_api(module: str):
    """Imports `tensorflow_serving.<module>`, or raises one line saying how to install it."""
    try:
        return importlib.import_module(f"tensorflow_serving.{module}")
    except ImportError as err:
        raise MissingServingApi(f"the serving extra is not installed (no module "
                                f"{err.name or 'tensorflow_serving'}); install it with "
                                f"{INSTALL}") from None


def predict_request(inputs: Dict[str, np.ndarray], *, model: str, signature: str,
                    version: Optional[int] = None):
    """A PredictRequest for `model`'s `signature`, holding `inputs` as TensorProtos."""
    predict_pb2 = serving_api("apis.predict_pb2")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    for key, array in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
    return request


def response_arrays(response) -> Dict[str, np.ndarray]:
    """A PredictResponse's outputs as NumPy arrays."""
    return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def write_warmup(path: pathlib.Path, *, model: str, inputs: Dict[str, Dict[str, type]],
                 image_shape: Sequence[int], batch_sizes: Sequence[int]) -> None:
    """Writes TF Serving's warm-up file: a TFRecord of PredictionLog records.

    Args:
      path: `<version>/assets.extra/tf_serving_warmup_requests`.
      model: the model's name in the requests.
      inputs: signature -> {input key: NumPy dtype}.
      image_shape: (H, W, C); each request holds zeros of [batch, H, W, C].
      batch_sizes: one request per signature and batch size (each batch size a server sees
        first can cost a fresh kernel set-up, so list the ones you serve).
    """
    log_pb2 = serving_api("apis.prediction_log_pb2")
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, keys in inputs.items():
            for batch in batch_sizes:
                arrays = {key: np.zeros((batch, *image_shape), dtype)
                          for key, dtype in keys.items()}
                request = predict_request(arrays, model=model, signature=signature)
                log = log_pb2.PredictionLog(predict_log=log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())


def read_warmup(path: pathlib.Path) -> list:
    """The PredictionLog records of a warm-up file (read eagerly: outside a TF1 graph)."""
    log_pb2 = serving_api("apis.prediction_log_pb2")
    return [log_pb2.PredictionLog.FromString(raw.numpy())
            for raw in tf.data.TFRecordDataset(str(path))]
