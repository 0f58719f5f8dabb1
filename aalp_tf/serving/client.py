"""A Predict request to TF Serving over gRPC or REST: what `python -m aalp_tf.serving predict`
sends, and the one line it prints when the server is down or lacks the model."""
import json
import pathlib
import urllib.error
import urllib.request
from typing import Dict, List, Tuple

import numpy as np

from aalp_tf import signatures
from aalp_tf.serving import request_protos
from aalp_tf.serving.config import PredictConfig
from aalp_tf.errors import UsageError
from aalp_tf.serving.request_protos import serving_api

# Images are large messages: gRPC's default 4 MB cap would refuse a few hundred CIFAR images.
GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
REST_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE"}


def load_images(cfg: PredictConfig) -> Tuple[np.ndarray, str]:
    """The images of `cfg.images`, checked against the signature that takes them.

    Returns (images in the signature's dtype, signature name); "auto" picks predict_uint8 for
    uint8 images and serving_default for float ones.
    """
    try:
        images = np.load(pathlib.Path(cfg.images), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UsageError(f"--images {cfg.images} could not be read ({err}); accepted: a .npy "
                         "file written by numpy.save") from None
    if images.ndim != 4:
        raise UsageError(f"--images {cfg.images} holds shape {list(images.shape)}; accepted: a "
                         "batch [N, H, W, C] (one image: x[None]; no channel axis: x[..., None])")
    signature = cfg.signature
    if signature == "auto":
        signature = "predict_uint8" if images.dtype == np.uint8 else "serving_default"
    wanted = signatures.SIGNATURES.get(signature)
    if wanted.dtype.is_floating and np.issubdtype(images.dtype, np.floating):
        images = images.astype(wanted.dtype.as_numpy_dtype)
        if not np.isfinite(images).all():  # NaN would pass the range check below
            raise UsageError(f"--images {cfg.images} holds NaN or inf values; accepted for "
                             f"{signature}: {wanted.accepts}")
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise UsageError(f"--images {cfg.images} holds values in [{images.min():g}, "
                             f"{images.max():g}]; accepted for {signature}: {wanted.accepts} "
                             "(uint8 pixels go to predict_uint8 as they are)")
    elif images.dtype != wanted.dtype.as_numpy_dtype:
        raise UsageError(f"--images {cfg.images} holds {images.dtype} values; accepted for "
                         f"{signature}: {wanted.accepts}")
    return images, signature


def rest_url(cfg: PredictConfig) -> str:
    version = f"/versions/{cfg.version}" if cfg.version else ""
    return f"http://{cfg.server}/v1/models/{cfg.model}{version}:predict"


def rest_body(images: np.ndarray, *, signature: str) -> dict:
    """The JSON body of a REST Predict request, in the columnar ("inputs") format."""
    return {"signature_name": signature, "inputs": {signatures.INPUT_KEY: images.tolist()}}


def server_error(cfg: PredictConfig, transport: str, code: str, details: str) -> str:
    """One line for a failed request: server down, model missing, or input refused."""
    first = (details or code).strip().splitlines()[0]
    if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return (f"no TF Serving answers {transport} at {cfg.server} ({first}); accepted: "
                "--server=HOST:PORT of a running model server (gRPC 8500, REST 8501 with --rest)")
    if code == "NOT_FOUND":
        version = f" version {cfg.version}" if cfg.version else ""
        return (f"TF Serving at {cfg.server} has no model {cfg.model!r}{version} ({first}); "
                "accepted: a model name from its models.config")
    return f"TF Serving at {cfg.server} refused the request ({code}): {first}"


def predict_grpc(images: np.ndarray, *, signature: str, cfg: PredictConfig
                 ) -> Dict[str, np.ndarray]:
    """PredictionService.Predict over gRPC; the response's outputs as arrays."""
    stubs = serving_api("apis.prediction_service_pb2_grpc")
    import grpc  # present whenever the stubs imported

    request = request_protos.predict_request({signatures.INPUT_KEY: images}, model=cfg.model,
                                               signature=signature, version=cfg.version)
    with grpc.insecure_channel(cfg.server, options=GRPC_OPTIONS) as channel:
        try:
            response = stubs.PredictionServiceStub(channel).Predict(request, timeout=cfg.timeout)
        except grpc.RpcError as err:
            raise UsageError(server_error(cfg, "gRPC", err.code().name, err.details())
                             ) from None
    return request_protos.response_arrays(response)


def predict_rest(images: np.ndarray, *, signature: str, cfg: PredictConfig
                 ) -> Dict[str, np.ndarray]:
    """POST /v1/models/<model>:predict; the answer's outputs as arrays."""
    body = json.dumps(rest_body(images, signature=signature)).encode()
    request = urllib.request.Request(rest_url(cfg), data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout) as answer:
            reply = json.loads(answer.read())
    except urllib.error.HTTPError as err:
        code = REST_CODES.get(err.code, f"HTTP {err.code}")
        raise UsageError(server_error(cfg, "REST", code, _error_text(err))) from None
    except OSError as err:  # refused, unreachable, timed out (URLError is an OSError)
        raise UsageError(server_error(cfg, "REST", "UNAVAILABLE",
                                      str(getattr(err, "reason", err)))) from None
    if not isinstance(reply, dict) or not isinstance(reply.get("outputs"), dict):
        raise UsageError(f"the server at {cfg.server} answered without named outputs; "
                         "accepted: a TF Serving REST port")
    return {key: np.asarray(value) for key, value in reply["outputs"].items()}


def _error_text(err: urllib.error.HTTPError) -> str:
    raw = err.read().decode(errors="replace")
    try:
        return str(json.loads(raw).get("error", raw))
    except (ValueError, AttributeError):
        return raw or err.reason


TRANSPORTS = {"grpc": predict_grpc, "rest": predict_rest}


def predict(cfg: PredictConfig) -> Tuple[str, Dict[str, np.ndarray]]:
    """Sends cfg.images to the server; returns (signature used, outputs)."""
    images, signature = load_images(cfg)
    send = TRANSPORTS["rest" if cfg.rest else "grpc"]
    return signature, send(images, signature=signature, cfg=cfg)


def result_lines(outputs: Dict[str, np.ndarray]) -> List[str]:
    """One line per example: its class, that class's probability, and every probability."""
    lines = ["example  class  probability  probabilities"]
    for i, (label, probs) in enumerate(zip(outputs["classes"], outputs["probabilities"])):
        shown = " ".join(f"{p:.4f}" for p in probs)
        lines.append(f"{i:<7}  {int(label):<5}  {probs[int(label)]:<11.4f}  {shown}")
    return lines
