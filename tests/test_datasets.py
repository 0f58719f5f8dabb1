"""Tests for aalp_tf.data.datasets: the registry, the splits, a training order fixed by (seed, epoch)."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from aalp_tf.data import readers
from aalp_tf.config import DataConfig
from aalp_tf.data.datasets import DATASETS, load_arrays, make_data
from aalp_tf.errors import UsageError

SHAPES = {"mnist": (28, 28, 1), "svhn": (32, 32, 3), "cifar10": (32, 32, 3)}


def batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


# ---------------------------------------------------------------------------------- registry

def test_registry_names():
    assert DATASETS.names() == ["cifar10", "mnist", "svhn"]
    with pytest.raises(UsageError) as err:
        DATASETS.get("imagenet")
    assert str(err.value) == "unknown dataset: received 'imagenet'; accepted: cifar10, mnist, svhn"


@pytest.mark.parametrize("name, tfds_name, model, augment", [
    ("mnist", "mnist", "lenet", False), ("svhn", "svhn_cropped", "resnet9", False),
    ("cifar10", "cifar10", "resnet32", True)])
def test_specs(name, tfds_name, model, augment):
    spec = DATASETS.get(name)
    assert (spec.name, spec.tfds_name, spec.default_model, spec.augment) == (
        name, tfds_name, model, augment)
    assert spec.image_shape == SHAPES[name] and spec.num_classes == 10
    channels = spec.image_shape[-1]
    assert len(spec.mean) == len(spec.std) == channels
    assert all(0 <= m < 1 for m in spec.mean) and all(0 < s <= 1 for s in spec.std)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.augment = not augment


@pytest.mark.parametrize("name", ["mnist", "svhn", "cifar10"])
def test_load_arrays_reads_source_dir(tmp_path, name, write_mnist, write_svhn, write_cifar10):
    writers = {"mnist": write_mnist, "svhn": write_svhn, "cifar10": write_cifar10}
    want = writers[name](tmp_path)
    got = load_arrays(name, source_dir=str(tmp_path))
    assert got.x_train.shape[1:] == DATASETS.get(name).image_shape
    np.testing.assert_array_equal(got.x_train, want.x_train)


def test_load_arrays_without_source_dir_uses_tfds(monkeypatch, make_splits):
    calls = []
    monkeypatch.setattr(readers, "read_tfds",
                        lambda name, *, data_dir: calls.append((name, data_dir)) or "arrays")
    assert load_arrays("svhn", data_dir="/d") == "arrays"
    assert calls == [("svhn_cropped", "/d")]


# -------------------------------------------------------------------------------- make_data

def test_splits_sizes_and_contents(make_splits):
    arrays = make_splits(50, 7, (28, 28, 1))  # labels are the example's index
    cfg = DataConfig("mnist", val_examples=10, train_examples=24, test_examples=7, batch_size=4)
    data = make_data(cfg, seed=0, epochs=2, arrays=arrays)
    assert (data.num_train, data.num_val, data.num_test, data.steps_per_epoch) == (24, 10, 7, 6)
    assert data.train.cardinality().numpy() == 12

    train = batches(data.train)
    assert len(train) == 12 and all(x.shape == (4, 28, 28, 1) for x, _ in train)
    for epoch in (train[:6], train[6:]):  # each epoch: the 24-example prefix, each example once
        assert sorted(np.concatenate([y for _, y in epoch]).tolist()) == list(range(24))
    val = batches(data.val)
    assert np.concatenate([y for _, y in val]).tolist() == list(range(40, 50))  # the tail
    test = batches(data.test)
    assert [len(y) for _, y in test] == [4, 3]  # the last partial batch is kept
    assert np.concatenate([y for _, y in test]).tolist() == list(range(1000, 1007))

    for x, y in train + val + test:
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert 0.0 <= x.min() and x.max() <= 1.0
    # Without augmentation each image is its uint8 source divided by 255.
    x, y = train[0]
    np.testing.assert_array_equal(x, arrays.x_train[y].astype(np.float32) / 255.0)
    x, y = val[0]
    np.testing.assert_array_equal(x, arrays.x_train[y].astype(np.float32) / 255.0)


def test_defaults_use_all_and_no_val(make_splits):
    arrays = make_splits(20, 5, (28, 28, 1))
    data = make_data(DataConfig("mnist", val_examples=0, batch_size=8), seed=0, arrays=arrays)
    assert (data.num_train, data.num_val, data.num_test, data.steps_per_epoch) == (20, 0, 5, 2)
    assert data.val is None
    labels = np.concatenate([y for _, y in batches(data.train)])
    assert len(labels) == 16 and len(set(labels.tolist())) == 16  # partial batch dropped


@pytest.mark.parametrize("changes, message", [
    (dict(val_examples=20), "--val_examples=20 leaves no training examples: mnist has 20; "
                            "accepted: 0..19"),
    (dict(val_examples=5, train_examples=16), "--train_examples=16 exceeds the 15 mnist training "
                                              "examples left after --val_examples=5"),
    (dict(val_examples=15, batch_size=8), "--batch_size=8 exceeds the 5 training examples; "
                                          "accepted: 1..5"),
    (dict(val_examples=0, test_examples=6), "--test_examples=6 exceeds the 5 mnist test examples"),
])
def test_sizes_that_do_not_fit(make_splits, changes, message):
    cfg = dataclasses.replace(DataConfig("mnist", batch_size=4), **changes)
    with pytest.raises(UsageError) as err:
        make_data(cfg, seed=0, arrays=make_splits(20, 5, (28, 28, 1)))
    assert str(err.value) == message


def test_wrong_image_shape(make_splits):
    with pytest.raises(UsageError) as err:
        make_data(DataConfig("cifar10", val_examples=0, batch_size=2), seed=0,
                  arrays=make_splits(4, 2, (28, 28, 1)))
    assert str(err.value) == ("cifar10 images must be (32, 32, 3); received train (28, 28, 1) and "
                              "test (28, 28, 1)")


def test_first_epoch_past_the_end(make_splits):
    with pytest.raises(UsageError) as err:
        make_data(DataConfig("mnist", val_examples=0, batch_size=2), seed=0, first_epoch=3,
                  epochs=2, arrays=make_splits(4, 2, (28, 28, 1)))
    assert str(err.value) == "the first epoch must be in 0..--epochs=2; received: 3"


# ----------------------------------------------------------------------------- determinism

def _labels_per_epoch(data):
    labels = [y for _, y in batches(data.train)]
    steps = data.steps_per_epoch
    return [np.concatenate(labels[i:i + steps]).tolist() for i in range(0, len(labels), steps)]


def test_order_is_a_function_of_seed_and_epoch(make_splits):
    arrays = make_splits(64, 2, (28, 28, 1))
    cfg = DataConfig("mnist", val_examples=0, batch_size=8)
    first = _labels_per_epoch(make_data(cfg, seed=3, epochs=2, arrays=arrays))
    again = _labels_per_epoch(make_data(cfg, seed=3, epochs=2, arrays=arrays))
    other_seed = _labels_per_epoch(make_data(cfg, seed=4, epochs=2, arrays=arrays))
    assert first == again
    assert first[0] != first[1]  # a new order each epoch
    assert first[0] != other_seed[0]
    assert first[0] != list(range(64))  # shuffled at all
    # Iterating the same dataset twice gives the same batches too (nothing stateful inside).
    data = make_data(cfg, seed=3, epochs=1, arrays=arrays)
    assert_same_batches(batches(data.train), batches(data.train))


def test_resumed_run_sees_the_same_batches(make_splits):
    arrays = make_splits(40, 2, (32, 32, 3))
    cfg = DataConfig("cifar10", val_examples=8, batch_size=8)  # augmentation on
    full = make_data(cfg, seed=7, first_epoch=0, epochs=3, arrays=arrays)
    resumed = make_data(cfg, seed=7, first_epoch=1, epochs=3, arrays=arrays)
    assert full.steps_per_epoch == resumed.steps_per_epoch == 4
    full_batches, resumed_batches = batches(full.train), batches(resumed.train)
    assert len(full_batches) == 12 and len(resumed_batches) == 8
    assert_same_batches(resumed_batches, full_batches[4:])
    # Epochs differ in order and in their random crops and flips.
    assert not np.array_equal(full_batches[0][0], full_batches[4][0])


def _crop_and_flip(augmented, original):
    """The (row offset, column offset, flipped) that turn `original` into `augmented`, or None."""
    padded = np.pad(original, [(4, 4), (4, 4), (0, 0)])
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy:dy + 32, dx:dx + 32]
            for flipped, candidate in ((False, crop), (True, crop[:, ::-1])):
                if np.array_equal(augmented, candidate):
                    return dy, dx, flipped
    return None


def test_cifar10_augmentation_crops_and_flips(make_splits):
    arrays = make_splits(32, 2, (32, 32, 3))
    data = make_data(DataConfig("cifar10", val_examples=0, batch_size=16), seed=1, arrays=arrays)
    images, labels = [np.concatenate(parts) for parts in zip(*batches(data.train))]
    assert images.shape == (32, 32, 32, 3) and images.dtype == np.float32
    pixels = np.rint(images * 255).astype(np.uint8)
    transforms = [_crop_and_flip(p, o) for p, o in zip(pixels, arrays.x_train[labels])]
    assert None not in transforms  # every image is a crop of its padded source, maybe flipped
    # Each example draws its own crop and flip (81 offsets x 2: nearly all differ from identity).
    assert len(set(transforms)) > 16 and {flipped for _, _, flipped in transforms} == {False, True}
    assert transforms.count((4, 4, False)) < 4
    # Evaluation data is never augmented.
    data = make_data(DataConfig("cifar10", val_examples=8, batch_size=8), seed=1, arrays=arrays)
    x, y = batches(data.val)[0]
    np.testing.assert_array_equal(x, arrays.x_train[y].astype(np.float32) / 255.0)


@pytest.mark.parametrize("name, augment, expect_changed", [
    ("mnist", None, False), ("svhn", None, False), ("cifar10", False, False),
    ("mnist", True, True)])
def test_augment_default_and_override(make_splits, name, augment, expect_changed):
    arrays = make_splits(16, 2, SHAPES[name])
    cfg = DataConfig(name, val_examples=0, batch_size=16, augment=augment)
    x, y = batches(make_data(cfg, seed=0, arrays=arrays).train)[0]
    unchanged = np.array_equal(x, arrays.x_train[y].astype(np.float32) / 255.0)
    assert unchanged != expect_changed


def test_element_specs(make_splits):
    data = make_data(DataConfig("svhn", val_examples=0, batch_size=4), seed=0,
                     arrays=make_splits(8, 2, (32, 32, 3)))
    assert data.train.element_spec == (tf.TensorSpec([4, 32, 32, 3], tf.float32),
                                       tf.TensorSpec([4], tf.int64))
    assert data.test.element_spec == (tf.TensorSpec([None, 32, 32, 3], tf.float32),
                                      tf.TensorSpec([None], tf.int64))
