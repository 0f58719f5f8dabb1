"""The dataset registry and the tf.data pipelines: images float32 in [0, 1], labels int64.

Training order is a pure function of (seed, epoch): each epoch is a stateless permutation, and
augmentation is seeded by (seed, epoch, position in the epoch). A run resumed at epoch k therefore
sees exactly the batches an uninterrupted run sees, whatever the parallelism.
"""
import dataclasses
from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf

from aalp_tf.data import readers
from aalp_tf.config import DataConfig, check
from aalp_tf.data.readers import ArraySplits
from aalp_tf.registry import Registry

_PAD = 4  # CIFAR convention: random 32x32 crop of the image zero-padded by 4 pixels


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the rest of the package needs to know about a dataset.

    Attributes:
      name: registry name.
      tfds_name: the TFDS name it is loaded by when no --source_dir is given.
      image_shape: (H, W, C).
      num_classes: number of labels.
      mean: per-channel mean in [0, 1] units; the model normalises inside itself with it.
      std: per-channel standard deviation, likewise.
      augment: the default: random crop (4-pixel padding) and horizontal flip when True. Digits
        must not be flipped, so it is False for MNIST and SVHN.
      default_model: the models registry name used for this dataset unless told otherwise.
      read_source: the offline reader of the original distribution files (a folder -> arrays).
    """

    name: str
    tfds_name: str
    image_shape: Tuple[int, int, int]
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    augment: bool
    default_model: str
    read_source: Callable[[str], ArraySplits]


DATASETS: Registry[DatasetSpec] = Registry("dataset")
DATASETS.add("mnist", DatasetSpec(
    name="mnist", tfds_name="mnist", image_shape=(28, 28, 1), num_classes=10, mean=(0.0,),
    std=(1.0,), augment=False, default_model="lenet", read_source=readers.read_mnist))
DATASETS.add("svhn", DatasetSpec(
    name="svhn", tfds_name="svhn_cropped", image_shape=(32, 32, 3), num_classes=10,
    mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), augment=False,
    default_model="resnet9", read_source=readers.read_svhn))
DATASETS.add("cifar10", DatasetSpec(
    name="cifar10", tfds_name="cifar10", image_shape=(32, 32, 3), num_classes=10,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), augment=True,
    default_model="resnet32", read_source=readers.read_cifar10))


@dataclasses.dataclass(frozen=True)
class Data:
    """The pipelines of one run.

    Attributes:
      spec: the dataset's spec.
      train: (images, labels) batches of epochs first_epoch..epochs-1, back to back: exactly
        (epochs - first_epoch) * steps_per_epoch of them, each full.
      steps_per_epoch: full batches per epoch (the partial last one is dropped).
      val: batches of the held-out tail of the training split, or None when val_examples is 0.
      test: batches of the test split (prefix), the last one possibly partial.
      num_train: training examples used per epoch before dropping the partial batch.
      num_val: validation examples.
      num_test: test examples.
    """

    spec: DatasetSpec
    train: tf.data.Dataset
    steps_per_epoch: int
    val: Optional[tf.data.Dataset]
    test: tf.data.Dataset
    num_train: int
    num_val: int
    num_test: int


def load_arrays(name: str, *, source_dir: Optional[str] = None,
                data_dir: Optional[str] = None) -> ArraySplits:
    """Reads dataset `name` from the original files in `source_dir`, or else from TFDS."""
    spec = DATASETS.get(name)
    if source_dir:
        return spec.read_source(source_dir)
    return readers.read_tfds(spec.tfds_name, data_dir=data_dir)


def _to_float(images, labels):
    # On whole batches: one vectorised cast instead of one per example.
    return tf.cast(images, tf.float32) / 255.0, labels


def _augment(image, seed):
    """Random crop of the zero-padded image, then a random horizontal flip, both stateless."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    padded = tf.pad(image, [[_PAD, _PAD], [_PAD, _PAD], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _train_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int, augment: bool, seed: int,
                   first_epoch: int, epochs: int) -> tf.data.Dataset:
    """Epochs first_epoch..epochs-1 of stateless shuffled (and maybe augmented) uint8 batches."""
    images, labels = tf.constant(x), tf.constant(y)
    n = len(x)
    used = n // batch_size * batch_size

    def one_epoch(epoch):
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        # float64 keys: ties (which would make argsort's order an implementation detail) are
        # practically impossible, unlike with float32 keys over tens of thousands of examples.
        keys = tf.random.stateless_uniform([n], seed=key, dtype=tf.float64)
        order = tf.argsort(keys, stable=True)
        picks = tf.data.Dataset.from_tensor_slices(
            (tf.range(used, dtype=tf.int64), tf.cast(order[:used], tf.int64)))
        if augment:
            def example(position, index):
                seed_i = tf.random.experimental.stateless_fold_in(key, position)
                return _augment(tf.gather(images, index), seed_i), tf.gather(labels, index)
            return picks.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
                             ).batch(batch_size, drop_remainder=True)
        # Without augmentation, gather whole batches at once.
        return picks.batch(batch_size, drop_remainder=True).map(
            lambda _, index: (tf.gather(images, index), tf.gather(labels, index)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    train = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    train = train.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # flat_map hides the length; state it so Keras and callers can rely on it.
    steps = (epochs - first_epoch) * (used // batch_size)
    train = train.apply(tf.data.experimental.assert_cardinality(steps))
    return _shard_by_data(train.prefetch(tf.data.AUTOTUNE))


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Under several workers, each takes its share of every global batch (there are no files
    to shard by): worker w gets the w-th contiguous chunk, as a single device would see it."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    return _shard_by_data(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
                          .map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
                          .prefetch(tf.data.AUTOTUNE))


def make_data(cfg: DataConfig, *, seed: int, first_epoch: int = 0, epochs: int = 1,
              arrays: Optional[ArraySplits] = None) -> Data:
    """Builds the train, validation and test pipelines of a run.

    The validation set is the last `cfg.val_examples` of the training split; training uses the
    first `cfg.train_examples` (0: all) of the rest; testing the first `cfg.test_examples` (0: all)
    of the test split.

    Args:
      cfg: which dataset, where from, how much, batch size and augmentation.
      seed: the run's seed; with the epoch number it fixes the order and augmentation of batches.
      first_epoch: the first (0-based) epoch `train` yields: a resumed run passes the epochs done.
      epochs: the run's total number of epochs; `train` ends after epoch `epochs - 1`.
      arrays: the raw splits, when already in memory; None loads them as `cfg` says.

    Returns:
      The pipelines and their sizes.

    Raises:
      UsageError: the dataset is unknown or cannot be read, or the split sizes do not fit.
    """
    spec = DATASETS.get(cfg.dataset)
    if arrays is None:
        arrays = load_arrays(cfg.dataset, source_dir=cfg.source_dir, data_dir=cfg.data_dir)
    check(0 <= first_epoch <= epochs,
          f"the first epoch must be in 0..--epochs={epochs}; received: {first_epoch}")
    sizes = split_sizes(cfg, arrays)
    num_train, rest, num_test = sizes.train, sizes.train + sizes.unused, sizes.test
    augment = spec.augment if cfg.augment is None else cfg.augment
    train = _train_dataset(arrays.x_train[:num_train], arrays.y_train[:num_train],
                           batch_size=cfg.batch_size, augment=augment, seed=seed,
                           first_epoch=first_epoch, epochs=epochs)
    val = None
    if cfg.val_examples:
        val = _eval_dataset(arrays.x_train[rest:], arrays.y_train[rest:], cfg.batch_size)
    test = _eval_dataset(arrays.x_test[:num_test], arrays.y_test[:num_test], cfg.batch_size)
    return Data(spec=spec, train=train, steps_per_epoch=sizes.steps_per_epoch, val=val,
                test=test, num_train=num_train, num_val=cfg.val_examples, num_test=num_test)


class SplitSizes(NamedTuple):
    """How `cfg` divides a dataset: training examples used, training examples left unused
    (between the prefix and the validation tail), test examples, and full batches per epoch."""

    train: int
    unused: int
    test: int
    steps_per_epoch: int


def split_sizes(cfg: DataConfig, arrays: ArraySplits) -> SplitSizes:
    """The sizes `make_data` uses, checked: what the model needs to know before any pipeline
    exists (its epsilon warm-up is counted in steps).

    Raises:
      UsageError: the images do not fit the dataset, or the split sizes do not fit the data.
    """
    spec = DATASETS.get(cfg.dataset)
    check(arrays.x_train.shape[1:] == spec.image_shape == arrays.x_test.shape[1:],
          f"{spec.name} images must be {spec.image_shape}; received train "
          f"{arrays.x_train.shape[1:]} and test {arrays.x_test.shape[1:]}")
    total = len(arrays.x_train)
    check(cfg.val_examples < total, f"--val_examples={cfg.val_examples} leaves no training "
          f"examples: {spec.name} has {total}; accepted: 0..{total - 1}")
    rest = total - cfg.val_examples
    check(cfg.train_examples <= rest, f"--train_examples={cfg.train_examples} exceeds the {rest} "
          f"{spec.name} training examples left after --val_examples={cfg.val_examples}")
    num_train = cfg.train_examples or rest
    check(cfg.batch_size <= num_train, f"--batch_size={cfg.batch_size} exceeds the {num_train} "
          f"training examples; accepted: 1..{num_train}")
    num_test = cfg.test_examples or len(arrays.x_test)
    check(num_test <= len(arrays.x_test), f"--test_examples={cfg.test_examples} exceeds the "
          f"{len(arrays.x_test)} {spec.name} test examples")
    return SplitSizes(train=num_train, unused=rest - num_train, test=num_test,
                      steps_per_epoch=num_train // cfg.batch_size)


def evaluation_batches(cfg: DataConfig):
    """The test split alone (prefix of cfg.test_examples), batched: (dataset, number of examples).

    For evaluation, which needs neither the training pipeline nor the validation slice.
    """
    spec = DATASETS.get(cfg.dataset)
    arrays = load_arrays(cfg.dataset, source_dir=cfg.source_dir, data_dir=cfg.data_dir)
    check(arrays.x_test.shape[1:] == spec.image_shape,
          f"{spec.name} images must be {spec.image_shape}; received {arrays.x_test.shape[1:]}")
    num_test = cfg.test_examples or len(arrays.x_test)
    check(num_test <= len(arrays.x_test), f"--test_examples={cfg.test_examples} exceeds the "
          f"{len(arrays.x_test)} {spec.name} test examples")
    x, y = arrays.x_test[:num_test], arrays.y_test[:num_test]
    return _eval_dataset(x, y, cfg.batch_size), num_test
