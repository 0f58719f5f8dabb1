"""Tests for aalp_tf.data.readers: original formats round-trip exactly; bad input is one line."""
import gzip
import os
import pickle
import time

import numpy as np
import pytest
import scipy.io

from aalp_tf.data import readers
from aalp_tf.data.readers import ArraySplits, read_cifar10, read_mnist, read_svhn, read_tfds
from aalp_tf.errors import UsageError

MNIST_NEEDS = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,"
               " t10k-labels-idx1-ubyte.gz (or the same without .gz)")
CIFAR_BATCH_ACCEPTED = "accepted: a pickled dict of b'data' (a numpy array) and b'labels'"


def assert_splits_equal(got: ArraySplits, want: ArraySplits):
    for field in ("x_train", "y_train", "x_test", "y_test"):
        a, b = getattr(got, field), getattr(want, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        np.testing.assert_array_equal(a, b, err_msg=field)


# ------------------------------------------------------------------------------------- MNIST

@pytest.mark.parametrize("gz", [True, False])
def test_mnist_round_trip(tmp_path, write_mnist, gz):
    want = write_mnist(tmp_path, gz=gz)
    got = read_mnist(str(tmp_path))
    assert got.x_train.shape == (5, 28, 28, 1) and got.x_test.shape == (3, 28, 28, 1)
    assert_splits_equal(got, want)


def test_mnist_pixel_lands_where_idx_puts_it(tmp_path, write_mnist):
    # Hand-made bytes, independent of the fixture's writer: IDX is row-major after a 16-byte header.
    write_mnist(tmp_path, gz=False)
    body = bytearray(5 * 28 * 28)
    body[1 * 784 + 3 * 28 + 5] = 200  # image 1, row 3, column 5
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (5, 28, 28))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + bytes(body))
    x = read_mnist(str(tmp_path)).x_train
    assert x[1, 3, 5, 0] == 200 and x.sum() == 200


def test_real_mnist(real_mnist_dir):
    splits = read_mnist(real_mnist_dir)
    assert splits.x_train.shape == (60000, 28, 28, 1) and splits.x_test.shape == (10000, 28, 28, 1)
    assert splits.x_train.dtype == np.uint8 and splits.y_train.dtype == np.int64
    # Label counts published with the dataset (see shared/datasets/SOURCES.md).
    assert np.bincount(splits.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                                    5851, 5949]
    assert np.bincount(splits.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                                   1009]


def test_mnist_missing_folder(tmp_path):
    with pytest.raises(UsageError) as err:
        read_mnist(str(tmp_path / "nope"))
    assert str(err.value) == (f"--source_dir {tmp_path / 'nope'} is not a folder; expected a "
                              f"folder with {MNIST_NEEDS}")


def test_mnist_missing_file(tmp_path, write_mnist):
    write_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(UsageError) as err:
        read_mnist(str(tmp_path))
    assert str(err.value) == (f"--source_dir {tmp_path} has no t10k-labels-idx1-ubyte.gz: "
                              f"MNIST needs {MNIST_NEEDS}")


def test_mnist_wrong_magic(tmp_path, write_mnist):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:  # a labels magic in an images file
        f.write((2049).to_bytes(4, "big") + raw[4:])
    with pytest.raises(UsageError) as err:
        read_mnist(str(tmp_path))
    assert str(err.value) == f"{path} has IDX magic number 2049; expected 2051"


def test_mnist_counts_must_agree(tmp_path, write_mnist):
    write_mnist(tmp_path, gz=False)
    labels = (2049).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes(4)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(UsageError) as err:
        read_mnist(str(tmp_path))
    assert str(err.value) == (
        f"{tmp_path / 'train-images-idx3-ubyte'} and {tmp_path / 'train-labels-idx1-ubyte'} hold "
        f"images [5, 28, 28] and 4 labels up to 0; expected N 28x28 images and N labels 0..9")


# ---------------------------------------------------------------------------------- CIFAR-10

