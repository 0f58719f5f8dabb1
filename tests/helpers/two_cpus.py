"""Imported first by the subprocess helpers that compare one device with two replicas: splits
the CPU into 2 logical devices, which TensorFlow allows only before it initialises them."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

from aalp_tf.data.datasets import DATASETS  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

SPEC = DATASETS.get("mnist")
GLOBAL_BATCH = 32
