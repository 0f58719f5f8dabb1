"""Feeds wrong inputs to every signature of a SavedModel; run as a subprocess by test_export.py.

A wrong rank can abort the whole process inside the convolution kernels instead of raising, so
the test runs this script in its own process and a crash fails the test instead of pytest.

    python -m tests.helpers.serving_bad_inputs SAVED_MODEL_DIR  ->  last line: JSON
    {"<loader> <signature> <case>": [error type, message], ...}

A case the signature answers gives ["answered", {output name: shape}].
"""
import json
import os
import sys

# As `import aalp_tf` does: an empty batch failed inside oneDNN's convolution only.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import config_pb2  # noqa: E402

CASES = {"rank": (28, 28, 1), "shape": (2, 27, 28, 1), "dtype": (2, 28, 28, 1),
         "empty": (0, 28, 28, 1)}
DTYPES = {"serving_default": np.float32, "predict_uint8": np.uint8}


def _pixels(value):
    """Two float images in [0, 1] (both ends included) but for pixel (1, 5, 7) = value."""
    images = np.linspace(0.0, 1.0, 2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28, 1)
    images[1, 5, 7, 0] = value
    return images


VALUES = {  # serving_default only: uint8 pixels are always finite and in 0-255
    "in_range": _pixels(0.5), "nan": _pixels(np.nan), "inf": _pixels(np.inf),
    "above": _pixels(1.5), "below": _pixels(-0.25),
    "scaled": _pixels(0.5) * 255.0,  # 0-255 pixels sent as floats, the usual mistake
}


def feed(signature, case):
    if case in VALUES:
        return VALUES[case]
    return np.zeros(CASES[case], np.int32 if case == "dtype" else DTYPES[signature])


def tf1_cpp(path, signature, images):
    """The TF1 loader, then the C++ Session::Run path TF Serving takes. (Python's Session.run
    checks a feed's shape and casts its dtype before the graph sees it; a callable made from
    CallableOptions hands the tensor to the graph as TF Serving does.)"""
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def[signature]
        names = sorted(sig.outputs)
        options = config_pb2.CallableOptions(feed=[sig.inputs["images"].name],
                                             fetch=[sig.outputs[n].name for n in names])
        return dict(zip(names, sess._make_callable_from_options(options)(images)))


def tf2(path, signature, images):
    return tf.saved_model.load(path).signatures[signature](images=tf.constant(images))


def main(path):
    results = {}
    for loader in (tf1_cpp, tf2):
        for signature in DTYPES:
            cases = list(CASES) + (list(VALUES) if signature == "serving_default" else [])
            for case in cases:
                try:
                    outputs = loader(path, signature, feed(signature, case))
                    outcome = ["answered", {k: list(np.shape(v)) for k, v in outputs.items()}]
                except Exception as err:  # the point: which error, and that it is one
                    outcome = [type(err).__name__, str(err)]
                results[f"{loader.__name__} {signature} {case}"] = outcome
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
