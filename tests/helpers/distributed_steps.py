"""Subprocess for tests/test_distributed.py: one train step per method, 1 device vs 2 replicas.

Splits the CPU into 2 logical devices (this must happen before TensorFlow starts, hence a
separate process), runs the product's own `AdversarialModel.train_step` on one device and on two
replicas, and prints one JSON line per method with the largest weight difference and whether
the Guided Dropout masks that step applied agree (every replica's, every branch's).
usage: python -m tests.helpers.distributed_steps METHOD [METHOD ...]
"""
import json
import sys

from tests.helpers.two_cpus import GLOBAL_BATCH, SPEC  # first: before TensorFlow starts

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from aalp_tf.trainer import build_model  # noqa: E402
from tests.helpers.tiny import tiny_arrays, tiny_config  # noqa: E402


def make(method, strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(tiny_config("/tmp/unused", method), SPEC)
        # SGD: the update is the gradient itself, so the comparison checks the gradient scale
        # (a sum over replicas of a global-batch mean) rather than Adam's normalised step.
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.optimizer.build(model.trainable_variables)
    return model


def record_masks(model) -> list:
    """The masks Guided Dropout applies in the model's train_step, as numpy arrays, in the order
    they run (per replica, per branch): each is passed through a py_function that keeps a copy,
    so the step itself computes exactly what it would without the recording."""
    recorded, keep_mask = [], model.guided_dropout.keep_mask

    def keep(mask):
        recorded.append(mask.numpy())
        return mask

    def recording(contribution):
        mask = keep_mask(contribution)
        copy = tf.py_function(keep, [mask], mask.dtype)
        copy.set_shape(mask.shape)
        return tf.stop_gradient(copy)  # as keep_mask's own: the mask carries no gradient

    model.guided_dropout.keep_mask = recording
    return recorded


def main(methods):
    data = tiny_arrays(GLOBAL_BATCH, 8)
    x = tf.constant(data.x_train / 255.0, tf.float32)
    y = tf.constant(data.y_train)
    one, two = tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for method in methods:
        single, mirrored = make(method, one), make(method, two)
        mirrored.set_weights(single.get_weights())
        single_masks, mirrored_masks = record_masks(single), record_masks(mirrored)
        tf.function(single.train_step)((x, y))
        batch = next(iter(two.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors((x, y)))))
        two.run(tf.function(mirrored.train_step), args=(batch,))
        diff = max(float(np.max(np.abs(a - b))) for a, b in
                   zip(single.get_weights(), mirrored.get_weights()))
        moved = max(float(np.max(np.abs(a - b))) for a, b in
                    zip(single.get_weights(), make(method, one).get_weights()))
        print(json.dumps({"method": method, "replicas": two.num_replicas_in_sync,
                          "max_weight_difference": diff, "max_update": moved,
                          "masks": [len(single_masks), len(mirrored_masks)],
                          "masks_equal": all(np.array_equal(single_masks[0], m)
                                             for m in single_masks + mirrored_masks)}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
