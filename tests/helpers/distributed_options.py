"""Subprocess for tests/test_awp.py: one train step with a training adversary and AWP, on one
device and on 2 replicas (MirroredStrategy over 2 logical CPUs, set before TensorFlow starts).

Prints one JSON line per METHOD:ADVERSARY:AWP_GAMMA with the largest weight difference between
the two, how far the step moved the weights, and how far AWP moved them from the same step
without AWP (on one device).
usage: python -m tests.helpers.distributed_options aalp:fgsm_rs:0.01 [...]
"""
import dataclasses
import json
import sys

from tests.helpers.two_cpus import GLOBAL_BATCH, SPEC  # first: before TensorFlow starts

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from aalp_tf.trainer import build_model  # noqa: E402
from tests.helpers.tiny import tiny_arrays, tiny_config  # noqa: E402


def make(method, adversary, gamma, strategy):
    keras.utils.set_random_seed(0)
    cfg = tiny_config("/tmp/unused", method, train_args={"awp_gamma": gamma})
    cfg = cfg.replace(attack=dataclasses.replace(cfg.attack, adversary=adversary))
    with strategy.scope():
        model = build_model(cfg, SPEC)
        # SGD: the update is the gradient itself (see tests/helpers/distributed_steps.py).
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.optimizer.build(model.trainable_variables)
    return model


def largest_difference(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a.get_weights(), b.get_weights()))


def main(specs):
    data = tiny_arrays(GLOBAL_BATCH, 8)
    x = tf.constant(data.x_train / 255.0, tf.float32)
    y = tf.constant(data.y_train)
    one, two = tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for spec in specs:
        method, adversary, gamma = spec.split(":")
        single, mirrored = (make(method, adversary, float(gamma), s) for s in (one, two))
        plain = make(method, adversary, 0.0, one)
        mirrored.set_weights(single.get_weights())
        untouched = make(method, adversary, 0.0, one)
        for model in (single, plain):
            tf.function(model.train_step)((x, y))
        batch = next(iter(two.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors((x, y)))))
        two.run(tf.function(mirrored.train_step), args=(batch,))
        print(json.dumps({"spec": spec, "replicas": two.num_replicas_in_sync,
                          "max_weight_difference": largest_difference(single, mirrored),
                          "max_update": largest_difference(single, untouched),
                          "awp_effect": largest_difference(single, plain)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