@pytest.mark.parametrize("layout", ["folder", "flat", "tar"])
def test_cifar10_round_trip(tmp_path, write_cifar10, layout):
    want = write_cifar10(tmp_path, layout)
    got = read_cifar10(str(tmp_path))
    assert got.x_train.shape == (10, 32, 32, 3) and got.x_test.shape == (3, 32, 32, 3)
    assert_splits_equal(got, want)  # batches 1..5 concatenated in order


def test_cifar10_tar_is_not_extracted(tmp_path, write_cifar10):
    write_cifar10(tmp_path, "tar")
    read_cifar10(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-python.tar.gz"]


def test_cifar10_planes_are_red_green_blue(tmp_path, write_cifar10):
    # A hand-made row, independent of the fixture's writer: 1024 R, then 1024 G, then 1024 B.
    write_cifar10(tmp_path, "flat")
    data = np.zeros((2, 3072), np.uint8)
    data[1, 0 * 1024 + 2 * 32 + 5] = 11  # red at row 2, column 5 of image 1
    data[1, 1 * 1024 + 7 * 32 + 1] = 22  # green at row 7, column 1
    data[1, 2 * 1024 + 31 * 32 + 30] = 33  # blue at row 31, column 30
    batch = {b"data": data, b"labels": [4, 9]}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    x = read_cifar10(str(tmp_path)).x_train
    assert (x[1, 2, 5, 0], x[1, 7, 1, 1], x[1, 31, 30, 2]) == (11, 22, 33)
    assert x[:2].sum() == 66


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path, write_cifar10):
    write_cifar10(tmp_path, "flat")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "test_batch").write_bytes(
        pickle.dumps({b"data": Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(UsageError) as err:
        read_cifar10(str(tmp_path))
    assert str(err.value) == (f"{tmp_path / 'test_batch'} is not a CIFAR-10 python batch (it "
                              f"references the global {os.system.__module__}.system); "
                              f"{CIFAR_BATCH_ACCEPTED}")
    assert not marker.exists()


def test_cifar10_corrupt_pickle(tmp_path, write_cifar10):
    write_cifar10(tmp_path, "flat")
    path = tmp_path / "data_batch_3"
    path.write_bytes(b"%PDF-1.4 is not a pickle")
    with pytest.raises(UsageError) as err:
        read_cifar10(str(tmp_path))
    # The part in parentheses is the pickle module's own words.
    assert str(err.value) == (f"{path} is not a CIFAR-10 python batch (invalid load key, '%'.); "
                              f"{CIFAR_BATCH_ACCEPTED}")


def test_cifar10_truncated_pickle(tmp_path, write_cifar10):
    write_cifar10(tmp_path, "tar")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(UsageError, match=r"cifar-10-python.tar.gz is not a readable tar.gz "):
        read_cifar10(str(tmp_path))


def test_cifar10_wrong_shape(tmp_path, write_cifar10):
    write_cifar10(tmp_path, "flat")
    batch = {b"data": np.zeros((2, 1024), np.uint8), b"labels": [1, 2]}
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UsageError) as err:
        read_cifar10(str(tmp_path))
    assert str(err.value) == (f"{tmp_path / 'data_batch_2'} holds data uint8[2, 1024] and labels "
                              f"[2]; expected N x 3072 uint8 and N labels 0..9")


def test_cifar10_missing_files(tmp_path, write_cifar10):
    write_cifar10(tmp_path, "flat")
    os.remove(tmp_path / "data_batch_4")
    with pytest.raises(UsageError) as err:
        read_cifar10(str(tmp_path))
    assert str(err.value) == (f"--source_dir {tmp_path} has no CIFAR-10 batches; expected "
                              f"cifar-10-batches-py/, or data_batch_1..5 and test_batch, or "
                              f"cifar-10-python.tar.gz")


# -------------------------------------------------------------------------------------- SVHN

def test_svhn_round_trip_maps_10_to_0(tmp_path, write_svhn):
    want = write_svhn(tmp_path)
    assert scipy.io.loadmat(tmp_path / "train_32x32.mat")["y"][0, 0] == 10  # really on disk as 10
    got = read_svhn(str(tmp_path))
    assert got.x_train.shape == (6, 32, 32, 3) and got.y_train[0] == 0
    assert_splits_equal(got, want)


def test_svhn_pixel_position(tmp_path, write_svhn):
    write_svhn(tmp_path)
    x = np.zeros((32, 32, 3, 2), np.uint8)
    x[4, 9, 2, 1] = 77  # MATLAB layout: row, column, channel, example
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[10], [3]], np.uint8)})
    got = read_svhn(str(tmp_path))
    assert got.x_test[1, 4, 9, 2] == 77 and got.x_test.sum() == 77
    assert got.y_test.tolist() == [0, 3]


