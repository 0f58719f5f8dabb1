"""Tiny files in the original distribution formats, written by the tests (never committed)."""
import gzip
import os

import numpy as np

from aalp_tf.data.readers import ArraySplits


def random_splits(n_train, n_test, shape, seed=0, labels=10):
    rng = np.random.default_rng(seed)
    return ArraySplits(rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                       rng.integers(0, labels, n_train).astype(np.int64),
                       rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                       rng.integers(0, labels, n_test).astype(np.int64))


def _idx(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist_files(folder, gz=True, splits=None):
    """Writes MNIST's four IDX files into folder; without `splits`, 5 train and 3 test random images.

    Returns the ArraySplits written.
    """
    splits = splits or random_splits(5, 3, (28, 28, 1))
    files = {"train-images-idx3-ubyte": _idx(splits.x_train[..., 0], 2051),
             "train-labels-idx1-ubyte": _idx(splits.y_train, 2049),
             "t10k-images-idx3-ubyte": _idx(splits.x_test[..., 0], 2051),
             "t10k-labels-idx1-ubyte": _idx(splits.y_test, 2049)}
    os.makedirs(folder, exist_ok=True)
    for name, raw in files.items():
        path = os.path.join(folder, name + (".gz" if gz else ""))
        with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
            f.write(raw)
    return splits
