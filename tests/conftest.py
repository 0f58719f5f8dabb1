"""Shared fixtures. Data: tiny files in the original distribution formats, and small arrays."""
import io
import os
import pathlib
import pickle
import tarfile

import numpy as np
import pytest
import scipy.io

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from aalp_tf.data.readers import ArraySplits
from tests.helpers.dataset_files import random_splits, write_mnist_files

_REAL_MNIST = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"


@pytest.fixture
def write_mnist():
    """Returns write_mnist_files: write(folder, gz=True, splits=None) -> ArraySplits."""
    return write_mnist_files


def _cifar_batch_bytes(images, labels):
    """One CIFAR-10 python batch: pickle protocol 2, bytes keys, rows of R, G, B planes."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {b"batch_label": b"tiny", b"labels": [int(v) for v in labels], b"data": rows,
             b"filenames": [b"img%d.png" % i for i in range(len(images))]}
    return pickle.dumps(batch, protocol=2)


@pytest.fixture
def write_cifar10():
    """Returns write(folder, layout) -> ArraySplits: 5 batches of 2 train images and 3 test images.

    layout: "folder" (cifar-10-batches-py/), "flat" (the batch files directly) or "tar"
    (cifar-10-python.tar.gz with the cifar-10-batches-py/ prefix).
    """

    def write(folder, layout="folder"):
        splits = random_splits(10, 3, (32, 32, 3), seed=1)
        files = {f"data_batch_{i + 1}": _cifar_batch_bytes(splits.x_train[2 * i:2 * i + 2],
                                                          splits.y_train[2 * i:2 * i + 2])
                 for i in range(5)}
        files["test_batch"] = _cifar_batch_bytes(splits.x_test, splits.y_test)
        files["batches.meta"] = pickle.dumps(
            {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                              b"frog", b"horse", b"ship", b"truck"]}, protocol=2)
        os.makedirs(folder, exist_ok=True)
        if layout == "tar":
            with tarfile.open(os.path.join(folder, "cifar-10-python.tar.gz"), "w:gz") as tar:
                for name, raw in files.items():
                    info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                    info.size = len(raw)
                    tar.addfile(info, io.BytesIO(raw))
            return splits
        target = os.path.join(folder, "cifar-10-batches-py") if layout == "folder" else folder
        os.makedirs(target, exist_ok=True)
        for name, raw in files.items():
            with open(os.path.join(target, name), "wb") as f:
                f.write(raw)
        return splits

    return write


@pytest.fixture
def write_svhn():
    """Returns write(folder) -> ArraySplits: format-2 .mat files (X 32x32x3xN, y Nx1 in 1..10).

    The returned labels are 0..9 (10 written as 10, expected back as 0); the first training label
    is always the digit 0.
    """

    def write(folder):
        splits = random_splits(6, 4, (32, 32, 3), seed=2)
        y_train = splits.y_train.copy()
        y_train[0] = 0
        splits = ArraySplits(splits.x_train, y_train, splits.x_test, splits.y_test)
        os.makedirs(folder, exist_ok=True)
        for name, x, y in (("train_32x32.mat", splits.x_train, splits.y_train),
                           ("test_32x32.mat", splits.x_test, splits.y_test)):
            on_disk = np.where(y == 0, 10, y).astype(np.float64).reshape(-1, 1)  # MATLAB double
            scipy.io.savemat(os.path.join(folder, name),
                             {"X": x.transpose(1, 2, 3, 0), "y": on_disk})
        return splits

    return write


@pytest.fixture
def make_splits():
    """Returns make(n_train, n_test, shape) -> ArraySplits of seeded random pixels whose labels
    are the example's index (train 0..n_train-1, test 1000..), so tests can tell examples apart."""

    def make(n_train, n_test, shape, seed=0):
        rng = np.random.default_rng(seed)
        return ArraySplits(rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                           np.arange(n_train, dtype=np.int64),
                           rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                           np.arange(1000, 1000 + n_test, dtype=np.int64))

    return make


@pytest.fixture
def real_mnist_dir():
    """The original MNIST files (env AALP_MNIST_DIR, else <repo>/../shared/datasets/mnist)."""
    folder = pathlib.Path(os.environ.get("AALP_MNIST_DIR", _REAL_MNIST))
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST files in {folder} (set AALP_MNIST_DIR to a folder holding them)")
    return str(folder)


# ---- models ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def trained_tiny_model(tmp_path_factory):
    """A width-4 LeNet trained naturally on tiny digit-like data: (model, x, y) of held-out data."""
    import keras
    import tensorflow as tf

    from aalp_tf.data.datasets import DATASETS
    from aalp_tf.trainer import build_model
    from tests.helpers.tiny import tiny_arrays, tiny_config

    keras.utils.set_random_seed(0)
    data = tiny_arrays(512, 64)
    cfg = tiny_config(tmp_path_factory.mktemp("trained"), "natural")
    model = build_model(cfg, DATASETS.get("mnist"))
    model.fit(data.x_train / 255.0, data.y_train, batch_size=32, epochs=3, verbose=0)
    x = tf.constant(data.x_test / 255.0, tf.float32)
    y = tf.constant(data.y_test)
    return model, x, y


# ---- a run whose last epoch is not its best ----------------------------------------------------


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory):
    """A 3-epoch alp run whose last epoch a learning rate of 10 wrecks, so the epoch with the
    best val_robust_accuracy comes earlier; trial 0's run folder of a search, keeping 1
    checkpoint. Returns (the search's TuneConfig, the run's RunConfig, its TrainResult)."""
    import dataclasses

    import keras

    from aalp_tf.config import AttackConfig
    from aalp_tf.tuning.config import TuneConfig
    from aalp_tf.experiment.training import train
    from aalp_tf.tuning.search_space import trial_config
    from tests.helpers.tiny import tiny_arrays, tiny_config

    class WreckTheLastEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                self.model.optimizer.learning_rate.assign(10.0)

    folder = tmp_path_factory.mktemp("overfit")
    base = tiny_config(folder, "alp", epochs=3)
    base = base.replace(attack=AttackConfig(epsilon=0.05, step_size=0.025, steps=2),
                        train=dataclasses.replace(base.train, learning_rate=1e-2,
                                                  keep_checkpoints=1))
    search = TuneConfig(run=base)
    cfg = trial_config(search, {"alpha": 1.0}, model_dir=str(folder / "tuner/trial_0/run"))
    result = train(cfg, arrays=tiny_arrays(160, 32), verbose=0, callbacks=[WreckTheLastEpoch()])
    return search, cfg, result