def test_svhn_missing_file(tmp_path, write_svhn):
    write_svhn(tmp_path)
    os.remove(tmp_path / "test_32x32.mat")
    with pytest.raises(UsageError) as err:
        read_svhn(str(tmp_path))
    assert str(err.value) == (f"--source_dir {tmp_path} has no test_32x32.mat: SVHN needs "
                              f"train_32x32.mat and test_32x32.mat")


def test_svhn_wrong_shape(tmp_path, write_svhn):
    write_svhn(tmp_path)
    scipy.io.savemat(tmp_path / "train_32x32.mat",
                     {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1), np.uint8)})
    with pytest.raises(UsageError) as err:
        read_svhn(str(tmp_path))
    assert str(err.value) == (f"{tmp_path / 'train_32x32.mat'} holds X [28, 28, 1, 2] and "
                              f"y [2, 1]; expected X 32x32x3xN uint8 and y Nx1 with values 1..10")


def test_array_splits_checks_types(make_splits):
    good = make_splits(2, 1, (4, 4, 1))
    with pytest.raises(ValueError, match=r"train split must be uint8 \[N,H,W,C\] images"):
        ArraySplits(good.x_train.astype(np.float32), good.y_train, good.x_test, good.y_test)


# -------------------------------------------------------------------------------------- TFDS

def test_tfds_fails_fast_offline(tmp_path, monkeypatch):
    # This machine has no internet; on one that does, pretend it has not.
    monkeypatch.setattr(readers, "network_reachable", lambda host: False)
    start = time.monotonic()
    with pytest.raises(UsageError) as err:
        read_tfds("mnist", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    assert str(err.value) == (
        f"TFDS dataset mnist is not prepared in {tmp_path} and the network is unreachable "
        f"(storage.googleapis.com:443): prepare it on a machine with internet and copy it there, "
        f"or pass --source_dir=DIR holding the original files: {MNIST_NEEDS}")
    assert os.listdir(tmp_path) == []


def test_network_reachable_is_bounded():
    start = time.monotonic()
    assert not readers.network_reachable("no-such-host.invalid", timeout=1.0)
    assert time.monotonic() - start < 2.5


def test_tfds_prepared_dataset_is_loaded(tmp_path, monkeypatch):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    calls = []

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        n = 4 if kwargs["split"] == "train" else 2
        return tf.zeros([n, 32, 32, 3], tf.uint8), tf.range(n, dtype=tf.int64)

    monkeypatch.setattr(readers, "_tfds_prepared", lambda builder: True)
    monkeypatch.setattr(tfds, "load", fake_load)
    splits = read_tfds("cifar10", data_dir=str(tmp_path))
    assert splits.x_train.shape == (4, 32, 32, 3) and splits.y_test.tolist() == [0, 1]
    assert [kwargs["split"] for _, kwargs in calls] == ["train", "test"]
    assert calls[0] == ("cifar10", {"split": "train", "batch_size": -1, "as_supervised": True,
                                    "data_dir": str(tmp_path), "try_gcs": False})
