"""Tiny, seeded data, configs and models shared by the tests (28x28x1, MNIST-shaped)."""
import contextlib

import keras
import numpy as np
import tensorflow as tf

from aalp_tf.config import AttackConfig, DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from aalp_tf.data.readers import ArraySplits


def digit_like_images(n, *, seed=0, num_classes=10):
    """uint8 [n, 28, 28, 1] images whose class is a bright 8x8 patch at a class-specific place."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    images = rng.integers(0, 60, size=(n, 28, 28, 1)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, 2 + 8 * row: 10 + 8 * row, 1 + 7 * col: 7 + 7 * col, 0] = 230
    return images, labels.astype(np.int64)


def tiny_arrays(n_train=256, n_test=64, seed=0):
    x_train, y_train = digit_like_images(n_train, seed=seed)
    x_test, y_test = digit_like_images(n_test, seed=seed + 1)
    return ArraySplits(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def tiny_config(model_dir, method="aalp", *, epochs=1, data_args=None, model_args=None,
                method_args=None, train_args=None):
    """A RunConfig that trains a width-4 LeNet on tiny data in about a second per epoch."""
    return RunConfig(
        data=DataConfig(dataset="mnist", batch_size=32, val_examples=32, **(data_args or {})),
        model=ModelConfig(name="lenet", width=4, **(model_args or {})),
        method=MethodConfig(name=method, **(method_args or {})),
        attack=AttackConfig(epsilon=0.3, step_size=0.1, steps=3),
        train=TrainConfig(epochs=epochs, learning_rate=1e-3, model_dir=str(model_dir),
                          export_dir=str(model_dir) + "_exports", **(train_args or {})),
    )


EPS = 0.1


def linear_logits(seed=0):
    """A fixed random linear classifier on 8x8x1 images: gradients exist everywhere."""
    w = tf.constant(np.random.default_rng(seed).normal(size=(64, 5)), tf.float32)
    return lambda x: tf.matmul(tf.reshape(x, [-1, 64]), w)


@contextlib.contextmanager
def mixed_precision(on: bool = True):
    """Keras' mixed_float16 policy inside the block (what --mixed_precision sets on GPUs, forced
    here on CPU), float32 again after it, whatever the block raised."""
    if on:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")
