"""Feeds wrong inputs to every signature of a SavedModel; run as a subprocess by test_export.py.

A wrong rank can abort the whole process inside the convolution kernels instead of raising, so
the test runs this script in its own process and a crash fails the test instead of pytest.

    python -m tests.helpers.serving_bad_inputs SAVED_MODEL_DIR  ->  last line: JSON
    {"<loader> <signature> <case>": [error type, message], ...}
"""
import json
import sys

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

CASES = {"rank": (28, 28, 1), "shape": (2, 27, 28, 1), "dtype": (2, 28, 28, 1)}
DTYPES = {"serving_default": np.float32, "predict_uint8": np.uint8}


def feed(signature, case):
    return np.zeros(CASES[case], np.int32 if case == "dtype" else DTYPES[signature])


def tf1_cpp(path, signature, images):
    """The TF1 loader, then the C++ Session::Run path TF Serving takes. (Python's Session.run
    checks a feed's shape and casts its dtype before the graph sees it; a callable made from
    CallableOptions hands the tensor to the graph as TF Serving does.)"""
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def[signature]
        options = config_pb2.CallableOptions(feed=[sig.inputs["images"].name],
                                             fetch=[sig.outputs["logits"].name])
        return sess._make_callable_from_options(options)(images)[0]


def tf2(path, signature, images):
    return tf.saved_model.load(path).signatures[signature](images=tf.constant(images))["logits"]


def main(path):
    results = {}
    for loader in (tf1_cpp, tf2):
        for signature in DTYPES:
            for case in CASES:
                try:
                    loader(path, signature, feed(signature, case))
                    outcome = ["answered", ""]
                except Exception as err:  # the point: which error, and that it is one
                    outcome = [type(err).__name__, str(err)]
                results[f"{loader.__name__} {signature} {case}"] = outcome
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
