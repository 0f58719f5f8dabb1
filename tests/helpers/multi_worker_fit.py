"""Subprocess for tests/test_distributed.py: one tiny fit under MultiWorkerMirroredStrategy.

usage (TF_CONFIG set by the caller): python -m tests.helpers.multi_worker_fit MODEL_DIR WORKAROUND(0|1)
With WORKAROUND=0 the model class' work-around for keras-team/keras#20585 is switched off.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from aalp_tf.experiment import training  # noqa: E402
from aalp_tf.trainer import AdversarialModel  # noqa: E402
from tests.helpers.tiny import tiny_arrays, tiny_config  # noqa: E402

AdversarialModel.WORK_AROUND_KERAS_20585 = sys.argv[2] == "1"
cfg = tiny_config(sys.argv[1], "alp", train_args={"strategy": "multi_worker"})
result = training.train(cfg, arrays=tiny_arrays(96, 16), verbose=0, export_model=False)
print("finished", result.history[-1]["loss"])
